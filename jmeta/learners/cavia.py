"""CAVIA: fast context adaptation (Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson, ICML 2019).

The network's parameters are shared by all tasks and meta-learned; each task adapts only a small context
vector, reset to zeros for every task and fed to the network beside the input (concatenated to it, as the
paper does for regression). The inner loop runs gradient steps on the context alone; the meta-gradient flows
through them into the network, as in MAML.

This module is the worked example of docs/your-own-learner.md: it is written only with jmeta's public learner
toolkit (:mod:`jmeta.learners.toolkit`), so it gets what the built-ins get: any optax inner optimiser with
finite meta-gradients, ``remat``, label checks, per-call ``steps``, and the model's ``compute_dtype``.

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1 + 4)))  # input + 4 context
    >>> learner = cavia(model, jmeta.losses.mse, context_size=4, inner_lr=1.0)
    >>> params, state = learner.init(jax.random.key(0))
    >>> task = jax.tree.map(lambda a: a[0], jmeta.tasks.sinusoid_tasks(jax.random.key(1), 1, shots=5, queries=5))
    >>> learner.adapt(params, state, task.support_x, task.support_y).context.shape
    (4,)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta.learners.toolkit import (
    Learner,
    LossFn,
    TaskOutput,
    call_apply,
    gradient_inner_loop,
    query_metrics,
    resolve_inner_optimizer,
    steps_or_default,
)
from jmeta.nn import Model, PyTree
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


class CAVIAParams(NamedTuple):
    """A task's parameters: the shared network's and the task's context vector ``(context_size,)`` float32."""

    network: PyTree
    context: jax.Array


def with_context(x: jax.Array, context: jax.Array) -> jax.Array:
    """``x`` ``(points, features)`` with ``context`` ``(c,)`` appended to every point: ``(points, features + c)``."""
    return jnp.concatenate([x, jnp.broadcast_to(context.astype(x.dtype), (*x.shape[:-1], context.shape[-1]))], axis=-1)


def cavia(
    model: Model,
    loss_fn: LossFn,
    context_size: int,
    inner_lr: float | None = None,
    steps: int = 1,
    *,
    inner_optimizer: optax.GradientTransformation | None = None,
    first_order: bool = False,
    remat: bool = False,
    metrics: Mapping[str, LossFn] | None = None,
) -> Learner:
    """CAVIA: only a context vector adapts in the inner loop; the network is meta-learned.

    Args:
      model: a ``jmeta.Model`` whose input has ``context_size`` more features than the data (its last axis),
        e.g. ``from_linen(MLP(...), jnp.zeros((1, features + context_size)))``.
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task, used in both loops.
      context_size: the number of context parameters (the paper uses a handful for sine regression).
      inner_lr: learning rate of plain SGD on the context (the paper: 1.0); or ``inner_optimizer``.
      steps: inner steps per task (overridable per call).
      first_order: stop gradients through the inner gradients, as :func:`jmeta.fomaml`.
      remat: checkpoint the inner loop, so that memory grows like log ``steps``.
      metrics: extra query metrics beside ``"loss"``.

    Returns a :class:`jmeta.Learner` whose task parameters are :class:`CAVIAParams`; ``adapts_network`` is
    False (the network is the same for every task). Shapes: a task's ``x`` is ``(points, features)``.
    Raises ValueError for a non-positive ``context_size`` or ``steps``, and (while tracing) for a model whose
    input width does not fit.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 3)))
        >>> cavia(model, jmeta.losses.mse, context_size=2, inner_lr=1.0).adapts_network
        False
    """
    context_size = positive_int("context_size", context_size)
    default_steps = positive_int("steps", steps)
    optimizer = resolve_inner_optimizer(inner_lr, inner_optimizer)

    def adapt(meta_params: PyTree, model_state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None):
        def apply(context: jax.Array, state: PyTree, x: jax.Array):
            return call_apply(model.apply, meta_params, state, with_context(x, context))

        run = gradient_inner_loop(apply, loss_fn, optimizer, first_order=first_order, remat=remat)
        context = run(
            jnp.zeros((context_size,), jnp.float32), model_state, x, y, steps_or_default(steps, default_steps)
        )
        return CAVIAParams(meta_params, context)

    def predict(task_params: CAVIAParams, model_state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        return call_apply(model.apply, task_params.network, model_state, with_context(x, task_params.context))

    def task_loss(meta_params: PyTree, model_state: PyTree, task: Task, steps: int | None = None):
        task_params = adapt(meta_params, model_state, task.support_x, task.support_y, steps)
        predictions, new_state = predict(task_params, model_state, task.query_x)
        loss, values = query_metrics(loss_fn, metrics or {}, predictions, task.query_y)
        return loss, TaskOutput(values, new_state)

    return Learner(init=model.init, adapt=adapt, predict=predict, task_loss=task_loss, adapts_network=False)
