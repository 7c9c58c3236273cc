"""Data parallelism over tasks with JAX's own sharding: tasks split across devices, parameters replicated.

A meta-step compiled with ``jax.jit`` runs unchanged on sharded inputs; XLA inserts the reduction of the
meta-gradient across devices. A batch whose size is not a multiple of the device count is padded with
copies of its first tasks of weight 0 (``pad_with_weights``, then ``MetaTrainer.step(state, tasks,
weights)``). Works across hosts too, with a mesh over ``jax.devices()`` after ``jax.distributed.initialize()``:
every process then passes the same (global) values.

Example::

    >>> import jax, jmeta
    >>> mesh = task_mesh()                                   # all devices
    >>> tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(0), 8 * mesh.size, shots=10, queries=10)
    >>> tasks = shard_tasks(tasks, mesh)
    >>> odd = jmeta.tasks.sinusoid_tasks(jax.random.key(0), 8 * mesh.size + 1, shots=10, queries=10)
    >>> odd, weights = shard_tasks(pad_with_weights(odd, mesh.size), mesh)   # weights None if none padded
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jmeta.validation import positive_int

TASK_AXIS = "tasks"


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"tasks"`` over ``devices`` (default: all of them)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (TASK_AXIS,))


def nearest_multiples(count: int, size: int) -> tuple[int, ...]:
    """The multiples of ``size`` nearest to ``count`` (below, if positive, and above).

    Example::

        >>> nearest_multiples(30, 8)
        (24, 32)
    """
    below, above = size * (count // size), size * (count // size + 1)
    return (below, above) if below else (above,)


def shard_tasks(tasks: Any, mesh: Mesh) -> Any:
    """Places a task batch with its leading (task) axis split evenly across the mesh's devices.

    ``tasks`` may be any pytree whose leaves share that axis, e.g. ``pad_with_weights``'s
    ``(tasks, weights)``. Raises ValueError when the number of tasks is not a multiple of the number of
    devices.
    """
    count = jax.tree.leaves(tasks)[0].shape[0]
    if count % mesh.size:
        raise ValueError(
            f"the number of tasks ({count}) must be a multiple of the number of devices ({mesh.size}) to "
            f"shard them evenly; use a meta-batch of {' or '.join(map(str, nearest_multiples(count, mesh.size)))}, "
            f"or pad it: tasks, weights = shard_tasks(pad_with_weights(tasks, {mesh.size}), mesh), then "
            "trainer.step(state, tasks, weights)."
        )
    return put(tasks, task_sharding(mesh))


def pad_tasks(tasks: Any, multiple: int) -> Any:
    """Repeats the first tasks after the last so that the task count is a multiple of ``multiple``
    (the padding's results are to be dropped): the real tasks stay the same whatever the device count.

    Example::

        >>> import jax.numpy as jnp
        >>> pad_tasks(jnp.arange(5), 4)
        Array([0, 1, 2, 3, 4, 0, 1, 2], dtype=int32)
    """
    count = jax.tree.leaves(tasks)[0].shape[0]
    missing = -count % multiple
    if not missing:
        return tasks
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.resize(a, (missing, *a.shape[1:]))]), tasks)


def pad_with_weights(tasks: Any, multiple: int) -> tuple[Any, np.ndarray | None]:
    """``pad_tasks``, with the task weights that drop the padding: ``(padded tasks, weights)``, ``weights``
    a ``(padded count,)`` float32 NumPy array holding 1 for each real task and 0 for each copy, for
    ``MetaTrainer.step``/``update``/``loss`` (whose means over tasks are then the means over the real tasks);
    ``(tasks, None)`` when their count is already a multiple of ``multiple``. Works inside ``jax.jit`` (the
    count is static). Raises ValueError unless ``multiple`` is a positive int.

    Example::

        >>> import jax.numpy as jnp
        >>> pad_with_weights(jnp.arange(5.0), 4)
        (Array([0., 1., 2., 3., 4., 0., 1., 2.], dtype=float32), array([1., 1., 1., 1., 1., 0., 0., 0.], \
dtype=float32))
        >>> pad_with_weights(jnp.arange(4.0), 4)[1] is None
        True
    """
    multiple = positive_int("multiple", multiple)
    count = jax.tree.leaves(tasks)[0].shape[0]
    if count % multiple == 0:
        return tasks, None
    padded = pad_tasks(tasks, multiple)
    return padded, (np.arange(count - count % multiple + multiple) < count).astype(np.float32)


def constrain_tasks(tasks: Any, mesh: Mesh) -> Any:
    """Inside a jitted function: splits a task batch's leading axis across the mesh (tasks sampled
    there are computed where they are used; the values do not depend on the device count). ``tasks`` may
    be any pytree whose leaves share that axis, e.g. ``pad_with_weights``'s ``(tasks, weights)``."""
    return jax.lax.with_sharding_constraint(tasks, task_sharding(mesh))


def task_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (task) axis split over the mesh's ``"tasks"`` axis."""
    return NamedSharding(mesh, PartitionSpec(TASK_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Whole on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree (parameters, optimiser state) whole on every device of the mesh."""
    return put(tree, replicated(mesh))


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """``jax.device_put``; across processes, each process's part of the (same, global) value is copied
    from the host, as ``jax.device_put`` mis-builds such arrays when a process has a single device (jax 0.10)."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def global_array(leaf: Any) -> jax.Array:
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(global_array, tree)
