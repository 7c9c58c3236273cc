"""Source 004: MAML (Finn et al. 2017), MAML++ (Antoniou et al. 2019) and Reptile (Nichol et al. 2018)
with the article's MLP 784-1000-10 (``SourceMLP004``) on few-shot digit tasks, the algorithms its headings
name where its code showed one plain SGD loop.

:func:`maml_mlp_config` is the config of ``experiments/seed004_*_mlp.py``; :func:`program` is the
``maml-mlp`` program of ``jmeta train``, which runs ``jmeta.train``'s loop (metrics, checkpoints,
resumption).

Example::

    >>> maml_mlp_config("maml").inner_lr
    0.4
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections

from jmeta import losses
from jmeta.data import load
from jmeta.experiment import Experiment, TaskFamily, few_shot_config
from jmeta.models.ports import SourceMLP004
from jmeta.nn import from_linen
from jmeta.registry import LEARNERS
from jmeta.tasks.episodes import make_episode_sampler
from jmeta.train import meta_test, meta_train_workdir
from jmeta.validation import one_of


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Meta-trains ``config.learner`` (maml, mamlpp, reptile, ... any registered learner) with
    ``SourceMLP004`` (784-1000-``ways``; 64 inputs for 8x8 digits) on ``ways``-way tasks from ``config.task``'s
    training digits (0-4), through ``jmeta.train``'s loop (metrics, checkpoints, resumption), and meta-tests
    the last parameters on the test digits (5-9). The digit sets have no validation classes, so validation
    tasks come from the training digits and only monitor training; no checkpoint is chosen by them."""
    one_of("task", config.task, ("mnist", "digits", "mnist-sample", "mnist-idx"))
    data = load(config.task, config.data_dir or None)
    train = make_episode_sampler(data["train"], config.ways, config.shots, config.queries)
    val = make_episode_sampler(data["train"], config.eval_ways, config.eval_shots, config.eval_queries)
    test = make_episode_sampler(data["test"], config.eval_ways, config.eval_shots, config.eval_queries)
    example = jnp.zeros((1, *data["train"].input_shape))
    family = TaskFamily(train, val, test, example, losses.cross_entropy, {"accuracy": losses.accuracy})
    model = from_linen(SourceMLP004(num_classes=config.ways), example)
    if config.learner not in LEARNERS:
        raise ValueError(LEARNERS.unknown(config.learner, "learner"))
    experiment = Experiment(family, *LEARNERS[config.learner].builder(config, model, family))
    state, _, keys = meta_train_workdir(config, experiment, workdir)
    results = meta_test(config, experiment, state, keys.test)
    results["protocol"]["checkpoint"] = f"last, step {int(state.step)} (validation tasks from the training digits)"
    return results


# Each learner's settings in the article's examples (inner loop, test steps, and what the learner adds).
SETTINGS: dict[str, dict[str, Any]] = {
    "maml": {"inner_lr": 0.4, "inner_steps": 1, "eval_steps": (1, 5)},
    "mamlpp": {
        "inner_lr": 0.1, "inner_steps": 5, "eval_steps": (5,), "msl_steps": 500, "first_order_steps": 1000,
        "lslr": True, "bnwb": False, "bnrs": False, "cosine": True,
    },
    "reptile": {
        "shots": 10, "queries": 1, "inner_lr": 0.001, "inner_steps": 5, "eval_steps": (50,), "meta_lr": 1.0,
        "meta_batch": 5, "transductive": False,
    },
}  # fmt: skip


def maml_mlp_config(learner: str) -> ml_collections.ConfigDict:
    """The ``maml-mlp`` program's config for ``learner`` (``maml``, ``mamlpp`` or ``reptile``): 5-way 1-shot
    tasks of scikit-learn's digits (``task=mnist`` with TFDS data), the article's MLP, meta-batch 16.

    Example::

        >>> maml_mlp_config("reptile").eval_steps
        (50,)
    """
    config = few_shot_config("digits", one_of("learner", learner, tuple(SETTINGS)), ways=5, shots=1)
    del config.split, config.hidden, config.downsample, config.pool, config.batch_norm
    config.program = "maml-mlp"
    config.meta_batch, config.steps, config.log_every, config.val_every = 16, 2000, 100, 500
    config.published_source = "none: the article reports no figures"
    config.update(SETTINGS[learner])
    return config
