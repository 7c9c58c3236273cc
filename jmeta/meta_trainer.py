"""The outer loop: a meta-training step over a batch of tasks, compiled once.

Example::

    >>> import jax, jax.numpy as jnp, optax
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
    >>> trainer = jmeta.meta_trainer(learner, optax.adam(1e-3))
    >>> state = trainer.init(jax.random.key(0))
    >>> tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 25, shots=10, queries=10)
    >>> state, metrics = trainer.step(state, tasks)
    >>> sorted(metrics)
    ['grad_norm', 'loss']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jmeta import batching as jmeta_batching
from jmeta.learners.base import Learner, TaskOutput
from jmeta.learners.common import path_names
from jmeta.learners.labels import check_task_labels
from jmeta.nn import PyTree
from jmeta.tasks.task import Task, num_tasks


class TrainState(NamedTuple):
    """Everything a meta-training run carries from one step to the next."""

    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: optax.OptState


class NonFiniteError(FloatingPointError):
    """A meta-step gave a NaN or infinite metric or meta-gradient; the message names which."""


class MetaTrainer(NamedTuple):
    """``init(key) -> TrainState``; ``step(state, tasks, weights=None) -> (state, metrics)`` (validated,
    jit-compiled); ``step`` donates its input state's buffers (do not reuse a state after stepping it);
    ``update(state, tasks, weights=None)``: the same step un-jitted, to compose into larger programs;
    ``loss(params, model_state, tasks, weights=None) -> (mean query loss, TaskOutput averaged over tasks)``.
    With ``check_finite=True``, ``step`` raises ``NonFiniteError`` instead of returning a non-finite step,
    and does not donate its input.

    ``weights``: ``None`` (every task counts the same) or a ``(tasks,)`` float array, ``>= 0`` and not all
    0; every mean over tasks (meta-loss, meta-gradient, metrics, floating-point model state) is then
    ``sum_i w_i x_i / sum_i w_i`` (``jmeta.batching.task_mean``)."""

    init: Callable[[jax.Array], TrainState]
    step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    update: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
    loss: Callable[..., tuple[jax.Array, TaskOutput]]


def meta_trainer(
    learner: Learner,
    optimizer: optax.GradientTransformation,
    *,
    batching: str = "auto",
    chunk_size: int | None = None,
    check_finite: bool = False,
) -> MetaTrainer:
    """Builds the meta-training step of ``learner`` with the meta-optimiser ``optimizer``.

    The meta-loss is the mean over tasks of ``learner.task_loss``; tasks are mapped with the
    ``batching`` strategy (see ``jmeta.batching``). The step accepts a task batch sharded over devices
    (``jmeta.parallel.shard_tasks``) with the state replicated (``jmeta.parallel.replicate``).

    Task weights: ``step``, ``update`` and ``loss`` take ``weights``, a ``(tasks,)`` float array (``>= 0``,
    not all 0), and then average every per-task quantity with them: the meta-loss and so the meta-gradient
    (for Reptile, the mean of ``theta - theta'``), the metrics (``loss`` and the learner's; ``grad_norm`` is
    the norm of that meta-gradient) and the floating-point leaves of the model state (e.g. BatchNorm
    statistics; other leaves are the first task's, so put a real task first). A batch padded to split
    evenly over devices gives its padding weight 0 (``jmeta.parallel.pad_with_weights``): the step is then
    the step on the real tasks alone, within float rounding. Tasks of weight 0 are still computed (at full
    cost) and must give finite values, since ``0 * nan`` is NaN; padding copies real tasks, so it does.

    ``step`` refuses, before compiling, a task batch whose class labels lie outside ``0..classes-1`` for
    the learner's predictions (``jmeta.learners.labels``), and ``weights`` of another shape than
    ``(tasks,)``, negative, non-finite or all 0 (``ValueError``).

    ``check_finite=True`` makes ``step`` check every metric (``loss``, ``grad_norm``, the learner's) and
    every meta-gradient entry after each step, and raise ``NonFiniteError`` naming the non-finite metrics
    and parameter leaves (with their counts of bad entries). It then does not donate the state it is given,
    so after the error that state is still the last finite one. The check waits for each step's result
    (one device-to-host transfer per step); ``update`` is unaffected. Raises ``TypeError`` for a
    ``learner`` or ``optimizer`` of the wrong type.

    Example::

        >>> import jax.numpy as jnp, optax, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
        >>> trainer = jmeta.meta_trainer(learner, optax.adam(1e-3), batching="vmap")
        >>> tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 3, shots=5, queries=5)
        >>> weights = jnp.array([1.0, 1.0, 0.0])                 # the third task is padding
        >>> state, metrics = trainer.step(trainer.init(jax.random.key(0)), tasks, weights)
    """
    if not isinstance(learner, Learner):
        raise TypeError(f"learner must be a jmeta.Learner (e.g. jmeta.maml(...)); got {type(learner).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}.")
    if not isinstance(check_finite, bool):
        raise TypeError(f"check_finite must be a bool (True or False); got {check_finite!r}.")
    batched_task_loss = jmeta_batching.over_tasks(learner.task_loss, batching, chunk_size)
    batched_task_loss_and_grad = jmeta_batching.over_tasks_with_mean_grad(learner.task_loss, batching, chunk_size)

    def init(key: jax.Array) -> TrainState:
        params, model_state = learner.init(key)
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, optimizer.init(params))

    def loss(
        params: PyTree, model_state: PyTree, tasks: Task, weights: jax.Array | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        jmeta_batching.check_weights(weights, jax.tree.leaves(tasks)[0].shape[0])
        losses, outputs = batched_task_loss(params, model_state, tasks)
        return jmeta_batching.task_mean(losses, weights), mean_over_tasks(outputs, weights)

    def update_with_grads(
        state: TrainState, tasks: Task, weights: jax.Array | None
    ) -> tuple[TrainState, dict[str, jax.Array], PyTree]:
        (_, outputs), grads = batched_task_loss_and_grad(state.params, state.model_state, tasks, weights)
        output = mean_over_tasks(outputs, weights)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**output.metrics, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, output.model_state, opt_state), metrics, grads

    def update(
        state: TrainState, tasks: Task, weights: jax.Array | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        new_state, metrics, _ = update_with_grads(state, tasks, weights)
        return new_state, metrics

    def counted_update(
        state: TrainState, tasks: Task, weights: jax.Array | None
    ) -> tuple[TrainState, dict[str, jax.Array], PyTree]:
        new_state, metrics, grads = update_with_grads(state, tasks, weights)
        return new_state, metrics, jax.tree.map(lambda g: jnp.sum(~jnp.isfinite(g)), grads)

    compiled_update = jax.jit(update, donate_argnums=0)
    compiled_counted_update = jax.jit(counted_update)

    def step(
        state: TrainState, tasks: Task, weights: jax.Array | None = None
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        jmeta_batching.check_weights(weights, num_tasks(tasks))
        check_task_labels(learner, state.params, state.model_state, tasks, "tasks")
        if not check_finite:
            return compiled_update(state, tasks, weights)
        new_state, metrics, bad_counts = compiled_counted_update(state, tasks, weights)
        raise_if_not_finite(metrics, bad_counts, int(new_state.step))
        return new_state, metrics

    return MetaTrainer(init=init, step=step, update=update, loss=loss)


def raise_if_not_finite(metrics: dict[str, Any], bad_counts: PyTree | None = None, step: int | None = None) -> None:
    """Raises ``NonFiniteError`` if a metric is NaN or infinite or ``bad_counts`` (the number of non-finite
    entries of each meta-gradient leaf) is non-zero anywhere, naming each such metric and parameter leaf.

    ``metrics`` maps names to scalars (or to per-step arrays, checked entry by entry). ``step`` is the
    meta-step reached, for the message.

    Example::

        >>> import jax.numpy as jnp
        >>> raise_if_not_finite({"loss": 0.5, "grad_norm": jnp.nan}, {"w": 3, "b": 0}, step=7)
        Traceback (most recent call last):
        jmeta.meta_trainer.NonFiniteError: meta-step 7 is not finite: grad_norm=nan; meta-gradient entries \
not finite: w (3 of its entries). ...
    """
    bad_metrics = {
        name: value
        for name, value in ((name, np.asarray(value)) for name, value in metrics.items())
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value))
    }
    bad_leaves = []
    if bad_counts is not None:
        for path, count in jax.tree_util.tree_flatten_with_path(bad_counts)[0]:
            if int(count) > 0:
                name = "/".join(str(part) for part in path_names(path)) or "params"
                bad_leaves.append(f"{name} ({int(count)} of its entries)")
    if not bad_metrics and not bad_leaves:
        return
    parts = [", ".join(f"{name}={_first_bad(value)}" for name, value in bad_metrics.items())] if bad_metrics else []
    if bad_leaves:
        parts.append(f"meta-gradient entries not finite: {', '.join(bad_leaves)}")
    where = "a meta-step" if step is None else f"meta-step {step}"
    raise NonFiniteError(
        f"{where} is not finite: {'; '.join(parts)}. Lower meta_lr or inner_lr, check the data (labels, "
        "NaN inputs), or look for a division by zero in a custom loss or model."
    )


def _first_bad(value: np.ndarray) -> float:
    return float(value.ravel()[~np.isfinite(value.ravel())][0])


def mean_over_tasks(tree: Any, weights: jax.Array | None = None) -> Any:
    """Averages floating-point leaves over the leading task axis (weighted by ``weights``, shape ``(tasks,)``,
    if given: ``jmeta.batching.task_mean``); other leaves take the first task's.

    Example::

        >>> import jax.numpy as jnp
        >>> mean_over_tasks({"loss": jnp.array([1.0, 3.0, 8.0]), "step": jnp.array([4, 4, 4])}, jnp.array([1, 1, 0]))
        {'loss': Array(2., dtype=float32), 'step': Array(4, dtype=int32)}
    """
    return jax.tree.map(
        lambda a: jmeta_batching.task_mean(a, weights) if jnp.issubdtype(a.dtype, jnp.floating) else a[0], tree
    )
