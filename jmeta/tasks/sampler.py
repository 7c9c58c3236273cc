"""Task samplers from plain functions: :func:`sampler` turns ``fn(key, num_tasks, **settings) -> Task`` into a
pytree callable that jitted code (``jmeta.meta_trainer``, ``jmeta.evaluate``, ``jmeta train``) takes as an
argument, and :func:`check_sampler` says what to do when something else is passed.

Why a pytree: jmeta passes samplers into compiled programs as arguments, so that a data set on the device is
not baked into the program as a constant. A plain Python function is not data JAX can pass; wrapped with
:func:`sampler`, its array settings (e.g. a data set's images) become the pytree's leaves and its other
settings (sizes, flags: hashable values) stay static, so changing them compiles a new program.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from jmeta.tasks import Task, sampler
    >>> @sampler(shots=5, queries=10)
    ... def lines(key, num_tasks, *, shots, queries):
    ...     slope = jax.random.normal(key, (num_tasks, 1, 1))
    ...     x = jax.random.uniform(jax.random.fold_in(key, 1), (num_tasks, shots + queries, 1))
    ...     y = slope * x
    ...     return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
    >>> lines(jax.random.key(0), 3).query_x.shape
    (3, 10, 1)
    >>> jax.jit(lambda s, key: s(key, 2).support_y.sum())(lines, jax.random.key(0)).shape
    ()
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable
from typing import Any

import jax
import numpy as np

from jmeta.tasks.task import Task


@jax.tree_util.register_pytree_node_class
class FunctionSampler:
    """``sampler(key, num_tasks) -> Task`` calling ``fn(key, num_tasks, **arrays, **static)``; the
    ``arrays`` are its pytree leaves, ``fn`` and the ``static`` settings its (hashable) structure."""

    def __init__(self, fn: Callable[..., Task], arrays: dict[str, Any], static: dict[str, Hashable]):
        self.fn, self.arrays, self.static = fn, arrays, static

    def __call__(self, key: jax.Array, num_tasks: int) -> Task:
        return self.fn(key, num_tasks, **self.arrays, **self.static)

    def tree_flatten(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        names = tuple(sorted(self.arrays))
        return tuple(self.arrays[name] for name in names), (self.fn, names, tuple(sorted(self.static.items())))

    @classmethod
    def tree_unflatten(cls, aux: tuple[Any, ...], leaves: tuple[Any, ...]) -> FunctionSampler:
        fn, names, static = aux
        return cls(fn, dict(zip(names, leaves, strict=True)), dict(static))

    def __repr__(self) -> str:
        settings = [
            *(f"{k}=<array {np.shape(v)}>" for k, v in self.arrays.items()),
            *(f"{k}={v!r}" for k, v in self.static.items()),
        ]
        return f"sampler({getattr(self.fn, '__name__', self.fn)!r}, {', '.join(settings)})"


def sampler(fn: Callable[..., Task] | None = None, **settings: Any) -> Any:
    """Makes ``fn(key, num_tasks, **settings) -> Task`` a task sampler ``sampler(key, num_tasks) -> Task``
    that jitted code can take as an argument. Settings that are arrays (jax or NumPy) are passed as data;
    the others must be hashable (ints, floats, strings, tuples) and are fixed when a program is compiled.

    Usable as ``sampler(fn, **settings)`` or as a decorator ``@sampler(**settings)``. ``fn`` must return a
    :class:`jmeta.Task` whose fields have a leading axis of ``num_tasks``.

    Raises TypeError if ``fn`` is not callable or a setting is neither an array nor hashable.

    Example::

        >>> import jax
        >>> from jmeta.tasks import sinusoid_tasks
        >>> draw = sampler(sinusoid_tasks, shots=5, queries=10)
        >>> draw(jax.random.key(0), 4).support_x.shape
        (4, 5, 1)
    """
    if fn is None:
        return lambda function: sampler(function, **settings)
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(key, num_tasks, **settings) -> Task; got {type(fn).__name__}.")
    arrays, static = {}, {}
    for name, value in settings.items():
        if isinstance(value, (jax.Array, np.ndarray)):
            arrays[name] = value
        elif isinstance(value, Hashable):
            static[name] = value
        else:
            raise TypeError(
                f"setting {name!r} of sampler {getattr(fn, '__name__', fn)!r} must be an array (passed as data) or "
                f"hashable (fixed at compile time); got {type(value).__name__}. Pass lists as tuples or arrays."
            )
    return FunctionSampler(fn, arrays, static)


def check_sampler(value: Any, argument: str) -> None:
    """Raises TypeError naming ``argument`` and the fix if ``value`` is not a task sampler jitted code can take:
    callable as ``value(key, num_tasks)``, and a pytree whose leaves are arrays or numbers (e.g.
    :class:`jmeta.tasks.SinusoidSampler`, an episode sampler, or a function wrapped by :func:`sampler`).

    Example::

        >>> def plain(key, num_tasks):
        ...     return None
        >>> check_sampler(plain, "sample_tasks")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        TypeError: sample_tasks must be a task sampler ...; got the plain function 'plain'. Wrap it: ...
    """
    if not callable(value):
        raise TypeError(
            f"{argument} must be a task sampler, callable as {argument}(key, num_tasks); got {type(value).__name__}."
        )
    bad = [
        leaf
        for leaf in jax.tree.leaves(value)
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number))
    ]
    if bad:
        name = getattr(value, "__name__", type(value).__name__)
        what = (
            f"the plain function {name!r}"
            if bad == [value]
            else f"{type(value).__name__} holding {type(bad[0]).__name__}"
        )
        raise TypeError(
            f"{argument} must be a task sampler that compiled code can take as an argument; got {what}. Wrap it: "
            f"jmeta.tasks.sampler({name}, **settings) (its array settings become data, the others static; see "
            "jmeta.tasks.sampler)."
        )
