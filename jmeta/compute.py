"""Training compute counted in example passes: the x-axis of "which learner is best at equal training compute".

Convention. An *example pass* is one training example sent forward through the learner's network together
with the backward pass that follows it in meta-training. A meta-step of ``T`` tasks (``meta_batch``), each
with ``S`` support and ``Q`` query points, costs

    T * (support_passes * S + query_passes * Q)

example passes, where ``(support_passes, query_passes)`` are the passes of one support and one query point
per task. A learner's registration may declare them (``example_passes=lambda config: (s, q)``, e.g. iMAML:
``inner_steps + cg_steps`` support passes, each conjugate-gradient step differentiating the support loss
once more); by default they follow from its other declared properties and config keys, never its name:

* a learner that declares an inner learning rate (``inner_lr=True``: a gradient inner loop over the support
  set, as MAML, FOMAML, Meta-SGD, ANIL, BOIL, Reptile, CAVIA, MAML++) passes the support set once per inner
  step and the query set once: ``(config.inner_steps, 1)``. For MAML this is the usual
  ``meta_batch * (inner_steps * support + query)``;
* any other learner (ProtoNets, Matching and Relation Networks, MetaOptNet, Baseline, Baseline++,
  fine-tuning) embeds every support and query point once: ``(1, 1)``. The pre-training learners' training
  tasks are class minibatches cut into a support and a query half (``jmeta.tasks.class_batches``), so each
  example of a minibatch counts once.

The count is nominal, not FLOPs (``jmeta bench`` measures those): a second-order backward pass counts as the
backward of its pass; ANIL's and BOIL's inner steps, which differentiate part of the network only, count as
whole passes; closed-form heads (MetaOptNet) and relation modules cost nothing extra here; MAML++'s
multi-step loss (query passes after every inner step for its first ``msl_steps``) is not counted;
test-time adaptation (``eval_steps``, a Baseline's head fitting) is not training. Tasks added to fill
devices (weight 0) do not count: ``T`` is the sampler's ``meta_batch``.

Example::

    >>> import jax.numpy as jnp, ml_collections
    >>> from jmeta.tasks import Task
    >>> config = ml_collections.ConfigDict({"learner": "maml", "inner_steps": 5})
    >>> tasks = Task(jnp.zeros((32, 5, 28, 28, 1)), jnp.zeros((32, 5)), jnp.zeros((32, 75, 28, 28, 1)),
    ...              jnp.zeros((32, 75)))
    >>> example_passes(config), passes_per_step(config, tasks)   # 32 * (5 * 5 + 75)
    ((5, 1), 3200)
"""

from __future__ import annotations

import numbers
from typing import Any

import jax

from jmeta.registry import LEARNERS
from jmeta.tasks import Task


def example_passes(config: Any) -> tuple[int, int]:
    """``(support_passes, query_passes)``: how many times one support point and one query point of a training
    task pass through the network in a meta-step of ``config.learner`` (module docstring).

    Raises ``ValueError`` for an unknown learner, or a declared ``example_passes`` that does not return two
    non-negative integers; ``AttributeError`` (from the config) when an inner-loop learner's config has no
    ``inner_steps``.

    Example::

        >>> import ml_collections
        >>> example_passes(ml_collections.ConfigDict({"learner": "protonet"}))
        (1, 1)
    """
    component = LEARNERS[config.learner]
    declared = component.properties["example_passes"]
    if declared is not None:
        passes = declared(config)
        where = f"learner {config.learner!r}'s declared example_passes"
    else:
        passes = (config.inner_steps, 1) if component.properties["inner_lr"] else (1, 1)
        where = f"learner {config.learner!r}'s inner_steps"
    if (
        not isinstance(passes, tuple)
        or len(passes) != 2
        or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) and p >= 0 for p in passes)
    ):
        raise ValueError(
            f"{where} must give two non-negative integers (support passes, query passes per task); got {passes!r}."
        )
    return int(passes[0]), int(passes[1])


def passes_per_step(config: Any, tasks: Task) -> int:
    """Example passes of one meta-step on ``tasks``, a batch of training tasks as the run's sampler draws
    them (arrays or ``jax.ShapeDtypeStruct`` s; ``support_x`` ``(tasks, S, ...)``, ``query_x`` ``(tasks, Q,
    ...)``): ``tasks * (support_passes * S + query_passes * Q)``.

    Raises ``ValueError`` when ``tasks`` has no task axis and point axis, or as :func:`example_passes`.

    Example::

        >>> import jax.numpy as jnp, ml_collections
        >>> tasks = Task(jnp.zeros((4, 20, 8)), jnp.zeros((4, 20)), jnp.zeros((4, 100, 8)), jnp.zeros((4, 100)))
        >>> passes_per_step(ml_collections.ConfigDict({"learner": "metaoptnet-r2d2"}), tasks)   # 4 * (20 + 100)
        480
    """
    support, query = tasks.support_x.shape, tasks.query_x.shape
    if len(support) < 2 or len(query) < 2 or support[0] != query[0]:
        raise ValueError(
            "tasks must be a batch of tasks, support_x (tasks, support points, ...) and query_x (tasks, query "
            f"points, ...) with the same number of tasks; got shapes {support} and {query}."
        )
    support_passes, query_passes = example_passes(config)
    return support[0] * (support_passes * support[1] + query_passes * query[1])


def training_example_passes(config: Any, family: Any, step: int) -> int | None:
    """Example passes of ``step`` meta-steps of the run ``config`` describes: ``step`` times
    :func:`passes_per_step` on the shapes of ``config.meta_batch`` tasks of ``family.sample_train`` (traced
    abstractly, nothing is sampled); ``None`` for a family without a training sampler.

    Example::

        >>> from jmeta.experiment import build, load_config
        >>> config = load_config("experiments/omniglot_maml.py")                          # doctest: +SKIP
        >>> training_example_passes(config, build(config).family, 1000)   # 1000 * 32 * (1 * 5 + 5)  # doctest: +SKIP
        320000
    """
    if family.sample_train is None:
        return None
    tasks = jax.eval_shape(lambda sampler: sampler(jax.random.key(0), config.meta_batch), family.sample_train)
    return int(step) * passes_per_step(config, tasks)
