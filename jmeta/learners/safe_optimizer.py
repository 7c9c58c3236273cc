"""Inner optimisers whose updates can be differentiated where a gradient entry is exactly zero.

Adam, RMSProp, Adagrad, Yogi, AdaBelief, clipping by global norm and their kin divide by a square root of
accumulated squared gradients. Where a support-gradient entry is exactly zero (a dead ReLU unit, a
parameter that BatchNorm makes irrelevant) that accumulator is zero, and ``d sqrt(v) / dv`` at ``v = 0``
is infinite: the meta-gradient, which differentiates through the update, becomes ``inf * 0 = NaN``.

``safe_derivatives(optimizer)`` returns the same optimiser with the same values, whose roots and powers
(``sqrt``, ``rsqrt``, ``cbrt``, ``pow``, e.g. Adafactor's ``v ** -0.5``) have derivative 0 wherever JAX's
is infinite or NaN (at 0, or where a tiny accumulator such as ``1e-30`` overflows ``x ** -1.5``). It works on
any optax transformation without knowing its code: the update is traced to a jaxpr, and the jaxpr is
evaluated with those primitives replaced (inside nested ``jit`` calls, loops and branches too). Where the
accumulator is 0, ``sqrt(v)`` has a kink (``sqrt((1 - b2) g^2)`` is ``|g|`` up to a factor), so derivative 0
is the symmetric (central finite-difference) one, and it is multiplied by a first moment that is 0 there
too. Elsewhere the derivatives are JAX's own. Checked over optax's Adam, AdamW, NAdam, RAdam, AMSGrad,
Adamax, AdaBelief, Yogi, RMSProp (also centred and ``eps_in_sqrt=False``), Adagrad, Adadelta, LAMB,
NovoGrad, SM3, Adafactor, Adan, Lion, LARS, Fromage, Rprop and clipping by global norm: finite meta-gradients
with dead ReLU units.

Every learner that takes an ``inner_optimizer`` applies it, so ``jmeta.maml(..., inner_optimizer=
optax.adam(1e-2))`` gives finite meta-gradients; apply it yourself when you differentiate through an
optax update in your own code.

Example::

    >>> import jax, jax.numpy as jnp, optax
    >>> opt = safe_derivatives(optax.adam(0.1))
    >>> def after_one_step(w):
    ...     grads = jnp.maximum(w, 0.0)                    # zero where w <= 0, like a dead ReLU unit
    ...     updates, _ = opt.update(grads, opt.init(w), w)
    ...     return jnp.sum(optax.apply_updates(w, updates))
    >>> jax.grad(after_one_step)(jnp.array([-1.0, 2.0]))
    Array([1., 1.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend as jex
import jax.numpy as jnp
import optax

from jmeta.nn import PyTree


def _finite_derivative(derivative: Callable[[jax.Array], jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``derivative(x)`` where it is finite, else 0, and the mask of where it is finite; differentiable again
    (the derivative is evaluated at a harmless point where it is not finite)."""
    finite = jnp.isfinite(derivative(jax.lax.stop_gradient(x)))
    value = derivative(jnp.where(finite, x, jnp.ones_like(x)))
    return jnp.where(finite, value, jnp.zeros_like(value)), finite


def _safe_unary(primitive: Callable[[jax.Array], jax.Array], derivative: Callable[[jax.Array], jax.Array]) -> Any:
    """``primitive`` with JAX's derivative ``derivative`` replaced by 0 wherever that is infinite or NaN."""

    @jax.custom_jvp
    def safe(x: jax.Array) -> jax.Array:
        return primitive(x)

    @safe.defjvp
    def safe_jvp(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
        (x,), (t,) = primals, tangents
        slope, finite = _finite_derivative(derivative, x)
        return primitive(x), jnp.where(finite, slope * t, jnp.zeros_like(slope))

    return safe


safe_sqrt = _safe_unary(jax.lax.sqrt, lambda x: 0.5 / jax.lax.sqrt(x))
safe_sqrt.__doc__ = """``sqrt(x)`` whose derivative is 0 where JAX's is not finite (``x <= 0``).

    Example::

        >>> import jax
        >>> float(jax.grad(safe_sqrt)(0.0)), float(jax.grad(safe_sqrt)(4.0))
        (0.0, 0.25)
    """
safe_rsqrt = _safe_unary(jax.lax.rsqrt, lambda x: -0.5 * jax.lax.rsqrt(x) / x)
safe_rsqrt.__doc__ = """``1 / sqrt(x)`` whose derivative is 0 where JAX's is not finite (``x <= 0``, or ``x`` so
    small that ``x ** -1.5`` overflows, as for ``1e-30`` in float32).

    Example::

        >>> import jax
        >>> float(jax.grad(safe_rsqrt)(1e-30)), float(jax.grad(safe_rsqrt)(4.0))
        (0.0, -0.0625)
    """
safe_cbrt = _safe_unary(jax.lax.cbrt, lambda x: 1.0 / (3.0 * jnp.square(jax.lax.cbrt(x))))
safe_cbrt.__doc__ = """The cube root whose derivative is 0 where JAX's is not finite (``x = 0``).

    Example::

        >>> import jax
        >>> float(jax.grad(safe_cbrt)(0.0)), round(float(jax.grad(safe_cbrt)(8.0)), 6)
        (0.0, 0.083333)
    """


@jax.custom_jvp
def safe_pow(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x ** y`` (``lax.pow``) whose derivatives are 0 where JAX's are not finite (e.g. ``0 ** -0.5``).

    Example::

        >>> import jax
        >>> float(jax.grad(safe_pow)(0.0, 0.5)), float(jax.grad(safe_pow)(4.0, -0.5))
        (0.0, -0.0625)
    """
    return jax.lax.pow(x, y)


@safe_pow.defjvp
def _safe_pow_jvp(primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]) -> Any:
    (x, y), (tx, ty) = primals, tangents
    result = jax.lax.pow(x, y)
    if jnp.issubdtype(jnp.result_type(y), jnp.integer):
        slope, finite = _finite_derivative(lambda b: y * jax.lax.pow(b, y - 1), x)
        return result, jnp.where(finite, slope * tx, jnp.zeros_like(slope))
    y_slope, y_finite = _finite_derivative(lambda e: jnp.log(x) * jax.lax.pow(x, e), y)
    x_slope, x_finite = _finite_derivative(lambda b: y * jax.lax.pow(b, y - 1), x)
    tangent = jnp.where(x_finite, x_slope * tx, 0.0) + jnp.where(y_finite, y_slope * ty, 0.0)
    return result, tangent.astype(result.dtype)


SAFE_PRIMITIVES: dict[Any, Callable[..., jax.Array]] = {
    jax.lax.sqrt_p: safe_sqrt,
    jax.lax.rsqrt_p: safe_rsqrt,
    jax.lax.cbrt_p: safe_cbrt,
    jax.lax.pow_p: safe_pow,
}


def _contains_root(jaxpr: jex.core.Jaxpr) -> bool:
    """Whether ``jaxpr`` or any jaxpr nested in it (jit, scan, cond, ...) has a square or cube root."""
    for eqn in jaxpr.eqns:
        if eqn.primitive in SAFE_PRIMITIVES:
            return True
        if any(_contains_root(sub) for sub in jex.core.jaxprs_in_params(eqn.params)):
            return True
    return False


def _safe_closed(closed: jex.core.ClosedJaxpr) -> jex.core.ClosedJaxpr:
    """The same function as ``closed`` with its roots replaced, as a new closed jaxpr (for loops and branches)."""
    if not _contains_root(closed.jaxpr):
        return closed
    avals = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in closed.in_avals]
    return jax.make_jaxpr(lambda *args: eval_safely(closed.jaxpr, closed.consts, args))(*avals)


def _safe_param(value: Any) -> Any:
    if isinstance(value, jex.core.ClosedJaxpr):
        return _safe_closed(value)
    if isinstance(value, tuple) and value and all(isinstance(v, jex.core.ClosedJaxpr) for v in value):
        return tuple(_safe_closed(v) for v in value)
    return value


def eval_safely(jaxpr: jex.core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    """Evaluates ``jaxpr`` like ``jax.core.eval_jaxpr``, with ``sqrt``, ``rsqrt`` and ``cbrt`` replaced by
    ``safe_sqrt``, ``safe_rsqrt`` and ``safe_cbrt``: inlined ``jit`` calls are evaluated the same way, and
    the bodies of loops and branches are rewritten. Other equations are bound as they are.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(jnp.sqrt)(0.0)
        >>> float(jax.grad(lambda x: eval_safely(closed.jaxpr, closed.consts, [x])[0])(0.0))
        0.0
    """
    env: dict[Any, Any] = {}

    def read(atom: Any) -> Any:
        return atom.val if isinstance(atom, jex.core.Literal) else env[atom]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        inputs = [read(atom) for atom in eqn.invars]
        if eqn.primitive in SAFE_PRIMITIVES:
            outputs = [SAFE_PRIMITIVES[eqn.primitive](*inputs)]
        elif eqn.primitive.name in ("jit", "pjit") and _contains_root(eqn.params["jaxpr"].jaxpr):
            inner = eqn.params["jaxpr"]
            outputs = eval_safely(inner.jaxpr, inner.consts, inputs)
        else:
            params = {name: _safe_param(value) for name, value in eqn.params.items()}
            with eqn.ctx.manager:
                result = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(params))
            outputs = result if eqn.primitive.multiple_results else [result]
        for var, value in zip(eqn.outvars, outputs, strict=True):
            if not isinstance(var, jex.core.DropVar):
                env[var] = value
    return [read(atom) for atom in jaxpr.outvars]


def safe_derivatives(optimizer: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``optimizer`` with the same values, whose roots and powers have derivative 0 where JAX's is not finite
    (module docstring).

    Args:
      optimizer: any optax transformation.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with ``optimizer``'s ``init`` and a rewritten ``update``.
      Applying it twice is harmless.

    Raises:
      TypeError: ``optimizer`` is not an ``optax.GradientTransformation``.

    Example::

        >>> import optax
        >>> opt = safe_derivatives(optax.rmsprop(1e-3, eps_in_sqrt=False))
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}.")
    if getattr(optimizer.update, "_jmeta_safe", False):
        return optimizer

    def update(updates: PyTree, state: PyTree, params: PyTree = None, **extra_args: Any) -> tuple[PyTree, PyTree]:
        leaves, treedef = jax.tree.flatten((updates, state, params, extra_args))

        def flat_update(*leaves: Any) -> tuple[PyTree, PyTree]:
            u, s, p, extra = jax.tree.unflatten(treedef, leaves)
            if isinstance(optimizer, optax.GradientTransformationExtraArgs):
                return optimizer.update(u, s, p, **extra)
            return optimizer.update(u, s, p)

        closed, out_shape = jax.make_jaxpr(flat_update, return_shape=True)(*leaves)
        outputs = eval_safely(closed.jaxpr, closed.consts, leaves)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outputs)

    update._jmeta_safe = True  # type: ignore[attr-defined]
    return optax.GradientTransformationExtraArgs(optimizer.init, update)
