"""Test-time BatchNorm as a named choice, for models wrapped by ``jmeta.from_linen``.

``BATCH_NORM_MODES`` are the three protocols ``jmeta.evaluate(..., batch_norm=...)`` accepts:

* ``"transductive"``: every pass is normalised by the statistics of the batch it classifies (the model as
  built; jmeta's ``Conv4``/``ResNet12`` default, MAML's reference protocol). A query point's prediction
  depends on the other query points of its task.
* ``"support"``: every pass is normalised by the statistics of the task's *support set*, computed with the
  parameters of that pass (in the inner loop these are the support pass's own statistics, as in training;
  in the query pass, the adapted network's statistics on the support set). Each query point is then
  classified from the support set and itself alone, never from the other query points.
* ``"running"``: every pass, inner loop included, is normalised by the running averages kept in the model
  state (fully inductive). They fit a learner only if it was trained with those statistics: MAML-family
  learners train with batch statistics in every pass, and their running averages are of query passes
  through adapted networks, so ``evaluate`` warns.

The choice is made while tracing: ``with batch_norm_mode(mode, support_x): ...`` around a learner's
``task_loss`` makes every ``from_linen`` model's ``apply`` traced inside follow it. Flax Linen ``BatchNorm``
layers are recognised wherever they sit in the module tree (``flax.linen.intercept_methods``), and only
their normalisation is replaced (the features axis is ``axis``, scale and bias as configured). Other
models (``from_nnx``, your own ``Model``) follow only ``"transductive"``; ``evaluate`` refuses the others
for them.

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.Conv4(num_classes=5, hidden=8), jnp.zeros((1, 28, 28, 1)))
    >>> params, state = model.init(jax.random.key(0))
    >>> support, queries = jnp.ones((5, 28, 28, 1)), jax.random.uniform(jax.random.key(1), (10, 28, 28, 1))
    >>> with batch_norm_mode("support", support):
    ...     alone, _ = model.apply(params, state, queries[:1])
    ...     together, _ = model.apply(params, state, queries)
    >>> bool(jnp.allclose(alone[0], together[0], atol=1e-5))
    True
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen

BATCH_NORM_MODES = ("transductive", "support", "running")


class Mode(NamedTuple):
    """The current test-time BatchNorm protocol, with the support inputs of the task being traced."""

    name: str
    support_x: Any
    honoured: list[bool]


_MODE: contextvars.ContextVar[Mode | None] = contextvars.ContextVar("jmeta_batch_norm_mode", default=None)


def check_mode(mode: Any, argument: str = "batch_norm") -> str:
    """Returns ``mode`` if it is one of ``BATCH_NORM_MODES``, else raises a ``ValueError`` naming ``argument``.

    Example::

        >>> check_mode("inductive")
        Traceback (most recent call last):
        ValueError: batch_norm must be one of ('transductive', 'support', 'running'); got 'inductive'.
    """
    if mode not in BATCH_NORM_MODES:
        raise ValueError(f"{argument} must be one of {BATCH_NORM_MODES}; got {mode!r}.")
    return mode


@contextlib.contextmanager
def batch_norm_mode(mode: str, support_x: Any = None) -> Iterator[Mode]:
    """Within the block, ``from_linen`` models normalise as ``mode`` says (module docstring); ``support_x``
    (one task's support inputs) is needed for ``"support"``. Yields the ``Mode``; its ``honoured`` list
    becomes non-empty once a model has followed a non-transductive mode.

    Example::

        >>> with batch_norm_mode("running") as mode:
        ...     mode.name
        'running'
    """
    check_mode(mode, "mode")
    if mode == "support" and support_x is None:
        raise ValueError("batch_norm_mode('support', support_x) needs the task's support inputs.")
    current = Mode(mode, support_x, [])
    token = _MODE.set(current)
    try:
        yield current
    finally:
        _MODE.reset(token)


def current_mode() -> Mode | None:
    """The mode set by the innermost ``batch_norm_mode`` block, or ``None`` outside any.

    Example::

        >>> current_mode() is None
        True
    """
    return _MODE.get()


def _reduction_axes(module: linen.BatchNorm, x: jax.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
    features = module.axis if isinstance(module.axis, tuple) else (module.axis,)
    features = tuple(a % x.ndim for a in features)
    return tuple(a for a in range(x.ndim) if a not in features), features


def _statistics(module: linen.BatchNorm, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The batch mean and (biased) variance Flax's BatchNorm computes in training mode."""
    reduce, _ = _reduction_axes(module, x)
    x32 = jnp.asarray(x, jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(x32, reduce)
    return mean, jnp.maximum(0.0, jnp.mean(jnp.square(x32), reduce) - jnp.square(mean))


def _normalise(module: linen.BatchNorm, x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    reduce, features = _reduction_axes(module, x)
    shape = [x.shape[a] if a in features else 1 for a in range(x.ndim)]
    y = (x - mean.reshape(shape)) * jax.lax.rsqrt(var.reshape(shape) + module.epsilon)
    if module.use_scale:
        y = y * module.get_variable("params", "scale").reshape(shape)
    if module.use_bias:
        y = y + module.get_variable("params", "bias").reshape(shape)
    return y.astype(module.dtype or x.dtype)


def _interceptor(action: Callable[[linen.BatchNorm, jax.Array, Callable[[], Any]], Any]) -> Callable[..., Any]:
    def intercept(next_fun: Callable[..., Any], args: tuple, kwargs: dict, context: Any) -> Any:
        if isinstance(context.module, linen.BatchNorm) and context.method_name == "__call__" and args:
            return action(context.module, args[0], lambda: next_fun(*args, **kwargs))
        return next_fun(*args, **kwargs)

    return intercept


def linen_apply(module: linen.Module, variables: dict, x: jax.Array, mutable: Any, **kwargs: Any) -> Any:
    """``module.apply(variables, x, mutable=mutable, **kwargs)`` normalised as the current mode says.

    Returns what ``module.apply`` returns: ``y``, or ``(y, new_variables)`` when ``mutable`` is a non-empty
    list. Under ``"support"`` and ``"running"`` the statistics are read, not updated (``new_variables``
    holds them unchanged).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> from flax import linen
        >>> bn = linen.BatchNorm(use_running_average=False)
        >>> variables = bn.init(jax.random.key(0), jnp.ones((4, 2)))
        >>> with batch_norm_mode("running"):
        ...     y, _ = linen_apply(bn, variables, jnp.full((4, 2), 3.0), ["batch_stats"])
        >>> round(float(y[0, 0]), 3)  # running mean 0, variance 1: (3 - 0) / sqrt(1 + 1e-5)
        3.0
    """
    mode = current_mode()
    if mode is None or mode.name == "transductive":
        return module.apply(variables, x, mutable=mutable, **kwargs)
    mode.honoured.append(True)
    if mode.name == "running":

        def running(bn: linen.BatchNorm, inputs: jax.Array, call: Callable[[], Any]) -> jax.Array:
            return _normalise(bn, inputs, bn.get_variable("batch_stats", "mean"), bn.get_variable("batch_stats", "var"))

        with linen.intercept_methods(_interceptor(running)):
            y = module.apply(variables, x, mutable=False, **kwargs)
        return (y, {k: v for k, v in variables.items() if k != "params"}) if mutable else y
    if x is mode.support_x:  # the support set itself: its own statistics, as in training
        return module.apply(variables, x, mutable=mutable, **kwargs)
    recorded: list[tuple[jax.Array, jax.Array]] = []

    def record(bn: linen.BatchNorm, inputs: jax.Array, call: Callable[[], Any]) -> Any:
        recorded.append(_statistics(bn, inputs))
        return call()

    with linen.intercept_methods(_interceptor(record)):
        module.apply(variables, mode.support_x, mutable=mutable or False, **kwargs)
    replay = iter(recorded)

    def with_support_statistics(bn: linen.BatchNorm, inputs: jax.Array, call: Callable[[], Any]) -> jax.Array:
        mean, var = next(replay)
        return _normalise(bn, inputs, mean, var)

    with linen.intercept_methods(_interceptor(with_support_statistics)):
        y = module.apply(variables, x, mutable=False, **kwargs)
    return (y, {k: v for k, v in variables.items() if k != "params"}) if mutable else y
