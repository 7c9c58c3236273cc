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
import optax

from jmeta import batching as jmeta_batching
from jmeta.learners.base import Learner, TaskOutput
from jmeta.nn import PyTree
from jmeta.tasks.task import Task, num_tasks


class TrainState(NamedTuple):
    """Everything a meta-training run carries from one step to the next."""

    step: jax.Array
    params: PyTree
    model_state: PyTree
    opt_state: optax.OptState


class MetaTrainer(NamedTuple):
    """``init(key) -> TrainState``; ``step(state, tasks) -> (state, metrics)`` (validated, jit-compiled);
    ``step`` donates its input state's buffers (do not reuse a state after stepping it);
    ``update``: the same step un-jitted, to compose into larger programs; ``loss(params, model_state,
    tasks) -> (mean query loss, TaskOutput averaged over tasks)``."""

    init: Callable[[jax.Array], TrainState]
    step: Callable[[TrainState, Task], tuple[TrainState, dict[str, jax.Array]]]
    update: Callable[[TrainState, Task], tuple[TrainState, dict[str, jax.Array]]]
    loss: Callable[[PyTree, PyTree, Task], tuple[jax.Array, TaskOutput]]


def meta_trainer(
    learner: Learner,
    optimizer: optax.GradientTransformation,
    *,
    batching: str = "auto",
    chunk_size: int | None = None,
) -> MetaTrainer:
    """Builds the meta-training step of ``learner`` with the meta-optimiser ``optimizer``.

    The meta-loss is the mean over tasks of ``learner.task_loss``; tasks are mapped with the
    ``batching`` strategy (see ``jmeta.batching``). The step accepts a task batch sharded over devices
    (``jmeta.parallel.shard_tasks``) with the state replicated (``jmeta.parallel.replicate``).

    Example::

        >>> import jax.numpy as jnp, optax, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
        >>> trainer = jmeta.meta_trainer(learner, optax.adam(1e-3), batching="vmap")
    """
    if not isinstance(learner, Learner):
        raise TypeError(f"learner must be a jmeta.Learner (e.g. jmeta.maml(...)); got {type(learner).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}.")
    batched_task_loss = jmeta_batching.over_tasks(learner.task_loss, batching, chunk_size)
    batched_task_loss_and_grad = jmeta_batching.over_tasks_with_mean_grad(learner.task_loss, batching, chunk_size)

    def init(key: jax.Array) -> TrainState:
        params, model_state = learner.init(key)
        return TrainState(jnp.zeros((), jnp.int32), params, model_state, optimizer.init(params))

    def loss(params: PyTree, model_state: PyTree, tasks: Task) -> tuple[jax.Array, TaskOutput]:
        losses, outputs = batched_task_loss(params, model_state, tasks)
        return jnp.mean(losses), mean_over_tasks(outputs)

    def update(state: TrainState, tasks: Task) -> tuple[TrainState, dict[str, jax.Array]]:
        (_, outputs), grads = batched_task_loss_and_grad(state.params, state.model_state, tasks)
        output = mean_over_tasks(outputs)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**output.metrics, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, output.model_state, opt_state), metrics

    compiled_update = jax.jit(update, donate_argnums=0)

    def step(state: TrainState, tasks: Task) -> tuple[TrainState, dict[str, jax.Array]]:
        num_tasks(tasks)
        return compiled_update(state, tasks)

    return MetaTrainer(init=init, step=step, update=update, loss=loss)


def mean_over_tasks(tree: Any) -> Any:
    """Averages floating-point leaves over the leading task axis; other leaves take the first task's."""
    return jax.tree.map(lambda a: jnp.mean(a, 0) if jnp.issubdtype(a.dtype, jnp.floating) else a[0], tree)
