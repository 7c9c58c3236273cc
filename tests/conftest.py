"""Shared fixtures: a small sinusoid MLP and task batches; a helper that kills a training process."""

import signal
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import jmeta

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mlp_model() -> jmeta.Model:
    return jmeta.from_linen(jmeta.models.MLP((16, 16, 1)), jnp.zeros((1, 1)))


@pytest.fixture
def sine_tasks() -> jmeta.Task:
    return jmeta.tasks.sinusoid_tasks(jax.random.key(1), 6, shots=10, queries=10)


def first_task(tasks: jmeta.Task) -> jmeta.Task:
    return jax.tree.map(lambda a: a[0], tasks)


def kill_at_first_checkpoint(process: subprocess.Popen, workdir: Path, timeout: float = 300) -> None:
    """SIGKILLs ``process`` (a ``jmeta train`` of ``workdir``) as soon as its first checkpoint is on disk, and
    checks that it had not finished by then."""
    latest = workdir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    while not (latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "results.json").exists(), "the run finished before it was killed"
