"""The unit of meta-learning: a task's support set (to adapt on) and query set (to evaluate on)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.validation import positive_int


class Task(NamedTuple):
    """A task, or a batch of tasks when every field has a leading task axis.

    Example::

        >>> import jax.numpy as jnp
        >>> t = Task(jnp.zeros((5, 1)), jnp.zeros((5, 1)), jnp.zeros((10, 1)), jnp.zeros((10, 1)))
        >>> t.support_x.shape
        (5, 1)
    """

    support_x: jax.Array
    support_y: jax.Array
    query_x: jax.Array
    query_y: jax.Array


def split_points(x: jax.Array, y: jax.Array, shots: int) -> Task:
    """Splits a task's (or a task batch's) points into the first ``shots`` as support, the rest as query.

    ``x`` has shape ``(tasks, points, *input_shape)`` and ``y`` ``(tasks, points, *target_shape)``.

    Example::

        >>> import jax.numpy as jnp
        >>> task = split_points(jnp.ones((4, 15, 1)), jnp.ones((4, 15, 1)), shots=5)
        >>> task.support_x.shape, task.query_x.shape
        ((4, 5, 1), (4, 10, 1))
    """
    shots = positive_int("shots", shots)
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x and y must agree on their task and point axes; got x {x.shape} and y {y.shape}.")
    points = x.shape[1]
    if shots >= points:
        raise ValueError(
            f"shots must be smaller than the number of points per task ({points}), leaving at least one "
            f"query point; got shots={shots}."
        )
    return Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def num_tasks(tasks: Task) -> int:
    """The size of a task batch's leading axis, after checking that the four fields agree on it.

    Raises a ValueError naming the field, the shapes and the fix when the batch is malformed.
    """
    if not isinstance(tasks, Task):
        raise TypeError(f"tasks must be a jmeta.Task; got {type(tasks).__name__}.")
    shapes = {name: jnp.shape(value) for name, value in tasks._asdict().items()}
    for name, shape in shapes.items():
        if len(shape) < 2:
            raise ValueError(
                f"tasks.{name} must have a leading task axis and a point axis (shape (tasks, points, ...)); "
                f"got shape {shape}."
            )
    leading = {shape[0] for shape in shapes.values()}
    if len(leading) != 1:
        raise ValueError(f"all fields of tasks must have the same number of tasks (axis 0); got {shapes}.")
    for side in ("support", "query"):
        xs, ys = shapes[f"{side}_x"], shapes[f"{side}_y"]
        if xs[1] != ys[1]:
            raise ValueError(
                f"tasks.{side}_x and tasks.{side}_y must have the same number of points (axis 1); "
                f"got {xs} and {ys}."
            )
    if shapes["support_x"][2:] != shapes["query_x"][2:]:
        raise ValueError(
            "support and query inputs must have the same per-point shape; got support_x "
            f"{shapes['support_x']} and query_x {shapes['query_x']}."
        )
    return leading.pop()
