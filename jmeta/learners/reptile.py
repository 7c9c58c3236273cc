"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018).

For each task, Reptile runs ``k`` optimiser steps from the meta-parameters ``theta`` on the task's support
set, reaching ``theta'``, and moves ``theta <- theta + eps * (theta' - theta)``, averaged over a batch of
tasks. The inner optimiser is Adam with ``beta1 = 0`` by default, as in the paper.

To train with the gradient-based ``jmeta.meta_trainer``, ``task_loss`` returns a surrogate whose value
is the query loss after adaptation and whose gradient with respect to ``theta`` is ``theta - theta'``::

    surrogate = stop_gradient(query_loss) + <theta - stop_gradient(theta), stop_gradient(theta - theta')>

(no gradient flows through the inner loop). ``optax.sgd(eps)`` as the meta-optimiser then performs the
Reptile update averaged over the task batch (a weighted average with the trainer's task ``weights``, e.g.
padding of weight 0: ``jmeta.meta_trainer``), and ``reptile_meta_optimizer`` anneals ``eps`` linearly to
``final`` as in the paper. Other optax optimisers (e.g. Adam) use ``theta - theta'`` as a gradient.
``metrics["loss"]`` is the real query loss after adaptation.

Evaluation and BatchNorm. A model normalising with batch statistics makes a point's prediction depend
on the points it is batched with:

* *transductive* (``transductive=True``, the default, and ``predict``): the query points are run as
  one batch, so each prediction depends on the other query points;
* *non-transductive* (``transductive=False``, or ``predict_non_transductive``): each query point is run
  in a batch with the support set only and its own output is read, so its prediction depends on the
  support set and itself alone (the paper's non-transductive setting; ``Q`` passes of ``S + 1`` points).

Models without batch statistics give the same predictions either way.

Example::

    >>> import jax, jax.numpy as jnp, optax
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.learners.reptile(model, jmeta.losses.mse, inner_lr=0.01, steps=5)
    >>> trainer = jmeta.meta_trainer(learner, jmeta.learners.reptile_meta_optimizer(0.1, steps=1000))
    >>> state = trainer.init(jax.random.key(0))
    >>> state, metrics = trainer.step(state, jmeta.tasks.sinusoid_tasks(jax.random.key(1), 5, shots=10, queries=10))
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from jmeta.learners.base import (
    Learner,
    LossFn,
    TaskOutput,
    call_apply,
    gradient_inner_loop,
    resolve_inner_optimizer,
    steps_or_default,
)
from jmeta.learners.common import check_bool, non_negative_float, query_pass
from jmeta.nn import ApplyFn, Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int


def reptile(
    model: Model,
    loss_fn: LossFn,
    inner_lr: float | None = None,
    steps: int = 5,
    *,
    inner_optimizer: optax.GradientTransformation | None = None,
    transductive: bool = True,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Reptile, as a learner for ``jmeta.meta_trainer`` (see the module docstring for the surrogate loss).

    Args:
      model: a ``jmeta.Model``.
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task.
      inner_lr: learning rate of the inner Adam with ``beta1 = 0`` (``optax.adam(inner_lr, b1=0.0)``); or
        give ``inner_optimizer`` instead.
      steps: inner steps ``k`` on the support set (``adapt`` and ``task_loss`` accept a per-call override).
      inner_optimizer: any optax transformation for the inner loop.
      transductive: ``True`` runs the query points as one batch; ``False`` runs each query point with the
        support set only (see the module docstring). Only ``task_loss`` is affected; ``predict`` is
        the model's ``apply`` (transductive), and ``predict_non_transductive`` is the other one.
      metrics: extra ``name -> fn(predictions, targets)`` reported on the query set.
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner`` over plain model parameters.

    Example::

        >>> import jax.numpy as jnp, optax, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.learners.reptile(model, jmeta.losses.mse, inner_optimizer=optax.sgd(0.02), steps=32)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    default_steps = positive_int("steps", steps)
    optimizer = resolve_inner_optimizer(
        inner_lr, inner_optimizer, from_lr=lambda lr: optax.adam(lr, b1=0.0), described="Adam with beta1=0"
    )
    transductive = check_bool("transductive", transductive)
    metrics = dict(metrics or {})
    # Never differentiated, so nothing to rematerialise.
    run_inner_loop = gradient_inner_loop(model.apply, loss_fn, optimizer, first_order=True, remat=False)

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> PyTree:
        return run_inner_loop(params, state, x, y, steps_or_default(steps, default_steps))

    def task_loss(params: PyTree, state: PyTree, task: Task, steps: int | None = None) -> tuple[jax.Array, TaskOutput]:
        adapted = adapt(jax.lax.stop_gradient(params), state, task.support_x, task.support_y, steps)
        predict = model.apply if transductive else functools.partial(_with_support, model.apply, task.support_x)
        loss, output = query_pass(predict, loss_fn, metrics, adapted, state, task)
        differences = jax.tree.map(lambda p, a: jax.lax.stop_gradient(p - a), params, adapted)
        pairs = zip(jax.tree.leaves(params), jax.tree.leaves(differences), strict=True)
        surrogate = sum(jnp.vdot(p - jax.lax.stop_gradient(p), d) for p, d in pairs)
        return jax.lax.stop_gradient(loss) + surrogate, output

    return Learner(init=model.init, adapt=adapt, predict=model.apply, task_loss=task_loss, adapts_network=True)


def predict_non_transductive(
    apply: ApplyFn, params: PyTree, state: PyTree, support_x: jax.Array, query_x: jax.Array
) -> tuple[jax.Array, PyTree]:
    """Predicts each query point from a batch of the support set and that point alone.

    With BatchNorm on batch statistics, the prediction of a query point then depends on the support set
    and itself, never on the other query points. The model state is returned unchanged (the per-point
    passes do not update running statistics).

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 1)))
        >>> params, state = model.init(jax.random.key(0))
        >>> y, _ = predict_non_transductive(model.apply, params, state, jnp.ones((5, 1)), jnp.zeros((3, 1)))
        >>> y.shape
        (3, 1)
    """

    def one_point(point: jax.Array) -> jax.Array:
        predictions, _ = call_apply(apply, params, state, jnp.concatenate([support_x, point[None]]))
        return predictions[-1]

    return jax.vmap(one_point)(query_x), state


def _with_support(
    apply: ApplyFn, support_x: jax.Array, params: PyTree, state: PyTree, query_x: jax.Array
) -> tuple[jax.Array, PyTree]:
    return predict_non_transductive(apply, params, state, support_x, query_x)


def reptile_meta_optimizer(eps: float, steps: int, final: float = 0.0) -> optax.GradientTransformation:
    """Reptile's outer update as an optax optimiser: SGD with step size ``eps`` annealed linearly to ``final``
    over ``steps`` meta-steps (then held), for the surrogate gradient ``theta - theta'`` of ``reptile``.

    Example::

        >>> opt = reptile_meta_optimizer(1.0, steps=100, final=0.0)
    """
    eps = positive_float("eps", eps)
    steps = positive_int("steps", steps)
    final = non_negative_float("final", final)
    return optax.sgd(optax.linear_schedule(eps, final, steps))
