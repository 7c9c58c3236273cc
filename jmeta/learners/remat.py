"""Inner loops as rolled scans, optionally rematerialised so that differentiating them keeps memory flat.

``scan_steps(step, carry, xs, length, remat=...)`` is ``jax.lax.scan`` over ``length`` inner steps, never
unrolled (compilation takes the same seconds at 5 or 500 steps). With ``remat=True`` the steps run as
nested scans, each level's body under ``jax.checkpoint`` (recursive checkpointing, Griewank 1992):

* ``segments(length)`` gives the scan lengths, outermost first, e.g. ``(4, 5, 5)`` for 100 steps: the
  shape with the fewest stored carries (their sum) for the least nesting; when their product exceeds
  ``length``, the extra steps are skipped by a ``lax.cond`` on the step index (not batched, so it stays a
  branch under ``vmap``);
* the forward pass keeps only the carry at the start of each outermost segment; the backward pass
  recomputes one segment at a time, level by level, down to single steps;
* so the backward pass holds about ``sum(segments)`` carries (parameter copies) instead of one or more
  per step: memory grows like ``log(length)``, and each step's forward pass runs once per level more.
  The step is traced once, whatever ``length``: the program does not grow with it.

Figures (XLA's compiled memory at 1 to 100 inner steps, with and without remat): docs/benchmarks.md.

Example::

    >>> import jax, jax.numpy as jnp
    >>> step = lambda w, x: (jnp.sin(w) * x, w.sum())
    >>> loss = lambda w, remat: scan_steps(step, w, jnp.arange(10.0), 10, remat=remat)[0].sum()
    >>> bool(jnp.allclose(jax.grad(loss)(jnp.ones(3), True), jax.grad(loss)(jnp.ones(3), False)))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Step = Callable[[Any, Any], tuple[Any, Any]]
MAX_LEVELS = 6


def scan_steps(step: Step, carry: Any, xs: Any, length: int, *, remat: bool) -> tuple[Any, Any]:
    """``jax.lax.scan(step, carry, xs, length=length)``, rolled; with ``remat``, checkpointed in nested
    segments so that the memory of its reverse-mode derivative grows like ``log(length)`` (module docstring).

    Args:
      step: ``step(carry, x) -> (carry, y)``, as for ``jax.lax.scan``.
      carry: the initial carry (a pytree).
      xs: per-step inputs with a leading axis of ``length`` (a pytree), or ``None``.
      length: the number of steps (> 0).
      remat: checkpoint nested segments (see the module docstring); ``False`` stores every step's
        residuals when differentiated.

    Returns:
      ``(final carry, ys)``, ``ys`` stacked over the steps as ``jax.lax.scan`` stacks them.

    Example::

        >>> import jax.numpy as jnp
        >>> scan_steps(lambda c, x: (c + x, c), jnp.zeros(()), jnp.arange(4.0), 4, remat=True)[1]
        Array([0., 0., 1., 3.], dtype=float32)
    """
    if not remat:
        return jax.lax.scan(step, carry, xs, length=length)
    shape = segments(length)
    total = math.prod(shape)
    index = jnp.arange(total)
    xs = jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros((total - length, *a.shape[1:]), a.dtype)]), xs)
    if total > length:
        item = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs)
        ys_shape = jax.eval_shape(step, carry, item)[1]

        def skip(carry: Any, _: Any) -> tuple[Any, Any]:
            return carry, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), ys_shape)

        def body(carry: Any, indexed: tuple[Any, jax.Array]) -> tuple[Any, Any]:
            x, i = indexed
            return jax.lax.cond(i < length, step, skip, carry, x)
    else:

        def body(carry: Any, indexed: tuple[Any, jax.Array]) -> tuple[Any, Any]:
            return step(carry, indexed[0])

    nested_xs = jax.tree.map(lambda a: a.reshape(*shape, *a.shape[1:]), (xs, index))
    carry, ys = _nested(body, carry, nested_xs, shape)
    return carry, jax.tree.map(lambda a: a.reshape(total, *a.shape[len(shape) :])[:length], ys)


def segments(length: int) -> tuple[int, ...]:
    """The scan lengths of ``length`` checkpointed steps, outermost first: among ``1`` to ``MAX_LEVELS``
    levels of ``ceil(length ** (1 / levels))`` steps each (the outermost only as many as needed), the
    shape with the fewest stored carries (the sum), then the fewest levels.

    Example::

        >>> [segments(k) for k in (1, 5, 25, 100, 1000)]
        [(1,), (5,), (3, 3, 3), (4, 5, 5), (4, 4, 4, 4, 4)]
    """
    shapes = []
    for levels in range(1, MAX_LEVELS + 1):
        inner = math.ceil(length ** (1 / levels) - 1e-9)
        outer = math.ceil(length / inner ** (levels - 1))
        shapes.append((outer, *[inner] * (levels - 1)))
    return min(shapes, key=lambda shape: (sum(shape), len(shape)))


def _nested(body: Step, carry: Any, xs: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    if len(shape) == 1:
        return jax.lax.scan(jax.checkpoint(body, prevent_cse=False), carry, xs, length=shape[0])

    def segment(carry: Any, segment_xs: Any) -> tuple[Any, Any]:
        return _nested(body, carry, segment_xs, shape[1:])

    return jax.lax.scan(jax.checkpoint(segment, prevent_cse=False), carry, xs, length=shape[0])
