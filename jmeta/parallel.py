"""Data parallelism over tasks with JAX's own sharding: tasks split across devices, parameters replicated.

A meta-step compiled with ``jax.jit`` runs unchanged on sharded inputs; XLA inserts the reduction of the
meta-gradient across devices. Works across hosts too, with a mesh over ``jax.devices()``.

Example::

    >>> import jax, jmeta
    >>> mesh = task_mesh()                                   # all devices
    >>> tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(0), 8 * mesh.size, shots=10, queries=10)
    >>> tasks = shard_tasks(tasks, mesh)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASK_AXIS = "tasks"


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"tasks"`` over ``devices`` (default: all of them)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (TASK_AXIS,))


def shard_tasks(tasks: Any, mesh: Mesh) -> Any:
    """Places a task batch with its leading (task) axis split evenly across the mesh's devices."""
    count = jax.tree.leaves(tasks)[0].shape[0]
    if count % mesh.size:
        raise ValueError(
            f"the number of tasks ({count}) must be a multiple of the number of devices ({mesh.size}) to "
            f"shard them evenly; use a meta-batch of {mesh.size * max(1, count // mesh.size)} or "
            f"{mesh.size * (count // mesh.size + 1)}."
        )
    return jax.device_put(tasks, NamedSharding(mesh, PartitionSpec(TASK_AXIS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree (parameters, optimiser state) whole on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
