"""Throughput benchmarks, each the same workload as a PyTorch peer in ../shared/bench/.

``sinusoid-maml`` is the workload of ``peers_sine.py``: MLP 1-40-40-1 (ReLU), K=10 support and 10 query
points per task, meta-batch 25, one inner SGD step with lr 0.01, second order, Adam 1e-3; one task batch
sampled once; one warm-up call (compilation), then ``steps`` timed meta-steps.

Example::

    >>> result = run("sinusoid-maml", steps=100)   # doctest: +SKIP
    >>> result.tasks_per_s                         # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.learners import maml
from jmeta.meta_trainer import MetaTrainer, TrainState, meta_trainer
from jmeta.models import MLP, Conv4
from jmeta.nn import from_linen
from jmeta.tasks import Task, sinusoid_tasks
from jmeta.validation import one_of, positive_int


class BenchResult(NamedTuple):
    """What a benchmark measured."""

    name: str
    batching: str
    chunk_size: int | None
    steps: int
    steps_per_call: int
    tasks_per_step: int
    compile_s: float
    run_s: float

    @property
    def tasks_per_s(self) -> float:
        return self.steps * self.tasks_per_step / self.run_s


class Workload(NamedTuple):
    """A meta-trainer, its initial state and the one task batch it is timed on."""

    trainer: MetaTrainer
    state: TrainState
    tasks: Task


def sinusoid_maml(batching: str, chunk_size: int | None = None) -> Workload:
    """The ``peers_sine.py`` workload."""
    model = from_linen(MLP((40, 40, 1)), jnp.zeros((1, 1)))
    learner = maml(model, losses.mse, inner_lr=0.01, steps=1)
    trainer = meta_trainer(learner, optax.adam(1e-3), batching=batching, chunk_size=chunk_size)
    tasks = sinusoid_tasks(jax.random.key(1), 25, shots=10, queries=10)
    return Workload(trainer, trainer.init(jax.random.key(0)), tasks)


def omniglot_maml(batching: str, chunk_size: int | None = None) -> Workload:
    """The ``peers_torch.py`` workload: 5-way 1-shot, 15 queries per class, 28x28x1 random images, Conv-4
    (64 filters, stride-2 3x3 convolutions, BatchNorm on batch statistics, ReLU), mean-pool, linear head;
    meta-batch 32; one second-order SGD step of 0.4; Adam 1e-3."""
    ways, shots, queries, meta_batch = 5, 1, 15, 32
    model = from_linen(Conv4(num_classes=ways), jnp.zeros((1, 28, 28, 1)))
    learner = maml(model, losses.cross_entropy, inner_lr=0.4, steps=1)
    trainer = meta_trainer(learner, optax.adam(1e-3), batching=batching, chunk_size=chunk_size)
    support_key, query_key = jax.random.split(jax.random.key(1))
    labels = jnp.repeat(jnp.arange(ways), shots)
    tasks = Task(
        jax.random.normal(support_key, (meta_batch, ways * shots, 28, 28, 1)),
        jnp.broadcast_to(labels, (meta_batch, ways * shots)),
        jax.random.normal(query_key, (meta_batch, ways * queries, 28, 28, 1)),
        jnp.broadcast_to(jnp.repeat(jnp.arange(ways), queries), (meta_batch, ways * queries)),
    )
    return Workload(trainer, trainer.init(jax.random.key(0)), tasks)


WORKLOADS = {"sinusoid-maml": sinusoid_maml, "omniglot-maml": omniglot_maml}
# Timed meta-steps and meta-steps per compiled call by default: enough for a stable figure in seconds.
DEFAULTS = {"sinusoid-maml": (1000, 100), "omniglot-maml": (20, 1)}


def run(
    name: str, *, steps: int = 1000, steps_per_call: int = 1, batching: str = "auto", chunk_size: int | None = None
) -> BenchResult:
    """Times ``steps`` meta-steps of the named workload after one warm-up (compiling) call.

    ``steps_per_call=1`` calls ``trainer.step`` once per meta-step, as a Python training loop does;
    ``steps_per_call=k`` runs ``k`` meta-steps in one compiled ``lax.scan``, as ``jmeta train`` does.
    ``batching`` and ``chunk_size`` are passed to ``jmeta.meta_trainer``.
    """
    one_of("name", name, tuple(WORKLOADS))
    steps, steps_per_call = positive_int("steps", steps), positive_int("steps_per_call", steps_per_call)
    if steps % steps_per_call:
        raise ValueError(f"steps ({steps}) must be a multiple of steps_per_call ({steps_per_call}).")
    trainer, state, tasks = WORKLOADS[name](batching, chunk_size)
    call = trainer.step if steps_per_call == 1 else _fused(trainer, steps_per_call)
    start = time.perf_counter()
    state, _ = call(state, tasks)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps // steps_per_call):
        state, _ = call(state, tasks)
    jax.block_until_ready(state)
    tasks_per_step = jax.tree.leaves(tasks)[0].shape[0]
    run_s = time.perf_counter() - start
    return BenchResult(name, batching, chunk_size, steps, steps_per_call, tasks_per_step, compile_s, run_s)


def _fused(trainer: MetaTrainer, count: int) -> Callable[[TrainState, Task], tuple[TrainState, Any]]:
    def run_steps(state: TrainState, tasks: Task) -> tuple[TrainState, Any]:
        return jax.lax.scan(lambda state, _: trainer.update(state, tasks), state, length=count)

    return jax.jit(run_steps, donate_argnums=0)
