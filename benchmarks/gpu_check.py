"""The GPU check: jmeta's throughput beside learn2learn and torch.func on the same GPU (and alone on the
workloads without a peer: MetaOptNet-R2D2, Matching Networks), memory, FLOP utilisation, then MAML
Omniglot 5-way 1-shot meta-trained for as much of its 60,000 iterations as the time left allows, and its
test accuracy with the protocol. Run by ``benchmarks/gpu_check.sh`` (which says how to prepare what it
needs); every figure it prints comes from a command it runs, named beside it.

``GPU_CHECK_SMALL=1`` shrinks every part (a few steps each) to try the whole check on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKLOADS = ("sinusoid-maml", "omniglot-maml")
JMETA_ONLY = ("omniglot-metaoptnet-r2d2", "omniglot-matchingnet")  # workloads without a PyTorch peer
PEERS = ("l2l", "func")
OMNIGLOT_ITERATIONS = 60_000


class Clock:
    """The check's time budget."""

    def __init__(self, minutes: float):
        self.reset(minutes)

    def reset(self, minutes: float) -> Clock:
        self.start = time.monotonic()
        self.deadline = self.start + 60 * minutes
        return self

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


CLOCK = Clock(8.0)


def run(command: list[str]) -> subprocess.CompletedProcess:
    """Runs a command from the repository root, stopped when the check's time is up."""
    try:
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=max(5.0, CLOCK.left()))
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", "stopped: the check's time is up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole check's wall-clock budget")
    parser.add_argument("--peers-dir", type=Path, help="folder holding peers_sine.py and peers_torch.py")
    parser.add_argument("--l2l-src", type=Path, help="unpacked learn2learn 0.2.0 sources")
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding Omniglot's two official zips")
    parser.add_argument("--workdir", type=Path, help="where the Omniglot run is written (default: a temporary one)")
    args = parser.parse_args()
    small = os.environ.get("GPU_CHECK_SMALL") == "1"
    clock = CLOCK.reset(args.minutes)
    print(environment(), flush=True)
    flags = bench_flags()
    perf_flags = ("--compute-dtype", "--conv", "--memory", "--inner-steps", "--remat")
    missing = [flag for flag in perf_flags if flag not in flags]
    if missing:
        print(f"note: this jmeta's bench lacks {', '.join(missing)}: those parts are skipped or run without them")

    section("Throughput: jmeta beside the PyTorch peers on the same device (tasks/s, meta-training)")
    for name in WORKLOADS:
        jmeta_figures = {dtype: bench(name, dtype, flags, small) for dtype in ("float32", "bfloat16")}
        for peer in PEERS:
            figure = run_peer(name, peer, args.peers_dir, args.l2l_src, small)
            if figure is None:
                continue
            for dtype, tasks_per_s in jmeta_figures.items():
                if tasks_per_s:
                    ratio = f"{tasks_per_s:.1f} / {figure:.1f} = {tasks_per_s / figure:.2f}x"
                    print(f"  {name}: jmeta {dtype} / {peer} = {ratio}")
    for name in JMETA_ONLY:
        for dtype in ("float32", "bfloat16"):
            bench(name, dtype, flags, small)

    section("Memory of one meta-step (XLA's compiled arguments + outputs + temporaries), MAML Conv-4 5-way 1-shot")
    if "--memory" in flags and "--inner-steps" in flags:
        for steps in (1, 2) if small else (1, 10, 100):
            for remat in (False, True) if "--remat" in flags else (False,):
                options = ["--memory", "--inner-steps", str(steps), "--steps", "1"] + (["--remat"] if remat else [])
                jmeta_bench("omniglot-maml", options + conv_xla(flags), keep=("memory_bytes",))
    else:
        print("  skipped: `jmeta bench --memory --inner-steps K` is not in this jmeta")

    section(f"MAML Omniglot 5-way 1-shot, meta-trained for what fits of {OMNIGLOT_ITERATIONS:,} iterations")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="jmeta-gpu-check-"))
    train_omniglot(args.data_dir, workdir, clock, small)
    print(f"\ngpu check done in {clock.elapsed():.0f} s")
    return 0


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def environment() -> str:
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return (
        f"jax {jax.__version__} on {jax.device_count()} x {kind} ({jax.default_backend()}); python "
        f"{sys.version.split()[0]}; commands run from {REPO}"
    )


def bench_flags() -> set[str]:
    """The options `jmeta bench` has (the perf work adds --compute-dtype, --conv, --memory, ...)."""
    done = subprocess.run(
        [sys.executable, "-m", "jmeta.cli", "bench", "--help"], capture_output=True, text=True, check=True, cwd=REPO
    )
    return set(re.findall(r"--[a-z][a-z-]+", done.stdout))


def conv_xla(flags: set[str]) -> list[str]:
    return ["--conv", "xla"] if "--conv" in flags else []


def bench(name: str, dtype: str, flags: set[str], small: bool) -> float | None:
    """jmeta's tasks/s on ``name`` in ``dtype`` (None when this jmeta has no --compute-dtype for bfloat16)."""
    options = []
    if dtype != "float32":
        if "--compute-dtype" not in flags:
            print(f"  jmeta {name} {dtype}: skipped (no --compute-dtype in this jmeta's bench)")
            return None
        options += ["--compute-dtype", dtype]
    if name.startswith("omniglot-"):
        options += conv_xla(flags) + ["--steps", "2" if small else "100"]
    elif small:
        options += ["--steps", "100"]
    lines = jmeta_bench(name, options, keep=("jmeta ", "FLOP/s", "tasks/s"))
    last = lines[-1] if lines else ""
    return float(last.split()[1]) if last.startswith("tasks/s ") else None


def jmeta_bench(name: str, options: list[str], keep: tuple[str, ...]) -> list[str]:
    """Runs `jmeta bench NAME OPTIONS`, prints the command and its lines that start with ``keep``."""
    command = ["jmeta", "bench", name, *options]
    print(f"$ {' '.join(command)}", flush=True)
    done = run([sys.executable, "-m", "jmeta.cli", *command[1:]])
    if done.returncode:
        print(f"  failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
        return []
    lines = [line for line in done.stdout.splitlines() if line.startswith(keep)]
    for line in lines:
        print(f"  {line}")
    return lines


def run_peer(name: str, peer: str, peers_dir: Path | None, l2l_src: Path | None, small: bool) -> float | None:
    """The peer's tasks/s on the same device, or None (with the reason printed) when it cannot run."""
    python = os.environ.get("PEERS_PY", sys.executable)
    if peers_dir is None or l2l_src is None or not (peers_dir / "peers_torch.py").is_file() or not l2l_src.is_dir():
        print(f"  peer {peer}: skipped (no --peers-dir with peers_torch.py, or no --l2l-src)")
        return None
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode:
        print(f"  peer {peer}: skipped ({python} has no torch; set PEERS_PY)")
        return None
    steps = ["--steps", "2"] if small else (["--steps", "20"] if name == "omniglot-maml" else ["--steps", "200"])
    command = [python, str(REPO / "benchmarks" / "cuda_peers.py"), name, peer, "--peers-dir", str(peers_dir)]
    command += ["--l2l-src", str(l2l_src), *steps]
    print(f"$ {' '.join(command)}", flush=True)
    done = run(command)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith("tasks/s "):
        print(f"  failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
        return None
    for line in lines:
        print(f"  {line}")
    return float(lines[-1].split()[1])


def train_omniglot(data_dir: Path, workdir: Path, clock: Clock, small: bool) -> None:
    """Meta-trains experiments/omniglot_maml.py in two runs of one workdir: a short one that measures the
    speed and the fixed costs (start, data, compilation, validation, meta-test), then the same run resumed
    (``steps`` may change on resumption) to the most iterations that end within the time left."""
    config = str(REPO / "experiments" / "omniglot_maml.py")
    common = [f"data_dir={data_dir}"] + (["log_every=5", "val_every=10", "val_tasks=10"] if small else [])
    first_steps, reserve = (10, 30.0) if small else (500, 45.0)
    started = time.monotonic()
    if not run_train(config, workdir, [*common, f"steps={first_steps}", "eval_tasks=10"]):
        return
    first_s = time.monotonic() - started
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    meta_batch = json.loads((workdir / "config.json").read_text())["meta_batch"]
    rates = sorted(r["tasks_per_s"] for r in records[1:] or records)  # the first block includes compilation
    seconds_per_step = meta_batch / rates[len(rates) // 2]
    fixed_s = max(0.0, first_s - first_steps * seconds_per_step)
    budget = clock.left() - fixed_s - reserve
    steps = min(OMNIGLOT_ITERATIONS, first_steps + max(0, int(0.9 * budget / seconds_per_step)))
    print(
        f"  first run: {first_steps} iterations in {first_s:.0f} s ({1 / seconds_per_step:.1f} it/s, "
        f"{meta_batch / seconds_per_step:.0f} tasks/s; {fixed_s:.0f} s start, data, compilation, validation and test); "
        f"{clock.left():.0f} s left: resuming to {steps:,} of {OMNIGLOT_ITERATIONS:,} iterations"
    )
    if run_train(config, workdir, [*common, f"steps={steps}"], show=True):
        protocol = json.loads((workdir / "results.json").read_text())["protocol"]
        print(f"  protocol: {json.dumps(protocol)}")
        print(f"  workdir: {workdir}")


def run_train(config: str, workdir: Path, overrides: list[str], show: bool = False) -> bool:
    command = ["jmeta", "train", config, "--workdir", str(workdir), *overrides]
    print(f"$ {' '.join(command)}", flush=True)
    done = run([sys.executable, "-m", "jmeta.cli", *command[1:]])
    if done.returncode:
        print(f"  failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
        return False
    if show:
        for line in done.stdout.strip().splitlines():
            print(f"  {line}")
    return True


if __name__ == "__main__":
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"], check=False)
    sys.exit(main())
