"""Helpers shared by the learners beyond ``base``: choosing parameters by their path, splitting and joining
pytrees, the inner loop over a chosen subset of the parameters (ANIL, BOIL), the query pass, and argument checks.

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
import optax

from jmeta.learners.base import (
    Learner,
    LossFn,
    TaskOutput,
    call_apply,
    gradient_inner_loop,
    query_metrics,
    resolve_inner_optimizer,
    steps_or_default,
)
from jmeta.nn import ApplyFn, Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_int

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


def subset_learner(
    model: Model,
    loss_fn: LossFn,
    adapted: PathPredicate | PyTree,
    argument: str,
    *,
    invert: bool,
    inner_lr: float | None,
    steps: int,
    inner_optimizer: optax.GradientTransformation | None,
    first_order: bool,
    remat: bool,
    metrics: Mapping[str, LossFn] | None,
    compute_dtype: str,
) -> Learner:
    """A MAML whose inner loop adapts only a subset of the parameters; the others stay at their
    meta-learned values during adaptation and are learned by the outer loop alone. ANIL (the head adapts)
    and BOIL (the body adapts) are this with ``adapted`` the head, ``invert`` False and True.

    ``adapted`` (given to the caller as ``argument``, named in errors) is a path predicate or a bool pytree
    (:func:`select`); with ``invert`` the adapted subset is its complement. Only the adapted subset's
    support gradient is formed. Raises ValueError when the adapted subset is empty, and the errors of
    :func:`select`, ``resolve_inner_optimizer`` and the argument checks. The other arguments are as
    ``jmeta.learners.anil``'s.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((4, 1)), jnp.zeros((1, 1)))
        >>> learner = subset_learner(
        ...     model, jmeta.losses.mse, lambda path: path[0] == "Dense_1", "head", invert=True, inner_lr=0.1,
        ...     steps=1, inner_optimizer=None, first_order=False, remat=False, metrics=None, compute_dtype="float32")
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    default_steps = positive_int("steps", steps)
    optimizer = resolve_inner_optimizer(inner_lr, inner_optimizer)
    first_order, remat = check_bool("first_order", first_order), check_bool("remat", remat)
    metrics = dict(metrics or {})
    params_shape, _ = abstract_init(model)
    mask = select(adapted, params_shape, argument)
    if count_selected(mask) == 0:
        raise ValueError(
            f"{argument} must select at least one parameter array; it selected none of {leaf_paths(params_shape)}."
        )
    if invert:
        mask = jax.tree.map(lambda chosen: not chosen, mask)
        if count_selected(mask) == 0:
            raise ValueError(
                f"{argument} selected every parameter array ({leaf_paths(params_shape)}); the inner loop adapts the "
                f"parameters it does not select, so it must leave at least one out."
            )

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> Any:
        chosen, fixed = partition(params, mask)
        run = gradient_inner_loop(
            lambda part, s, inputs: model.apply(combine(part, fixed), s, inputs),
            loss_fn,
            optimizer,
            first_order=first_order,
            remat=remat,
        )
        return combine(run(chosen, state, x, y, steps_or_default(steps, default_steps)), fixed)

    def task_loss(params: PyTree, state: PyTree, task: Task, steps: int | None = None) -> tuple[jax.Array, TaskOutput]:
        adapted_params = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(model.apply, loss_fn, metrics, adapted_params, state, task)

    return Learner(init=model.init, adapt=adapt, predict=model.apply, task_loss=task_loss, adapts_network=True)


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
