"""Models as pairs of pure functions, and adapters from Flax Linen and Flax NNX modules.

jmeta works with any model given as ``Model(init, apply)``:

* ``init(key) -> (params, state)``: differentiable parameters and non-differentiable model state
  (e.g. BatchNorm statistics; ``{}`` when there is none);
* ``apply(params, state, x) -> (y, new_state)``: a pure forward pass.

BatchNorm: the adapters pass whatever the module does. jmeta's own modules default to *batch
statistics* (``use_running_average=False``), as MAML's reference code does in the inner loop, the outer
loop and at test time; the running statistics are still updated and returned in ``new_state``.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from flax import linen
    >>> model = from_linen(linen.Dense(3), jnp.zeros((1, 2)))
    >>> params, state = model.init(jax.random.key(0))
    >>> y, state = model.apply(params, state, jnp.ones((4, 2)))
    >>> y.shape
    (4, 3)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import linen, nnx

from jmeta.batch_norm import linen_apply

PyTree = Any
InitFn = Callable[[jax.Array], tuple[PyTree, PyTree]]
ApplyFn = Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, PyTree]]


class Model(NamedTuple):
    """A model as two pure functions: ``init(key) -> (params, state)`` and
    ``apply(params, state, x) -> (y, new_state)``."""

    init: InitFn
    apply: ApplyFn


def check_model(model: Any, argument: str = "model") -> Model:
    """Checks that ``model`` is a ``Model`` whose functions have the right signatures (no tracing)."""
    if not isinstance(model, Model):
        raise TypeError(
            f"{argument} must be a jmeta.Model(init, apply); got {type(model).__name__}. Wrap a Flax module "
            "with jmeta.from_linen(module, example_x) or jmeta.from_nnx(module), or build "
            "jmeta.Model(init=..., apply=...) from your own functions."
        )
    _check_signature(f"{argument}.init", model.init, ("key",))
    _check_signature(f"{argument}.apply", model.apply, ("params", "state", "x"))
    return model


def _check_signature(name: str, fn: Any, arguments: tuple[str, ...]) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable; got {type(fn).__name__}.")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C functions have no signature: trust them
        return
    try:
        signature.bind(*arguments)
    except TypeError:
        wanted = f"{name.rsplit('.', 1)[-1]}({', '.join(arguments)})"
        raise TypeError(
            f"{name} must accept {len(arguments)} positional arguments, {wanted}; got a function with "
            f"signature {signature}."
        ) from None


def from_linen(module: linen.Module, example_x: jax.Array, **apply_kwargs: Any) -> Model:
    """Wraps a Flax Linen module: ``params`` is its ``"params"`` collection, ``state`` all the others.

    Collections other than ``"params"`` (such as ``"batch_stats"``) are passed as mutable, so their
    updates come back as ``new_state``. ``apply_kwargs`` are given to every call (e.g. ``train=True``).
    Its BatchNorm layers follow ``jmeta.batch_norm.batch_norm_mode`` (test-time protocols for ``evaluate``).

    Example::

        >>> import jax.numpy as jnp
        >>> from jmeta.models import MLP
        >>> model = from_linen(MLP((40, 40, 1)), jnp.zeros((1, 1)))
    """
    if not isinstance(module, linen.Module):
        raise TypeError(f"module must be a flax.linen.Module; got {type(module).__name__}.")

    def init(key: jax.Array) -> tuple[PyTree, PyTree]:
        variables = dict(module.init(key, example_x, **apply_kwargs))
        params = variables.pop("params", {})
        return params, variables

    def apply(params: PyTree, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        if not state:
            return linen_apply(module, {"params": params}, x, False, **apply_kwargs), state
        y, new_state = linen_apply(module, {"params": params, **state}, x, list(state), **apply_kwargs)
        return y, dict(new_state)

    return Model(init, apply)


def from_nnx(module: nnx.Module) -> Model:
    """Wraps a Flax NNX module: ``params`` are its ``nnx.Param`` variables, ``state`` everything else.

    ``init`` ignores its key and returns the module's current values: an NNX module is initialised when
    it is constructed (``nnx.Rngs``). The module is never mutated; ``apply`` works on a copy.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> model = from_nnx(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
        >>> params, state = model.init(jax.random.key(0))
        >>> model.apply(params, state, jnp.ones((4, 2)))[0].shape
        (4, 3)
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module; got {type(module).__name__}.")
    graphdef, params, state = nnx.split(module, nnx.Param, ...)

    def init(key: jax.Array) -> tuple[PyTree, PyTree]:
        del key
        return params, state

    def apply(params: PyTree, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        copy = nnx.merge(graphdef, params, state, copy=True)
        y = copy(x)
        _, _, new_state = nnx.split(copy, nnx.Param, ...)
        return y, new_state

    return Model(init, apply)
