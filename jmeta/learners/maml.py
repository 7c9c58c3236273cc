"""MAML (Finn, Abbeel & Levine, ICML 2017) and its first-order approximation.

The inner loop is plain SGD with ``inner_lr``, or any optax optimiser given as ``inner_optimizer``, run for
``steps`` steps on the support loss and differentiated through by ``jax.grad``: second order by default,
first order (stopping gradients through the inner gradients, Finn et al. 2017 sec. 5.2) with
``first_order=True`` or ``fomaml(...)``.

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01, steps=1)
    >>> params, state = learner.init(jax.random.key(0))
    >>> tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 25, shots=10, queries=10)
    >>> task = jax.tree.map(lambda a: a[0], tasks)
    >>> meta_grad = jax.grad(lambda p: learner.task_loss(p, state, task)[0])(params)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

from jmeta.learners.base import (
    Learner,
    LossFn,
    TaskOutput,
    call_apply,
    gradient_inner_loop,
    query_metrics,
    resolve_inner_optimizer,
    steps_or_default,
)
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


def maml(
    model: Model,
    loss_fn: LossFn,
    inner_lr: float | None = None,
    steps: int = 1,
    *,
    inner_optimizer: optax.GradientTransformation | None = None,
    first_order: bool = False,
    remat: bool = False,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Model-Agnostic Meta-Learning.

    Args:
      model: a ``jmeta.Model`` (``from_linen``, ``from_nnx``, or your own ``init``/``apply`` pair).
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task, used in both loops.
      inner_lr: learning rate of plain SGD in the inner loop; or give ``inner_optimizer`` instead.
      steps: inner steps during meta-training (``adapt`` and ``task_loss`` accept a per-call override).
      inner_optimizer: any optax transformation for the inner loop; its update is differentiated through.
      first_order: drop second-order terms (first-order MAML).
      remat: checkpoint the inner loop in nested segments (``jmeta.learners.remat``): the meta-gradient's
        memory grows like ``log(steps)``, not linearly, for a few more forward passes.
      metrics: extra ``name -> fn(predictions, targets)`` reported on the query set (e.g. accuracy).
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner``.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01, steps=5, first_order=True)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    default_steps = positive_int("steps", steps)
    optimizer = resolve_inner_optimizer(inner_lr, inner_optimizer)
    metrics = dict(metrics or {})
    run_inner_loop = gradient_inner_loop(
        model.apply, loss_fn, optimizer, first_order=first_order, remat=remat
    )

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> Any:
        return run_inner_loop(params, state, x, y, steps_or_default(steps, default_steps))

    def task_loss(
        params: PyTree, state: PyTree, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        adapted = adapt(params, state, task.support_x, task.support_y, steps)
        predictions, new_state = call_apply(model.apply, adapted, state, task.query_x)
        loss, values = query_metrics(loss_fn, metrics, predictions, task.query_y)
        return loss, TaskOutput(values, new_state)

    return Learner(init=model.init, adapt=adapt, predict=model.apply, task_loss=task_loss, adapts_network=True)


def fomaml(
    model: Model, loss_fn: LossFn, inner_lr: float | None = None, steps: int = 1, **kwargs: Any
) -> Learner:
    """First-order MAML: ``maml(..., first_order=True)``.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.fomaml(model, jmeta.losses.mse, inner_lr=0.01)
    """
    return maml(model, loss_fn, inner_lr, steps, first_order=True, **kwargs)
