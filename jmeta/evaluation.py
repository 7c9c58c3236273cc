"""Meta-test evaluation: per-task metrics after several inner-step counts, with 95% confidence intervals.

The interval is the normal approximation used by few-shot papers: mean +- 1.96 * std / sqrt(tasks),
with the sample standard deviation over tasks.

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
    >>> params, state = learner.init(jax.random.key(0))
    >>> sample = jmeta.tasks.SinusoidSampler(shots=5, queries=100)
    >>> results = evaluate(learner, params, state, sample, jax.random.key(1), num_tasks=20, steps=(0, 1))
    >>> sorted(results[1])
    ['loss']
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jmeta import batching
from jmeta.learners.base import Learner
from jmeta.nn import PyTree
from jmeta.tasks.task import Task
from jmeta.validation import positive_int

TaskSampler = Callable[[jax.Array, int], Task]


class Estimate(NamedTuple):
    """A mean over tasks with the half-width of its 95% confidence interval."""

    mean: float
    ci95: float
    tasks: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.ci95:.2g}"


def estimate(values: Sequence[float] | np.ndarray) -> Estimate:
    """Mean and 95% confidence half-width of per-task values.

    Example::

        >>> estimate([1.0, 2.0, 3.0]).mean
        2.0
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"values must be a 1-D sequence of at least 2 per-task values; got shape {values.shape}.")
    return Estimate(float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size)), values.size)


def evaluate(
    learner: Learner,
    params: PyTree,
    model_state: PyTree,
    sample_tasks: TaskSampler,
    key: jax.Array,
    *,
    num_tasks: int = 600,
    steps: Sequence[int] = (1, 5, 10),
    batch_size: int = 100,
    batching_strategy: str = "auto",
) -> dict[int, dict[str, Estimate]]:
    """Adapts to ``num_tasks`` fresh tasks and reports every query metric after each inner-step count.

    ``sample_tasks(key, n)`` draws ``n`` tasks; it is a pytree callable such as
    ``jmeta.tasks.SinusoidSampler`` or ``jmeta.tasks.episodes.EpisodeSampler`` (passed into the compiled
    sampling function as an argument, so its data are not baked in). They are evaluated ``batch_size`` at a
    time, the same tasks for every step count. Step count 0 is the meta-parameters before adaptation.
    Returns ``{steps: {metric: Estimate}}``. Compiled programs are cached, so calling it again (e.g. for
    periodic validation) does not recompile.
    """
    values = per_task_metrics(
        learner,
        params,
        model_state,
        sample_tasks,
        key,
        num_tasks=num_tasks,
        steps=steps,
        batch_size=batch_size,
        batching_strategy=batching_strategy,
    )
    return {k: {name: estimate(v) for name, v in by_name.items()} for k, by_name in values.items()}


def per_task_metrics(
    learner: Learner,
    params: PyTree,
    model_state: PyTree,
    sample_tasks: TaskSampler,
    key: jax.Array,
    *,
    num_tasks: int = 600,
    steps: Sequence[int] = (1, 5, 10),
    batch_size: int = 100,
    batching_strategy: str = "auto",
) -> dict[int, dict[str, np.ndarray]]:
    """What :func:`evaluate` estimates, task by task: ``{steps: {metric: values}}``, each ``values`` a
    ``(num_tasks,)`` NumPy array in the order the tasks were drawn. Two learners evaluated with the same
    ``sample_tasks``, ``key``, ``num_tasks`` and ``batch_size`` see the same tasks, so their values can be
    compared pair by pair (e.g. ``jmeta.systems.common.paired_gain``). Raises ValueError as
    :func:`evaluate` does.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
        >>> params, state = learner.init(jax.random.key(0))
        >>> sample = jmeta.tasks.SinusoidSampler(shots=5, queries=10)
        >>> values = per_task_metrics(learner, params, state, sample, jax.random.key(1), num_tasks=3, steps=(1,))
        >>> values[1]["loss"].shape
        (3,)
    """
    num_tasks = positive_int("num_tasks", num_tasks)
    batch_size = positive_int("batch_size", batch_size)
    if num_tasks < 2:
        raise ValueError(f"num_tasks must be at least 2 for a confidence interval; got {num_tasks}.")
    steps = tuple(positive_int("steps", k, allow_zero=True) for k in steps)
    batching.check_strategy(batching_strategy)
    metrics_of = _compiled_metrics(learner, steps, batching_strategy)
    collected: dict[int, dict[str, list[np.ndarray]]] = {k: {} for k in steps}
    for start in range(0, num_tasks, batch_size):
        tasks = _draw(sample_tasks, jax.random.fold_in(key, start), min(batch_size, num_tasks - start))
        for k, by_name in metrics_of(params, model_state, tasks).items():
            for name, values in by_name.items():
                collected[k].setdefault(name, []).append(np.asarray(values))
    return {k: {name: np.concatenate(v) for name, v in by_name.items()} for k, by_name in collected.items()}


@functools.lru_cache(maxsize=64)
def _compiled_metrics(learner: Learner, steps: tuple[int, ...], strategy: str) -> Callable[..., Any]:
    """One jitted program: per-task query metrics after each inner-step count."""

    def per_task(params: PyTree, model_state: PyTree, task: Task) -> dict[int, dict[str, jax.Array]]:
        return {k: learner.task_loss(params, model_state, task, steps=k)[1].metrics for k in steps}

    return jax.jit(batching.over_tasks(per_task, strategy))


@functools.partial(jax.jit, static_argnums=2)
def _draw(sampler: TaskSampler, key: jax.Array, num_tasks: int) -> Task:
    """Draws tasks from a pytree sampler (passed as an argument: its arrays are not baked in)."""
    return sampler(key, num_tasks)
