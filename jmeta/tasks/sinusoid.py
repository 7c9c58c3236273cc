"""Sinusoid regression tasks (Finn et al. 2017, sec. 5.1), sampled on the device from a PRNG key.

Each task is ``y = amplitude * sin(x - phase)`` with amplitude ~ U[0.1, 5], phase ~ U[0, pi] and
x ~ U[-5, 5]. (The paper writes the phase as a shift; its sign does not change the distribution.)

Example::

    >>> import jax
    >>> tasks = sinusoid_tasks(jax.random.key(0), 25, shots=10, queries=10)
    >>> tasks.support_x.shape, tasks.query_y.shape
    ((25, 10, 1), (25, 10, 1))
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.tasks.task import Task, split_points
from jmeta.validation import positive_int

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class Sinusoids(NamedTuple):
    """A batch of sine functions; calling it on ``x`` of shape (tasks, points, 1) evaluates each."""

    amplitude: jax.Array
    phase: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.amplitude[:, None, None] * jnp.sin(x - self.phase[:, None, None])


def sinusoid_functions(key: jax.Array, num_tasks: int) -> Sinusoids:
    """The sine functions that ``sinusoid_tasks(key, num_tasks, ...)`` draws its points from.

    Example::

        >>> import jax
        >>> truth = sinusoid_functions(jax.random.key(0), 3)
        >>> truth.amplitude.shape
        (3,)
    """
    num_tasks = positive_int("num_tasks", num_tasks)
    amplitude_key, phase_key = jax.random.split(jax.random.fold_in(key, 0))
    return Sinusoids(
        jax.random.uniform(amplitude_key, (num_tasks,), minval=AMPLITUDE[0], maxval=AMPLITUDE[1]),
        jax.random.uniform(phase_key, (num_tasks,), minval=PHASE[0], maxval=PHASE[1]),
    )


def sinusoid_tasks(key: jax.Array, num_tasks: int, *, shots: int, queries: int) -> Task:
    """A batch of sinusoid tasks with ``shots`` support and ``queries`` query points each, all in U[-5, 5].

    A pure function of ``key``, usable inside ``jax.jit`` (with the sizes static).
    """
    shots, queries = positive_int("shots", shots), positive_int("queries", queries)
    functions = sinusoid_functions(key, num_tasks)
    x = jax.random.uniform(
        jax.random.fold_in(key, 1), (num_tasks, shots + queries, 1), minval=X_RANGE[0], maxval=X_RANGE[1]
    )
    return split_points(x, functions(x), shots)


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["shots", "queries"])
@dataclasses.dataclass(frozen=True)
class SinusoidSampler:
    """``sampler(key, num_tasks) -> Task``: sinusoid tasks of a fixed size, as a pytree (like every jmeta
    task sampler) so it can be passed into jitted functions.

    Example::

        >>> import jax
        >>> SinusoidSampler(shots=5, queries=10)(jax.random.key(0), 3).query_x.shape
        (3, 10, 1)
    """

    shots: int
    queries: int

    def __call__(self, key: jax.Array, num_tasks: int) -> Task:
        return sinusoid_tasks(key, num_tasks, shots=self.shots, queries=self.queries)
