"""Checks of a task sampler's output before a program is compiled on it.

A NaN or infinite input makes the tasks that hold it diverge, and whether it shows in their metrics
depends on the program: XLA:CPU's fused ReLU, for one, can map NaN to 0 in some programs and not in others.
Data sets are checked when loaded (:meth:`jmeta.data.ClassDataset.check_finite`); a sampler of your own
is checked here, on the batches that :func:`jmeta.evaluate` evaluates and on the first batch that
meta-training trains on.

Example::

    >>> import jax.numpy as jnp
    >>> from jmeta.tasks.task import Task
    >>> tasks = Task(jnp.zeros((2, 5, 1)), jnp.zeros((2, 5, 1)), jnp.zeros((2, 10, 1)), jnp.zeros((2, 10, 1)))
    >>> check_finite_tasks(tasks, "sample_tasks")
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.tasks.task import Task, num_tasks

__all__ = ["check_finite_tasks"]


@jax.jit
def _finite_per_field(tasks: Task) -> dict[str, jax.Array]:
    """``{field: (tasks,) bool}``: whether each task's floating-point field is finite everywhere."""
    return {
        name: jnp.isfinite(value).reshape(value.shape[0], -1).all(axis=1)
        for name, value in tasks._asdict().items()
        if jnp.issubdtype(value.dtype, jnp.inexact)
    }


def check_finite_tasks(tasks: Task, where: str, first_task: int = 0) -> None:
    """Raises ValueError when a task of the batch ``tasks`` holds a NaN or infinite input or target.

    ``tasks`` is a batch of tasks (every field ``(tasks, points, ...)``; integer labels are not checked),
    ``where`` names its source in the message (e.g. ``"sample_tasks"``), and ``first_task`` is the number
    of the batch's first task among those drawn, so that the message numbers tasks as the caller does. The
    check is one compiled reduction per batch shape on the device the tasks are on; only one flag per task
    and field comes back to the host (and, on failure, the first bad task). The message names the task,
    the field, the point and the value.

    Example::

        >>> import jax.numpy as jnp
        >>> from jmeta.tasks.task import Task
        >>> x = jnp.zeros((2, 5, 1)).at[1, 3, 0].set(jnp.nan)
        >>> check_finite_tasks(Task(x, jnp.zeros((2, 5, 1)), x, x), "sample_tasks", first_task=100)
        Traceback (most recent call last):
        ValueError: sample_tasks drew a task with a non-finite input: task 101's support_x[3] holds nan at \
index (0,) (1 of the 2 tasks of this batch). Fix the sampler or its data: a NaN input makes a task diverge, \
and whether it shows in its metrics depends on the compiled program.
    """
    count = num_tasks(tasks)
    flags = {name: np.asarray(finite) for name, finite in _finite_per_field(tasks).items()}
    if all(finite.all() for finite in flags.values()):
        return
    bad = np.logical_or.reduce([~finite for finite in flags.values()])
    task = int(np.flatnonzero(bad)[0])
    field = next(name for name in tasks._fields if name in flags and not flags[name][task])
    values = np.asarray(getattr(tasks, field)[task])
    point, *index = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
    raise ValueError(
        f"{where} drew a task with a non-finite input: task {first_task + task}'s {field}[{point}] holds "
        f"{values[(point, *index)]} at index {tuple(index)} ({int(bad.sum())} of the {count} tasks of this "
        "batch). Fix the sampler or its data: a NaN input makes a task diverge, and whether it shows in its "
        "metrics depends on the compiled program."
    )
