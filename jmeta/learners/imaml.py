"""iMAML, implicit MAML (Rajeswaran, Finn, Kakade & Levine, "Meta-Learning with Implicit Gradients",
NeurIPS 2019).

The inner loop runs ``steps`` optimiser steps, from ``phi = theta``, on the proximally regularised support
loss ``L_S(phi) + (lam / 2) ||phi - theta||^2`` (the proximal gradient ``lam (phi - theta)`` is added to
the support gradient before the inner optimiser, SGD by default). If ``phi`` minimises it, then
``d phi / d theta = (I + H / lam)^{-1}`` with ``H`` the Hessian of ``L_S`` at ``phi``, so the meta-gradient
of the query loss is ``(I + H / lam)^{-1} grad_phi L_Q(phi)``: it is solved by ``cg_steps`` iterations of
conjugate gradients on Hessian-vector products (``jax.scipy.sparse.linalg.cg``), and depends on ``phi``
alone, not on the path to it.

The adaptation is a ``jax.custom_vjp`` function: ``jax.grad(task_loss)`` yields the implicit
meta-gradient, the inner loop is never differentiated through, and the memory of the backward pass does
not grow with ``steps``. The implicit gradient is exact only at a minimiser, so give the inner loop enough
steps (or a large enough ``lam``) to converge. Only the meta-parameters receive gradients through the
adaptation: the support data and the model state get zero cotangents. With ``steps=0`` the adapted
parameters are the meta-parameters and the meta-gradient is the query gradient.

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.learners.imaml(model, jmeta.losses.mse, inner_lr=0.01, steps=10, lam=1.0, cg_steps=5)
    >>> params, state = learner.init(jax.random.key(0))
    >>> task = jax.tree.map(lambda a: a[0], jmeta.tasks.sinusoid_tasks(jax.random.key(1), 1, shots=10, queries=10))
    >>> meta_grad = jax.grad(lambda p: learner.task_loss(p, state, task)[0])(params)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
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
from jmeta.learners.common import query_pass
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int

CG_TOLERANCE = 1e-10  # relative residual at which conjugate gradients stops before cg_steps iterations


def proximal(anchor: PyTree, lam: float) -> optax.GradientTransformation:
    """Adds the gradient ``lam * (params - anchor)`` of the proximal term ``(lam / 2) ||params - anchor||^2``.

    Example::

        >>> import jax.numpy as jnp
        >>> opt = proximal(jnp.zeros(2), 0.5)
        >>> opt.update(jnp.ones(2), opt.init(None), jnp.array([2.0, 4.0]))[0]
        Array([2., 3.], dtype=float32)
    """
    return optax.stateless(lambda grads, params: jax.tree.map(lambda g, p, a: g + lam * (p - a), grads, params, anchor))


def imaml(
    model: Model,
    loss_fn: LossFn,
    inner_lr: float | None = None,
    steps: int = 10,
    *,
    lam: float = 1.0,
    cg_steps: int = 5,
    inner_optimizer: optax.GradientTransformation | None = None,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Implicit MAML: a proximally regularised inner loop and the implicit meta-gradient by conjugate gradients.

    Args:
      model: a ``jmeta.Model``.
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task, used in both loops.
      inner_lr: learning rate of plain SGD in the inner loop; or give ``inner_optimizer`` instead.
      steps: inner steps (``adapt`` and ``task_loss`` accept a per-call override).
      lam: the proximal regularisation strength ``lambda`` (> 0).
      cg_steps: conjugate-gradient iterations for the implicit gradient (at most; it stops earlier once
        the relative residual is below ``CG_TOLERANCE``).
      inner_optimizer: any optax transformation for the inner loop; it receives the support gradient
        plus the proximal gradient.
      metrics: extra ``name -> fn(predictions, targets)`` reported on the query set.
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner`` over plain model parameters.

    Example::

        >>> import jax.numpy as jnp, optax, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.learners.imaml(model, jmeta.losses.mse, inner_optimizer=optax.adam(1e-2), lam=2.0)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    default_steps = positive_int("steps", steps)
    optimizer = resolve_inner_optimizer(inner_lr, inner_optimizer)
    lam = positive_float("lam", lam)
    cg_steps = positive_int("cg_steps", cg_steps)
    metrics = dict(metrics or {})

    def support_loss(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        predictions, _ = call_apply(model.apply, params, state, x)
        return loss_fn(predictions, y)

    def inner_loop(theta: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int) -> PyTree:
        regularised = optax.chain(proximal(theta, lam), optimizer)
        # Never differentiated (the custom VJP below replaces it), so nothing to rematerialise.
        run = gradient_inner_loop(model.apply, loss_fn, regularised, first_order=True, remat=False)
        return run(theta, state, x, y, steps)

    def implicit_adaptation(steps: int) -> Any:
        @jax.custom_vjp
        def adapted(theta: PyTree, state: PyTree, x: jax.Array, y: jax.Array) -> PyTree:
            return inner_loop(theta, state, x, y, steps)

        def forward(theta: PyTree, state: PyTree, x: jax.Array, y: jax.Array) -> tuple[PyTree, tuple]:
            phi = inner_loop(theta, state, x, y, steps)
            return phi, (phi, state, x, y)

        def backward(residuals: tuple, query_grad: PyTree) -> tuple[PyTree, PyTree, Any, Any]:
            phi, state, x, y = residuals

            def hessian_vector_product(v: PyTree) -> PyTree:
                return jax.jvp(lambda p: jax.grad(support_loss)(p, state, x, y), (phi,), (v,))[1]

            def regularised_hessian(v: PyTree) -> PyTree:
                return jax.tree.map(lambda a, hv: a + hv / lam, v, hessian_vector_product(v))

            meta_grad, _ = jax.scipy.sparse.linalg.cg(
                regularised_hessian, query_grad, maxiter=cg_steps, tol=CG_TOLERANCE
            )
            return meta_grad, zero_cotangent(state), zero_cotangent(x), zero_cotangent(y)

        adapted.defvjp(forward, backward)
        return adapted

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> PyTree:
        steps = steps_or_default(steps, default_steps)
        return params if steps == 0 else implicit_adaptation(steps)(params, state, x, y)

    def task_loss(params: PyTree, state: PyTree, task: Task, steps: int | None = None) -> tuple[jax.Array, TaskOutput]:
        adapted = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(model.apply, loss_fn, metrics, adapted, state, task)

    return Learner(init=model.init, adapt=adapt, predict=model.apply, task_loss=task_loss, adapts_network=True)


def zero_cotangent(tree: PyTree) -> PyTree:
    """A zero cotangent for every leaf of ``tree`` (``float0`` zeros for integer and boolean leaves).

    Example::

        >>> import jax.numpy as jnp
        >>> zero_cotangent({"x": jnp.ones(2), "labels": jnp.arange(2)})["labels"].dtype
        dtype([('float0', 'V')])
    """

    def zero(leaf: Any) -> Any:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            return jnp.zeros_like(leaf)
        return np.zeros(np.shape(leaf), jax.dtypes.float0)

    return jax.tree.map(zero, tree)
