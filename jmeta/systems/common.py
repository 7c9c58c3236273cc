"""What the source systems' programs share: the results they return (:func:`report`), a system's
comparison with its baseline (:func:`paired_gain`, :func:`comparison`), the few-shot protocol entries,
Omniglot by config, and a compiled loop of optimiser steps (:func:`train_steps`).

Every program returns what ``jmeta.train.meta_test`` returns (``protocol``, ``results`` as
``{row: {metric: {mean, ci95, tasks}}}``, ``published``, ``published_source``), so that
``jmeta.train.format_results`` prints it.

Example::

    >>> import ml_collections
    >>> config = ml_collections.ConfigDict({"task": "iris", "seed": 0, "published": {}, "published_source": ""})
    >>> sorted(report(config, {"a": {"accuracy": estimate([1.0, 0.0])}}, {"tasks": 2}))
    ['protocol', 'published', 'published_source', 'results']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jmeta.data import load
from jmeta.evaluation import Estimate, estimate

Program = Callable[[ml_collections.ConfigDict, Path], dict[str, Any]]
CI_OVER_TASKS = "95%, 1.96 * std / sqrt(tasks)"


def report(
    config: ml_collections.ConfigDict,
    rows: Mapping[str, Mapping[str, Estimate]],
    protocol: Mapping[str, Any],
    **details: Any,
) -> dict[str, Any]:
    """Results shaped like ``jmeta.train.meta_test``'s: ``protocol`` (``task``, ``seed`` and ``ci`` added
    to the given entries, which need ``tasks``, ``shots``, ``queries_per_task``, ``inner_lr`` and
    ``checkpoint`` for ``format_results``), ``results`` (one row per name), the published figures, and any
    ``details`` as further top-level entries.

    Every row must have the same metrics, the columns of ``format_results``'s table.

    Example::

        >>> import ml_collections
        >>> config = ml_collections.ConfigDict({"task": "iris", "seed": 0, "published": {}, "published_source": ""})
        >>> report(config, {"a": {"accuracy": estimate([0.0, 1.0])}}, {"tasks": 2})["results"]["a"]["accuracy"]["mean"]
        0.5
    """
    metrics = {name: sorted(by_metric) for name, by_metric in rows.items()}
    if len({tuple(names) for names in metrics.values()}) > 1:
        raise ValueError(f"every row must report the same metrics; got {metrics}.")
    return {
        "protocol": {"task": config.task, **protocol, "ci": protocol.get("ci", CI_OVER_TASKS), "seed": config.seed},
        "results": {name: {m: e._asdict() for m, e in by_metric.items()} for name, by_metric in rows.items()},
        "published": dict(config.published),
        "published_source": config.published_source,
        **details,
    }


def paired_gain(system: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> Estimate:
    """The gain of a system over its baseline measured on the same tasks: the mean of the per-task
    differences ``system[i] - baseline[i]`` (positive: the system is better, for a metric where higher is
    better) with the 95% half-width ``1.96 * std / sqrt(tasks)`` of those differences.

    Pairing removes the spread that both share (hard and easy tasks), so the interval is that of the
    difference, not of either figure. ``system`` and ``baseline`` are 1-D, one value per task, at least two
    tasks, in the same task order; a ValueError says otherwise.

    Example::

        >>> gain = paired_gain([0.9, 0.8, 0.7], [0.8, 0.6, 0.6])
        >>> round(gain.mean, 4), round(gain.ci95, 4), gain.tasks
        (0.1333, 0.0653, 3)
    """
    system, baseline = np.asarray(system, np.float64), np.asarray(baseline, np.float64)
    if system.ndim != 1 or system.shape != baseline.shape or system.size < 2:
        raise ValueError(
            "system and baseline must be 1-D with one value per task, the same tasks in the same order, and at "
            f"least 2 tasks; got shapes {system.shape} and {baseline.shape}."
        )
    return estimate(system - baseline)


def comparison(system: str, baseline: str, gain: Estimate) -> dict[str, Any]:
    """The ``comparison`` entry of a program's ``results.json``: ``{"system": ..., "baseline": ...,
    "gain": {"mean", "ci95", "tasks"}}``, ``gain`` as :func:`paired_gain` returns it (positive: the system
    is better). ``system`` and ``baseline`` name rows of the results.

    Example::

        >>> entry = comparison("distilled", "labels only", paired_gain([1.0, 0.5], [0.5, 0.5]))
        >>> entry["system"], entry["baseline"], entry["gain"]["mean"], entry["gain"]["tasks"]
        ('distilled', 'labels only', 0.25, 2)
    """
    for name, value in (("system", system), ("baseline", baseline)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string naming a row of the results; got {value!r}.")
    if not isinstance(gain, Estimate):
        raise TypeError(f"gain must be a jmeta.Estimate (e.g. from paired_gain); got {type(gain).__name__}.")
    return {"system": system, "baseline": baseline, "gain": gain._asdict()}


def omniglot(config: ml_collections.ConfigDict) -> Any:
    """The Omniglot splits of ``config.data_dir`` (``config.split``)."""
    return load("omniglot", config.data_dir or None, split=config.split)


def few_shot_protocol(config: ml_collections.ConfigDict, checkpoint: str) -> dict[str, Any]:
    """The protocol entries of a few-shot meta-test with ``config``'s settings."""
    return {
        "ways": config.ways,
        "tasks": config.eval_tasks,
        "shots": config.eval_shots,
        "queries_per_task": config.eval_queries * config.ways,
        "inner_steps": list(config.eval_steps),
        "inner_lr": config.inner_lr,
        "checkpoint": checkpoint,
    }


def train_steps(
    trainer_update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
    state: Any,
    sample: Callable[[jax.Array, int], Any],
    key: jax.Array,
    *,
    steps: int,
    batch: int,
) -> tuple[Any, dict[str, float]]:
    """Runs ``steps`` updates ``state, metrics = trainer_update(state, sample(fold_in(key, i), batch))`` in
    one compiled scan; returns the state and the metrics of the last step. ``sample`` is passed to the
    compiled function as an argument, so it must be a pytree (an ``EpisodeSampler``, a
    ``jax.tree_util.Partial`` holding the data) and its data are not baked into the program.

    Example::

        >>> update = lambda s, x: (s + x.sum(), {"x": x.sum()})
        >>> ones = jax.tree_util.Partial(lambda k, n: jnp.ones(n))
        >>> train_steps(update, jnp.zeros(()), ones, jax.random.key(0), steps=3, batch=2)[0]
        Array(6., dtype=float32)
    """

    @jax.jit
    def run(state: Any, sample: Any) -> tuple[Any, dict[str, jax.Array]]:
        def one(state: Any, i: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
            return trainer_update(state, sample(jax.random.fold_in(key, i), batch))

        return jax.lax.scan(one, state, jnp.arange(steps))

    state, metrics = run(state, sample)
    return state, {name: float(values[-1]) for name, values in metrics.items()}


