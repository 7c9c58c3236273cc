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
import jax.numpy as jnp
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


def check_model_outputs(model: Any, example_x: jax.Array, outputs: int | None, argument: str) -> Model:
    """Checks, by tracing only (``jax.eval_shape``: nothing is computed or compiled), that ``model`` is a
    ``Model`` whose ``init`` and ``apply`` run on ``example_x`` (shape ``(points, ...)``) and, when
    ``outputs`` is an int, return predictions of shape ``(points, ..., outputs)``; ``outputs=None`` (an embedding,
    as for Prototypical Networks, Snell et al. 2017) allows any shape. ``argument`` names the model in the
    errors, with why it got ``outputs``. Raises TypeError for a model that is not a ``Model``, ValueError
    for one that fails on ``example_x`` or returns the wrong number of outputs. Returns ``model``.

    Example::

        >>> from flax import linen
        >>> check_model_outputs(from_linen(linen.Dense(4), jnp.zeros((1, 2))), jnp.zeros((1, 2)), 3, "my model")
        Traceback (most recent call last):
        ValueError: my model returns predictions of shape (1, 4) for an example input of shape (1, 2); they must have shape (1, 3) (or (1, ..., 3)).
    """  # noqa: E501
    check_model(model, argument)
    try:
        params, state = jax.eval_shape(model.init, jax.random.key(0))
        predictions, _ = jax.eval_shape(model.apply, params, state, example_x)
    except Exception as error:
        raise ValueError(
            f"{argument} fails on an example input of shape {tuple(example_x.shape)}: {type(error).__name__}: {error}"
        ) from error
    shape, points = tuple(predictions.shape), example_x.shape[0]
    if outputs is not None and (shape[:1] != (points,) or shape[-1:] != (outputs,)):
        raise ValueError(
            f"{argument} returns predictions of shape {shape} for an example input of shape "
            f"{tuple(example_x.shape)}; they must have shape ({points}, {outputs}) (or ({points}, ..., {outputs}))."
        )
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


COMPUTE_DTYPES = ("float32", "bfloat16")


def with_compute_dtype(model: Model, compute_dtype: str = "float32") -> Model:
    """A model whose forward pass (and so its backward pass) runs in ``compute_dtype``, for mixed precision.

    ``apply`` casts the floating-point parameters and input to ``compute_dtype``, runs the model, and casts
    its floating-point outputs and new state back to float32. Everything kept between passes stays float32:
    the parameters a learner adapts and meta-learns, optimiser states, losses and softmax (computed by the
    loss on the float32 outputs), and the model state as given (Flax's BatchNorm computes its batch
    statistics in float32 from bfloat16 activations and normalises in float32, then casts to the dtype of
    its input and parameters). Gradients come back float32 through the casts. ``init`` is unchanged.

    Args:
      model: a ``Model``.
      compute_dtype: ``"float32"`` (the model is returned as it is) or ``"bfloat16"``.

    Returns:
      A ``Model``.

    Raises:
      ValueError: ``compute_dtype`` is not one of ``COMPUTE_DTYPES``.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> from jmeta.models import MLP
        >>> model = with_compute_dtype(from_linen(MLP((8, 1)), jnp.zeros((1, 1))), "bfloat16")
        >>> params, state = model.init(jax.random.key(0))
        >>> y, _ = model.apply(params, state, jnp.ones((4, 1)))
        >>> params["Dense_0"]["kernel"].dtype, y.dtype
        (dtype('float32'), dtype('float32'))
    """
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(map(repr, COMPUTE_DTYPES))}; got {compute_dtype!r}.")
    if compute_dtype == "float32":
        return model
    dtype = jnp.dtype(compute_dtype)

    def apply(params: PyTree, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        out = model.apply(cast_floating(params, dtype), state, cast_floating(x, dtype))
        return cast_floating(out, jnp.float32)

    return Model(model.init, apply)


def cast_floating(tree: PyTree, dtype: Any) -> PyTree:
    """``tree`` with its floating-point array leaves cast to ``dtype`` (other leaves unchanged).

    Example::

        >>> import jax.numpy as jnp
        >>> cast = cast_floating({"w": jnp.ones(2), "n": jnp.arange(2)}, jnp.bfloat16)
        >>> cast["w"].dtype, cast["n"].dtype
        (dtype(bfloat16), dtype('int32'))
    """

    def cast(leaf: Any) -> Any:
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree.map(cast, tree)
