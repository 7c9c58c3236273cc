"""Helpers shared by the learners beyond ``base``: choosing parameters by their path, splitting and joining
pytrees, the query pass, and argument checks.

A *selector* names a subset of a parameter pytree, either as a predicate over paths (each path a tuple of
names, e.g. ``("head", "kernel")`` for ``params["head"]["kernel"]``) or as a pytree of bools with the
structure of the parameters.

Example::

    >>> import jax.numpy as jnp
    >>> params = {"body": {"w": jnp.ones(2)}, "head": {"w": jnp.zeros(1)}}
    >>> mask = select(lambda path: path[0] == "head", params, "head")
    >>> mask
    {'body': {'w': False}, 'head': {'w': True}}
    >>> head, body = partition(params, mask)
    >>> head["body"]["w"] is None
    True
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jmeta.learners.base import LossFn, TaskOutput, call_apply, query_metrics
from jmeta.nn import ApplyFn, Model, PyTree
from jmeta.tasks.task import Task

Path = tuple[str | int, ...]
PathPredicate = Callable[[Path], bool]


def path_names(path: tuple[Any, ...]) -> Path:
    """A JAX key path as a tuple of plain names: dict keys, attribute names and sequence indices.

    Example::

        >>> import jax
        >>> [path_names(p) for p, _ in jax.tree_util.tree_flatten_with_path({"a": [1, 2]})[0]]
        [('a', 0), ('a', 1)]
    """
    names: list[str | int] = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            names.append(entry.key)
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            names.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey | jax.tree_util.FlattenedIndexKey):
            names.append(entry.idx)
        else:
            names.append(str(entry))
    return tuple(names)


def leaf_paths(tree: PyTree) -> list[Path]:
    """The path of every leaf of ``tree``, in flattening order.

    Example::

        >>> leaf_paths({"a": {"w": 1.0}, "b": 2.0})
        [('a', 'w'), ('b',)]
    """
    return [path_names(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def select(selector: PathPredicate | PyTree, tree: PyTree, argument: str) -> PyTree:
    """Resolves ``selector`` (a path predicate or a bool pytree) against ``tree`` into a pytree of Python bools.

    Raises, naming ``argument``, when a mask has another structure than ``tree`` or non-bool leaves.

    Example::

        >>> select(lambda path: path == ("b",), {"a": 1.0, "b": 2.0}, "mask")
        {'a': False, 'b': True}
    """
    if callable(selector):
        chosen = []
        for path in leaf_paths(tree):
            value = selector(path)
            if not isinstance(value, bool | np.bool_):
                raise TypeError(f"{argument} must return a bool for each parameter path; got {value!r} for {path}.")
            chosen.append(bool(value))
        return jax.tree.unflatten(jax.tree.structure(tree), chosen)
    if jax.tree.structure(selector) != jax.tree.structure(tree):
        raise ValueError(
            f"{argument} must be a predicate over parameter paths (e.g. lambda path: path[0] == 'head') or a "
            f"pytree of bools with the parameters' structure {jax.tree.structure(tree)}; got a pytree of "
            f"structure {jax.tree.structure(selector)}."
        )
    leaves = jax.tree.leaves(selector)
    if not all(isinstance(leaf, bool | np.bool_) for leaf in leaves):
        raise TypeError(f"{argument} must have Python bool leaves; got {[type(leaf).__name__ for leaf in leaves]}.")
    return jax.tree.map(bool, selector)


def count_selected(mask: PyTree) -> int:
    """How many leaves a bool mask selects.

    Example::

        >>> count_selected({"a": True, "b": False})
        1
    """
    return sum(jax.tree.leaves(mask))


def partition(tree: PyTree, mask: PyTree) -> tuple[PyTree, PyTree]:
    """Splits ``tree`` into ``(selected, rest)``, two pytrees of its structure with ``None`` in the other's places.

    ``None`` is an empty pytree, so either part can be differentiated or given to an optax optimiser.

    Example::

        >>> partition({"a": 1.0, "b": 2.0}, {"a": True, "b": False})
        ({'a': 1.0, 'b': None}, {'a': None, 'b': 2.0})
    """
    selected = jax.tree.map(lambda keep, leaf: leaf if keep else None, mask, tree)
    rest = jax.tree.map(lambda keep, leaf: None if keep else leaf, mask, tree)
    return selected, rest


def combine(first: PyTree, second: PyTree) -> PyTree:
    """Joins two parts made by ``partition``: the leaves of ``first``, and those of ``second`` where ``first``
    has ``None``.

    Example::

        >>> combine({"a": 1.0, "b": None}, {"a": None, "b": 2.0})
        {'a': 1.0, 'b': 2.0}
    """
    return jax.tree.map(lambda a, b: b if a is None else a, first, second, is_leaf=lambda leaf: leaf is None)


def abstract_init(model: Model) -> tuple[PyTree, PyTree]:
    """The shapes and dtypes of ``model.init``'s ``(params, state)``, found without computing them.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> params, _ = abstract_init(jmeta.from_linen(jmeta.models.MLP((3,)), jnp.zeros((1, 2))))
        >>> params["Dense_0"]["kernel"].shape
        (2, 3)
    """
    return jax.eval_shape(model.init, jax.random.key(0))


def query_pass(
    predict: ApplyFn,
    loss_fn: LossFn,
    metrics: Mapping[str, LossFn],
    task_params: PyTree,
    model_state: PyTree,
    task: Task,
) -> tuple[jax.Array, TaskOutput]:
    """The query loss of adapted parameters, with the metrics and the model state after the query pass.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> task = jmeta.Task(jnp.ones((2, 1)), jnp.ones((2, 1)), jnp.ones((3, 1)), jnp.zeros((3, 1)))
        >>> loss, out = query_pass(lambda p, s, x: (x * p, s), jmeta.losses.mse, {}, 2.0, {}, task)
        >>> float(loss)
        4.0
    """
    predictions, new_state = call_apply(predict, task_params, model_state, task.query_x)
    loss, values = query_metrics(loss_fn, metrics, predictions, task.query_y)
    return loss, TaskOutput(values, new_state)


def check_bool(name: str, value: Any) -> bool:
    """Returns ``value`` if it is a bool, else raises naming ``name``.

    Example::

        >>> check_bool("first_order", 1)
        Traceback (most recent call last):
        TypeError: first_order must be a bool (True or False); got 1.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False); got {value!r}.")
    return value


def non_negative_float(name: str, value: Any) -> float:
    """Returns ``value`` as a float, or raises naming ``name`` if it is not a finite number >= 0.

    Example::

        >>> non_negative_float("final", -1.0)
        Traceback (most recent call last):
        ValueError: final must be a finite number >= 0; got -1.0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)
