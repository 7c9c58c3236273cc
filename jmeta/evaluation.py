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
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jmeta import batching, parallel
from jmeta.batch_norm import BATCH_NORM_MODES, batch_norm_mode, check_mode
from jmeta.learners.base import Learner
from jmeta.learners.labels import check_task_labels
from jmeta.nn import PyTree
from jmeta.tasks.checks import check_finite_tasks
from jmeta.tasks.sampler import check_sampler
from jmeta.tasks.task import Task
from jmeta.validation import positive_int

TaskSampler = Callable[[jax.Array, int], Task]
__all__ = ["BATCH_NORM_MODES", "Estimate", "estimate", "evaluate", "finite_estimates", "per_task_metrics"]


class Estimate(NamedTuple):
    """A mean over tasks with the half-width of its 95% confidence interval.

    ``mean`` and ``ci95`` are over the ``tasks`` tasks whose values were finite; ``diverged`` counts the
    tasks left out because a value was NaN or infinite (e.g. an inner loop that blew up). Both are NaN
    only if fewer than two tasks were finite.
    """

    mean: float
    ci95: float
    tasks: int
    diverged: int = 0

    def __str__(self) -> str:
        if self.tasks < 2:
            return f"diverged on {self.diverged} of {self.tasks + self.diverged} tasks"
        text = f"{self.mean:.4g} ± {self.ci95:.2g}"
        return f"{text} ({self.diverged} diverged)" if self.diverged else text


def estimate(values: Sequence[float] | np.ndarray, diverged: int = 0) -> Estimate:
    """Mean and 95% confidence half-width of per-task values, with the count of ``diverged`` tasks already
    left out of them.

    Example::

        >>> estimate([1.0, 2.0, 3.0]).mean
        2.0
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size + diverged < 2:
        raise ValueError(f"values must be a 1-D sequence of at least 2 per-task values; got shape {values.shape}.")
    if values.size < 2:
        return Estimate(float("nan"), float("nan"), values.size, diverged)
    return Estimate(
        float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size)), values.size, diverged
    )


def finite_estimates(by_name: dict[str, np.ndarray]) -> dict[str, Estimate]:
    """One ``Estimate`` per metric over the tasks whose every metric is finite; the others count as diverged.

    Example::

        >>> import numpy as np
        >>> str(finite_estimates({"loss": np.array([1.0, 3.0, np.nan])})["loss"])
        '2 ± 2 (1 diverged)'
    """
    finite = np.logical_and.reduce([np.isfinite(np.asarray(v, np.float64)) for v in by_name.values()])
    diverged = int(np.sum(~finite))
    return {name: estimate(np.asarray(v, np.float64)[finite], diverged) for name, v in by_name.items()}


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
    batch_norm: str = "transductive",
    mesh: Mesh | None = None,
) -> dict[int, dict[str, Estimate]]:
    """Adapts to ``num_tasks`` fresh tasks and reports every query metric after each inner-step count.

    ``sample_tasks(key, n)`` draws ``n`` tasks; it is a pytree callable such as
    ``jmeta.tasks.SinusoidSampler`` or ``jmeta.tasks.episodes.EpisodeSampler`` (passed into the compiled
    sampling function as an argument, so its data are not baked in). Task ``i`` is drawn alone, as
    ``sample_tasks(fold_in(key, i), 1)`` (vmapped over a batch's keys), so the tasks, and with them the
    count of diverged tasks, do not depend on ``batch_size``, the number of tasks evaluated at a time; the
    same tasks serve every step count. Step count 0 is the meta-parameters before adaptation. Returns
    ``{steps: {metric: Estimate}}``. Compiled programs are cached, so calling it again (e.g. for
    periodic validation) does not recompile. With a ``mesh`` (``jmeta.parallel.task_mesh``), each batch is
    split over its devices (padded with repeats of its first tasks, whose results are dropped), so the tasks
    and estimates do not depend on the number of devices.

    Diverged tasks: a task whose metrics after ``k`` steps are not all finite is left out of the estimates
    for ``k`` and counted in their ``diverged`` field, so one exploding inner loop cannot turn a result
    into NaN unnoticed (``str(estimate)`` shows the count).

    ``batch_norm`` is the test-time BatchNorm protocol, one of ``BATCH_NORM_MODES`` (see
    ``jmeta.batch_norm``): ``"transductive"`` (the model as built: batch statistics of each pass),
    ``"support"`` (statistics of the support set; each query point is classified from the support set
    and itself only) or ``"running"`` (the running averages in ``model_state``; warns for learners whose
    inner loop adapts the network, whose running averages do not describe the adapted networks). The
    last two need a ``from_linen`` model; models without BatchNorm give the same result in every mode.

    Raises ``ValueError`` for a bad argument, for tasks whose class labels lie outside the model's
    outputs (checked on the first batch, before compiling), for tasks holding a NaN or infinite input or
    target (every batch is checked, the first before compiling: :func:`jmeta.tasks.checks.check_finite_tasks`),
    and for a non-transductive ``batch_norm`` with a model that cannot follow it.
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
        batch_norm=batch_norm,
        mesh=mesh,
    )
    return {k: finite_estimates(by_name) for k, by_name in values.items()}


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
    batch_norm: str = "transductive",
    mesh: Mesh | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """What :func:`evaluate` estimates, task by task: ``{steps: {metric: values}}``, each ``values`` a
    ``(num_tasks,)`` NumPy array in the order the tasks were drawn. Two learners evaluated with the same
    ``sample_tasks`` and ``key`` see the same tasks (whatever the ``batch_size``), so their values can be
    compared pair by pair (e.g. ``jmeta.systems.common.paired_gain``). Values of diverged tasks stay in
    (NaN or infinite). Raises ValueError as :func:`evaluate` does.

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
    check_mode(batch_norm)
    check_sampler(sample_tasks, "sample_tasks")
    if batch_norm == "running" and learner.adapts_network:
        warnings.warn(
            "batch_norm='running' normalises with the running averages in model_state, but this learner's inner "
            "loop adapts the network and meta-training normalised every pass with batch statistics: the running "
            "averages (of query passes through adapted networks) need not fit; 'support' is the inductive choice "
            "that matches training.",
            stacklevel=2,
        )
    metrics_of = _compiled_metrics(learner, steps, batching_strategy, batch_norm, mesh)
    if mesh is not None:
        params, model_state = parallel.replicate((params, model_state), mesh)
    collected: dict[int, dict[str, list[np.ndarray]]] = {k: {} for k in steps}
    for start in range(0, num_tasks, batch_size):
        count = min(batch_size, num_tasks - start)
        tasks = _draw(sample_tasks, key, start, count)
        check_finite_tasks(tasks, "sample_tasks", first_task=start)
        if start == 0:
            check_task_labels(learner, params, model_state, tasks, "the tasks of sample_tasks")
        if mesh is not None:
            tasks = parallel.shard_tasks(parallel.pad_tasks(tasks, mesh.size), mesh)
        for k, by_name in metrics_of(params, model_state, tasks).items():
            for name, values in by_name.items():
                collected[k].setdefault(name, []).append(np.asarray(values)[:count])
    return {k: {name: np.concatenate(v) for name, v in by_name.items()} for k, by_name in collected.items()}


@functools.lru_cache(maxsize=64)
def _compiled_metrics(
    learner: Learner, steps: tuple[int, ...], strategy: str, mode: str, mesh: Mesh | None
) -> Callable[..., Any]:
    """One jitted program: per-task query metrics after each inner-step count, BatchNorm following ``mode``
    (gathered on every device of ``mesh``, so that every process can read them). Raises ``ValueError`` while
    tracing if ``mode`` is not transductive and no model followed it."""

    def per_task(params: PyTree, model_state: PyTree, task: Task) -> dict[int, dict[str, jax.Array]]:
        with batch_norm_mode(mode, task.support_x) as current:
            metrics = {k: learner.task_loss(params, model_state, task, steps=k)[1].metrics for k in steps}
        if mode != "transductive" and not current.honoured:
            raise ValueError(
                f"batch_norm={mode!r} needs a model wrapped by jmeta.from_linen (its BatchNorm layers are replaced "
                "while tracing); this learner's model did not follow it. Use batch_norm='transductive', or wrap "
                "the Flax module with jmeta.from_linen."
            )
        return metrics

    gathered = None if mesh is None else parallel.replicated(mesh)
    return jax.jit(batching.over_tasks(per_task, strategy), out_shardings=gathered)


@functools.partial(jax.jit, static_argnums=3)
def _draw(sampler: TaskSampler, key: jax.Array, start: int, count: int) -> Task:
    """Tasks ``start .. start + count - 1``, task ``i`` drawn alone from ``fold_in(key, i)``, so that a task
    does not depend on the batch it is evaluated in; from a pytree sampler (passed as an argument: its arrays
    are not baked in)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(count))
    tasks = jax.vmap(lambda k: sampler(k, 1))(keys)
    drawn = {name: jnp.shape(value)[1] for name, value in tasks._asdict().items()}
    if set(drawn.values()) != {1}:
        raise ValueError(
            f"sample_tasks(key, 1) must return 1 task (a leading task axis of 1); it returned tasks of {drawn}. "
            "A sampler returns num_tasks tasks drawn from key (evaluate draws each task alone, from its own key)."
        )
    return jax.tree.map(lambda x: x[:, 0], tasks)
