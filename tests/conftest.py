"""Shared fixtures: a small sinusoid MLP and task batches."""

import jax
import jax.numpy as jnp
import pytest

import jmeta

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture
def mlp_model() -> jmeta.Model:
    return jmeta.from_linen(jmeta.models.MLP((16, 16, 1)), jnp.zeros((1, 1)))


@pytest.fixture
def sine_tasks() -> jmeta.Task:
    return jmeta.tasks.sinusoid_tasks(jax.random.key(1), 6, shots=10, queries=10)


def first_task(tasks: jmeta.Task) -> jmeta.Task:
    return jax.tree.map(lambda a: a[0], tasks)
