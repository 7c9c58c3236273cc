"""Trust-region policy optimisation's step (Schulman et al. 2015, TRPO, sec. 6 and App. C), as pure functions:
conjugate gradient on Fisher-vector products, then a backtracking line search on the KL constraint and the
surrogate's improvement. MAML's outer step on reinforcement learning (Finn et al. 2017, sec. 5.3) is this step on
the post-adaptation surrogate.

Example::

    >>> import jax.numpy as jnp
    >>> a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    >>> [round(float(x), 4) for x in conjugate_gradient(lambda v: a @ v, jnp.array([1.0, 2.0]), iterations=2)]
    [0.0909, 0.6364]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

PyTree = Any


def conjugate_gradient(
    matvec: Callable[[jax.Array], jax.Array], b: jax.Array, iterations: int = 10, residual_tol: float = 1e-10
) -> jax.Array:
    """Approximately solves ``A x = b`` for a symmetric positive definite ``A`` given as ``matvec(v) = A v``, by
    ``iterations`` steps of conjugate gradient from ``x = 0`` (Hestenes and Stiefel 1952); stops early (the
    remaining steps change nothing) once the squared residual is below ``residual_tol``. ``b``: float ``[n]``."""

    def body(_: int, carry: tuple) -> tuple:
        x, r, p, rr = carry
        ap = matvec(p)
        active = rr > residual_tol
        alpha = jnp.where(active, rr / jnp.where(active, p @ ap, 1.0), 0.0)
        x, r = x + alpha * p, r - alpha * ap
        new_rr = r @ r
        beta = jnp.where(active, new_rr / jnp.where(active, rr, 1.0), 0.0)
        p = jnp.where(active, r + beta * p, p)
        return x, r, p, jnp.where(active, new_rr, rr)

    x0 = jnp.zeros_like(b)
    return jax.lax.fori_loop(0, iterations, body, (x0, b, b, b @ b))[0]


class TRPOInfo(NamedTuple):
    """What a TRPO step did: the surrogate's ``improvement``, the ``kl`` after the step, the step's ``fraction``
    of the full step (0: every candidate was rejected and the parameters were kept) and the ``backtracks``."""

    improvement: jax.Array
    kl: jax.Array
    fraction: jax.Array
    backtracks: jax.Array


def trpo_step(
    objective: Callable[[PyTree], jax.Array],
    kl: Callable[[PyTree], jax.Array],
    params: PyTree,
    max_kl: float = 0.01,
    cg_iterations: int = 10,
    cg_damping: float = 1e-5,
    backtrack_ratio: float = 0.5,
    max_backtracks: int = 15,
) -> tuple[PyTree, TRPOInfo]:
    """One TRPO step that maximises ``objective(params)`` subject to ``kl(params) <= max_kl``.

    ``kl`` is the mean KL divergence from the policy that collected the data, zero with a zero gradient at
    ``params``, so its Hessian there is the Fisher matrix F. The search direction ``s ~ F^-1 g`` (``g`` the
    objective's gradient) comes from ``cg_iterations`` steps of conjugate gradient on Fisher-vector products
    (``jax.grad(kl)`` linearised once, plus ``cg_damping * v``); the full step ``sqrt(2 max_kl / s^T F s) s`` is
    shrunk by ``backtrack_ratio`` until the KL is within ``max_kl`` and the objective improved, at most
    ``max_backtracks`` times, else ``params`` are returned unchanged (rllab's ``ConjugateGradientOptimizer``).

    Returns the new parameters and a :class:`TRPOInfo`. Traceable: everything runs under ``jax.jit``.
    """
    flat, unravel = ravel_pytree(params)

    def objective_flat(x: jax.Array) -> jax.Array:
        return objective(unravel(x))

    def kl_flat(x: jax.Array) -> jax.Array:
        return kl(unravel(x))

    value, gradient = jax.value_and_grad(objective_flat)(flat)
    _, kl_hessian = jax.linearize(jax.grad(kl_flat), flat)  # the forward pass once, for every product

    def fisher_vector(v: jax.Array) -> jax.Array:
        return kl_hessian(v) + cg_damping * v

    direction = conjugate_gradient(fisher_vector, gradient, cg_iterations)
    curvature = direction @ fisher_vector(direction)
    full_step = jnp.sqrt(2.0 * max_kl / jnp.maximum(curvature, 1e-12)) * direction

    def evaluate(k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        fraction = backtrack_ratio ** k.astype(flat.dtype)
        candidate = flat + fraction * full_step
        new_value, new_kl = objective_flat(candidate), kl_flat(candidate)
        accepted = (new_kl <= max_kl) & (new_value > value) & jnp.isfinite(new_value)
        return accepted, new_value - value, new_kl

    def keep_searching(carry: tuple) -> jax.Array:
        k, accepted, _, _ = carry
        return (~accepted) & (k < max_backtracks)

    def search(carry: tuple) -> tuple:
        k = carry[0] + 1
        return (k, *evaluate(k))

    k, accepted, improvement, new_kl = jax.lax.while_loop(keep_searching, search, (0, *evaluate(jnp.zeros((), int))))
    fraction = jnp.where(accepted, backtrack_ratio ** k.astype(flat.dtype), 0.0)
    info = TRPOInfo(jnp.where(accepted, improvement, 0.0), jnp.where(accepted, new_kl, 0.0), fraction, jnp.asarray(k))
    return unravel(flat + fraction * full_step), info
