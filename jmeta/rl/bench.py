"""``jmeta bench nav2d-maml``: the speed of jmeta's compiled MAML-TRPO meta-iteration on 2D navigation (Finn et
al. 2017, sec. 5.3: 20 tasks x 20 episodes of 100 steps, one inner policy-gradient step, a TRPO outer step), and
of the same workload in PyTorch (``benchmarks/peers_nav2d_torch.py``, run with the peers' Python in the same
invocation), with their ratio.

Environment steps are counted as ``tasks x episodes x 100`` per rollout stage, two stages (before and after
adaptation) a meta-iteration, on both sides; the timings exclude jmeta's compilation and the peer's first
(warm-up) meta-iteration.

Example::

    >>> result = bench_nav2d(iterations=3)              # doctest: +SKIP
    >>> print(format_bench(result))                     # doctest: +SKIP
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple

import jax

from jmeta.rl.envs import nav2d
from jmeta.rl.maml import env_steps_per_iteration, maml_rl, meta_train
from jmeta.validation import positive_int

PEER_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peers_nav2d_torch.py"


class Speed(NamedTuple):
    """Meta-iterations/s and environment steps/s of one implementation (``compile_s``: jmeta's compilation)."""

    meta_iterations_per_s: float
    env_steps_per_s: float
    compile_s: float | None = None


class Nav2dBench(NamedTuple):
    """What :func:`bench_nav2d` measured: the workload's sizes, jmeta's speed and the peer's (None without one)."""

    tasks: int
    trajectories: int
    iterations: int
    jmeta: Speed
    peer: Speed | None
    peer_description: str


def bench_nav2d(
    iterations: int = 3,
    tasks: int = 20,
    trajectories: int = 20,
    peer_python: str | None = None,
    peer_threads: int = 1,
) -> Nav2dBench:
    """Times ``iterations`` MAML-TRPO meta-iterations of jmeta (after compiling, XLA's default threads) and, with
    ``peer_python`` (a Python with torch), of ``benchmarks/peers_nav2d_torch.py`` on the same sizes with
    ``peer_threads`` intra-op threads (0: torch's default). One thread by default: on the shared 2-core CPU this
    was written on, torch's default 2 threads ran this workload 12 times slower than one (0.0063 against 0.0665
    meta-iterations/s: intra-op threads spinning on an oversubscribed CPU), while XLA's were not slowed (0.076
    meta-iterations/s with its default threads, 0.084 with one).

    Raises:
        ValueError: naming the argument, for a non-positive size.
        FileNotFoundError: when the peer script is not beside the package (a jmeta installed without its sources).
        RuntimeError: with the peer's error output, when the peer fails.
    """
    iterations = positive_int("iterations", iterations)
    peer_threads = positive_int("peer_threads", peer_threads, allow_zero=True)
    meta = maml_rl(nav2d(), num_tasks=positive_int("tasks", tasks), trajectories=positive_int("trajectories",
                                                                                              trajectories))
    log = meta_train(meta, jax.random.key(0), iterations)
    speed = Speed(log.iterations_per_second(), env_steps_per_iteration(meta) * log.iterations_per_second(),
                  log.compile_seconds)
    if peer_python is None:
        return Nav2dBench(tasks, trajectories, iterations, speed, None, "")
    if not PEER_SCRIPT.is_file():
        raise FileNotFoundError(f"the PyTorch peer {PEER_SCRIPT} is not there: run from a jmeta source checkout.")
    command = [peer_python, str(PEER_SCRIPT), "--iterations", str(iterations), "--tasks", str(tasks),
               "--trajectories", str(trajectories), "--threads", str(peer_threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    figures = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines() if line.endswith(tuple("0123456789")))
    if done.returncode or "meta-iterations/s" not in figures:
        raise RuntimeError(f"the PyTorch peer failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    peer = Speed(float(figures["meta-iterations/s"]), float(figures["env steps/s"]))
    return Nav2dBench(tasks, trajectories, iterations, speed, peer, done.stdout.splitlines()[0])


def format_bench(result: Nav2dBench) -> str:
    """The figures, one line each, ``meta-iterations/s N`` (jmeta's) last."""
    workload = (f"MAML-TRPO on nav2d, {result.tasks} tasks x {result.trajectories} episodes x 100 steps, 2 x 100 "
                f"policy, {result.iterations} timed meta-iterations")
    lines = [f"jmeta nav2d-maml: {workload}; compiled in {result.jmeta.compile_s:.1f}s: "
             f"{result.jmeta.meta_iterations_per_s:.4f} meta-iterations/s, {result.jmeta.env_steps_per_s:.0f} env "
             f"steps/s"]
    if result.peer is not None:
        lines.append(f"PyTorch peer ({result.peer_description}): {result.peer.meta_iterations_per_s:.4f} "
                     f"meta-iterations/s, {result.peer.env_steps_per_s:.0f} env steps/s")
        lines.append(f"  jmeta / torch = {result.jmeta.meta_iterations_per_s / result.peer.meta_iterations_per_s:.2f}x")
    lines.append(f"meta-iterations/s {result.jmeta.meta_iterations_per_s:.4f}")
    return "\n".join(lines)
