"""Processes and devices of a run: ``jax.distributed`` set-up, the run's device mesh, the main process.

``jmeta train`` and ``jmeta eval`` use every local device by default: one mesh (``jmeta.parallel``) over
the devices of every process, each task batch split along it (padded with tasks of weight 0 when it does
not divide: any meta-batch runs on any number of devices), the state replicated. Several processes (hosts)
join with ``setup(coordinator, num_processes, process_id)`` before JAX touches a device; the same command
runs on every process, and only the main process (0) writes metrics, TensorBoard events and results. See
docs/scaling-out.md.

Example::

    >>> mesh = run_mesh(0)            # every device of every process
    >>> mesh.axis_names
    ('tasks',)
    >>> is_main_process()
    True
"""

from __future__ import annotations

import functools
import os

import jax
from jax.sharding import Mesh

from jmeta.parallel import task_mesh
from jmeta.validation import positive_int

# Environment variables by which a cluster announces several processes that jax.distributed.initialize()
# can find by itself (jax/_src/clusters): SLURM, Open MPI, TPU pods on GKE, or an explicit coordinator.
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def detected_cluster() -> str | None:
    """The name of the multi-process cluster this process runs in, or None on a plain machine."""
    env = os.environ
    if all(name in env for name in _SLURM) and int(env["SLURM_NTASKS"]) > 1:
        return "SLURM"
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len(hosts.split(",")) > 1:
        return "TPU pod"
    if "JAX_COORDINATOR_ADDRESS" in env:
        return "JAX_COORDINATOR_ADDRESS"
    return None


def setup(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> str:
    """Joins this process to a multi-process run; call it before any JAX computation.

    With ``coordinator`` (``"HOST:PORT"`` of process 0, or ``"auto"`` for JAX's own cluster detection, e.g.
    on a Cloud TPU pod), ``num_processes`` and ``process_id`` it calls ``jax.distributed.initialize`` with
    them; with none of the three it does so without arguments only where ``detected_cluster()`` finds a
    cluster (SLURM, Open MPI, a TPU pod), and otherwise leaves JAX single-process. Raises ValueError when
    only some of the three are given or they are out of range. Returns a one-line description.

    Example::

        >>> setup()   # a plain machine: nothing to join
        'one process'
    """
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if coordinator == "auto" and num_processes is None and process_id is None:
        jax.distributed.initialize()
        return _described("JAX's cluster detection")
    if all(value is None for value in given.values()):
        cluster = detected_cluster()
        if cluster is None:
            return "one process"
        jax.distributed.initialize()
        return _described(cluster)
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise ValueError(
            f"a multi-process run needs --coordinator HOST:PORT, --num-processes N and --process-id I together; "
            f"{' and '.join(missing)} missing."
        )
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator must be HOST:PORT of process 0 (e.g. 10.0.0.1:1234); got {coordinator!r}.")
    num_processes = positive_int("--num-processes", num_processes)
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id must be 0 to {num_processes - 1} for --num-processes {num_processes}; got {process_id!r}."
        )
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return _described(f"coordinator {coordinator}")


def _described(how: str) -> str:
    return (
        f"process {jax.process_index()} of {jax.process_count()} ({how}), {jax.local_device_count()} local "
        f"devices of {jax.device_count()}"
    )


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes a run's files and prints its results."""
    return jax.process_index() == 0


@functools.cache
def run_mesh(devices: int = 0) -> Mesh:
    """The run's mesh: the first ``devices`` local devices of every process (0: all of them).

    Raises ValueError when ``devices`` is negative or more than a process has.

    Example::

        >>> run_mesh(1).size * jax.process_count() == run_mesh(1).size
        True
    """
    local = jax.local_device_count()
    if not isinstance(devices, int) or isinstance(devices, bool) or not 0 <= devices <= local:
        raise ValueError(f"devices must be 0 (all) to {local}, the devices of this process; got {devices!r}.")
    count = devices or local
    chosen = [d for p in range(jax.process_count()) for d in _devices_of(p)[:count]]
    return task_mesh(chosen)


def _devices_of(process: int) -> list[jax.Device]:
    return sorted((d for d in jax.devices() if d.process_index == process), key=lambda d: d.id)
