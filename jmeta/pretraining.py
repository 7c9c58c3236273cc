"""Pre-training on all training classes through jmeta's episodic trainer: the ``"all-classes"`` task family.

Its meta-training tasks are labelled minibatches over every training class
(``jmeta.tasks.class_batches.ClassBatchSampler``), its validation and test tasks the N-way episodes of the
data set named by ``config.dataset``, so that learners that pre-train (``jmeta.learners.baseline``:
Baseline, Baseline++, fine-tuning) are validated and tested on the same episodes as meta-learners.
Importing this module registers the family (``jmeta.register_task_family``).
"""

from __future__ import annotations

from typing import Any

from jmeta import losses
from jmeta.data import load
from jmeta.experiment import EPISODE_KEYS, data_options, episode_optional_keys, episodic_family
from jmeta.registry import register_task_family
from jmeta.tasks.class_batches import make_class_batch_sampler


def all_classes_family(config: Any) -> Any:
    """The ``"all-classes"`` task family: meta-training tasks are ``ClassBatchSampler`` minibatches of
    ``config.batch_points`` examples over every training class of the data set ``config.dataset``; validation
    and test are the N-way episodes (``eval_ways``, ``eval_shots``, ``eval_queries``) of its val and test
    classes, exactly as the episodic family of ``task=config.dataset`` draws them (the same data options:
    ``split``, ``rotate``, ``data_dir``, ...). For learners that pre-train on all classes
    (``jmeta.learners.baseline``). Raises ValueError as the episodic family does, and for ``batch_points`` < 2.

    Example::

        >>> config = jmeta.experiment.few_shot_config("omniglot", "baseline++", ways=5, shots=1)   # doctest: +SKIP
        >>> config.task, config.dataset, config.batch_points = "all-classes", "omniglot", 16   # doctest: +SKIP
        >>> all_classes_family(config).sample_train.num_classes                   # doctest: +SKIP
        4112
    """
    episodes = config.copy_and_resolve_references()
    episodes.task = config.dataset
    family = episodic_family(episodes)
    data = load(config.dataset, config.get("data_dir") or None, **data_options(episodes))
    return family._replace(sample_train=make_class_batch_sampler(data["train"], config.batch_points))


register_task_family(
    "all-classes",
    all_classes_family,
    keys=("dataset", "batch_points", *EPISODE_KEYS),
    optional_keys=lambda config: episode_optional_keys(config.dataset),
    loss=losses.cross_entropy,
    metrics={"accuracy": losses.accuracy},
    outputs=lambda config: config.eval_ways,
)
