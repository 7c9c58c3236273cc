"""The cost of a population (``jmeta.population``) against the same runs one after another, on a bench
workload (``jmeta.bench``): ``jmeta bench NAME --population N``.

``N`` members, each initialised from its own key, take meta-steps on the workload's task batch (the same
batch for every member: throughput does not depend on the tasks' values). Two ways of batching the members
in one compiled program are timed: ``vmap`` (the members' arithmetic batched together, as ``jmeta train``
runs a population) and ``map`` (``lax.map``: a loop over members inside the program). Against them, ``N``
sequential runs: the single run's compiled step, called for each member in turn, from its own state. The
memory of each is XLA's compiled memory of one meta-step (``memory_analysis()``); per member, divided by
``N``.

Example::

    >>> results = compare("sinusoid-maml", 4, steps=100, steps_per_call=10)   # doctest: +SKIP
    >>> {r.how: round(r.tasks_per_s) for r in results}                        # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jmeta import bench
from jmeta.meta_trainer import MetaTrainer
from jmeta.validation import positive_int

STRATEGIES = ("vmap", "map")


class PopulationBench(NamedTuple):
    """``how`` (``"sequential"``, ``"vmap"`` or ``"map"``) ran ``members`` x ``steps`` meta-steps of
    ``tasks_per_step`` tasks in ``run_s`` seconds (after compiling in ``compile_s``); ``memory_bytes``: XLA's
    compiled memory (arguments + outputs + temporaries) of one meta-step of the program (of one member's,
    for ``"sequential"``)."""

    how: str
    members: int
    steps: int
    tasks_per_step: int
    compile_s: float
    run_s: float
    memory_bytes: int

    @property
    def tasks_per_s(self) -> float:
        return self.members * self.steps * self.tasks_per_step / self.run_s

    @property
    def memory_per_member(self) -> float:
        return self.memory_bytes / (1 if self.how == "sequential" else self.members)


def population_update(trainer: MetaTrainer, how: str) -> Any:
    """``update(states, tasks)`` over a leading member axis of both: ``"vmap"`` or ``"map"`` (``lax.map``)."""
    if how == "vmap":
        return jax.vmap(trainer.update)
    return lambda states, tasks: jax.lax.map(lambda pair: trainer.update(*pair), (states, tasks))


def _scanned(update: Any, count: int) -> Any:
    def run_steps(state: Any, tasks: Any) -> Any:
        return jax.lax.scan(lambda state, _: update(state, tasks), state, length=count)

    return jax.jit(run_steps, donate_argnums=0)


def _timed(call: Any, state: Any, tasks: Any, calls: int) -> tuple[Any, float]:
    start = time.perf_counter()
    for _ in range(calls):
        state, _ = call(state, tasks)
    jax.block_until_ready(state)
    return state, time.perf_counter() - start


def _memory(compiled: Any) -> int:
    analysis = compiled.memory_analysis()
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes)


def compare(name: str, members: int, *, steps: int, steps_per_call: int = 1, **setting: Any) -> list[PopulationBench]:
    """Times ``members`` runs of ``steps`` meta-steps of the bench workload ``name`` (``jmeta.bench.WORKLOADS``,
    with ``setting``: fields of ``jmeta.bench.Setting``) run one after another, then as one population
    program per strategy of ``STRATEGIES``; ``steps_per_call`` meta-steps per compiled call (a scan). Raises
    ValueError for a bad argument, before compiling.

    Example::

        >>> [r.how for r in compare("sinusoid-maml", 2, steps=2)]  # doctest: +SKIP
        ['sequential', 'vmap', 'map']
    """
    members, steps = positive_int("members", members), positive_int("steps", steps)
    steps_per_call = positive_int("steps_per_call", steps_per_call)
    if steps % steps_per_call:
        raise ValueError(f"steps ({steps}) must be a multiple of steps_per_call ({steps_per_call}).")
    trainer, _, tasks = bench.build(name, **setting)
    keys = jax.random.split(jax.random.key(0), members)
    tasks_per_step, calls = jax.tree.leaves(tasks)[0].shape[0], steps // steps_per_call
    results = []

    start = time.perf_counter()
    single = _scanned(trainer.update, steps_per_call).lower(trainer.init(keys[0]), tasks).compile()
    compile_s = time.perf_counter() - start
    run_s = 0.0
    for key in keys:  # each run from its own initial state, one after another
        _, seconds = _timed(single, trainer.init(key), tasks, calls)
        run_s += seconds
    results.append(PopulationBench("sequential", members, steps, tasks_per_step, compile_s, run_s, _memory(single)))

    stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (members, *a.shape)), tasks)
    for how in STRATEGIES:
        states = jax.vmap(trainer.init)(keys)
        start = time.perf_counter()
        program = _scanned(population_update(trainer, how), steps_per_call).lower(states, stacked).compile()
        states, _ = program(states, stacked)  # a warm-up call, as jmeta.bench.run times
        jax.block_until_ready(states)
        compile_s = time.perf_counter() - start
        _, run_s = _timed(program, states, stacked, calls)
        results.append(PopulationBench(how, members, steps, tasks_per_step, compile_s, run_s, _memory(program)))
    return results


def report(name: str, results: list[PopulationBench]) -> str:
    """The lines ``jmeta bench NAME --population N`` prints, the last ``tasks/s`` of the fastest program."""
    sequential = results[0]
    lines = []
    for result in results:
        ratio = "" if result is sequential else f", {result.tasks_per_s / sequential.tasks_per_s:.2f}x sequential"
        lines.append(
            f"jmeta {name}: {result.members} members, {result.how}: {result.members} x {result.steps} meta-steps of "
            f"{result.tasks_per_step} tasks in {result.run_s:.2f}s: tasks/s {result.tasks_per_s:.1f}{ratio} "
            f"(compiled in {result.compile_s:.1f}s); compiled memory of a call {result.memory_bytes} bytes, "
            f"{result.memory_per_member:.0f} per member"
        )
    best = max(results[1:], key=lambda r: r.tasks_per_s)
    lines.append(f"tasks/s {best.tasks_per_s:.1f}")
    return "\n".join(lines)
