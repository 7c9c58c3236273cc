"""The ``jmeta`` command: ``train``, ``eval``, ``plot``, ``data``, ``predict``, ``bench``.

Example::

    jmeta train experiments/sinusoid_maml.py --workdir runs/sinusoid_maml steps=2000
    jmeta eval --workdir runs/sinusoid_maml eval_tasks=1000
    jmeta train CONFIG --workdir D --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # on each host
    jmeta plot --workdir runs/sinusoid_maml
    jmeta data omniglot --data-dir ../shared/data/omniglot
    jmeta predict runs/distill/student images.npy
    jmeta bench sinusoid-maml --peer l2l
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PEER_SCRIPTS = {"sinusoid-maml": "peers_sine.py", "omniglot-maml": "peers_torch.py"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jmeta", description="Meta-learning in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train and meta-test an experiment config")
    train.add_argument("config", help="a config file, e.g. experiments/sinusoid_maml.py")
    train.add_argument("--workdir", required=True, help="where metrics, results and figures are written")
    train.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. steps=1000 seed=1")
    _add_process_flags(train)

    evaluate = commands.add_parser("eval", help="meta-test the best checkpoint of a workdir again")
    evaluate.add_argument("--workdir", required=True, help="a workdir written by `jmeta train`")
    evaluate.add_argument("--last", action="store_true", help="use the latest checkpoint, not the best")
    evaluate.add_argument("overrides", nargs="*", help="evaluation overrides, e.g. eval_tasks=1000")
    _add_process_flags(evaluate)

    plot = commands.add_parser("plot", help="learning curves (and the sinusoid figure) of a workdir as PNG")
    plot.add_argument("--workdir", required=True, help="a workdir written by `jmeta train`")

    data = commands.add_parser("data", help="prepare a few-shot data set (cached) and print its summary")
    data.add_argument("name", help="omniglot, mini-imagenet, cifar-fs, fc100, mnist, cifar10, digits or iris")
    data.add_argument("--data-dir", help="folder holding the data (omniglot: the two official zips)")
    data.add_argument("--split", help="omniglot: vinyals, maml or background; mnist/cifar10: classes or official")

    predict = commands.add_parser("predict", help="run an exported model (jmeta.export) on inputs from a .npy file")
    predict.add_argument("artifact", help="a folder written by jmeta.export.export_model")
    predict.add_argument("inputs", help="a .npy file of inputs shaped (points, *input_shape)")
    predict.add_argument("--outputs", help="also save the raw outputs (e.g. logits) to this .npy file")

    bench = commands.add_parser("bench", help="measure meta-training throughput; prints 'tasks/s N' last")
    bench.add_argument("name", choices=sorted(PEER_SCRIPTS), help="the workload")
    bench.add_argument(
        "--steps", type=int, help="timed meta-steps after one warm-up (default: 1000 sinusoid, 20 omniglot)"
    )
    bench.add_argument("--batching", default="auto", help="auto, vmap, map, unroll or accumulate")
    bench.add_argument("--chunk-size", type=int, help="tasks per loop iteration for --batching map or accumulate")
    bench.add_argument(
        "--steps-per-call",
        type=int,
        help="meta-steps fused into one compiled call, as `jmeta train` runs them (the last line; default: 100 "
        "for sinusoid, 1 for omniglot); the figure for one `trainer.step` call per meta-step is printed too",
    )
    bench.add_argument(
        "--peer",
        action="append",
        default=[],
        choices=["l2l", "higher", "func"],
        help="also run this PyTorch peer from --peers-dir in the same run and print the ratio "
        '(needs PEERS_PY and L2L_SRC from `eval "$(bash ../shared/bench/setup-peers.sh)"`)',
    )
    bench.add_argument("--peers-dir", default="../shared/bench", help="folder of the peer scripts")

    args, extra = parser.parse_known_args(argv)
    takes_overrides = args.command in ("train", "eval")
    if extra and (not takes_overrides or any(item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if takes_overrides:
        args.overrides += extra  # key=value overrides may also follow --workdir
    try:
        commands_run = {
            "train": _train,
            "eval": _eval,
            "plot": _plot,
            "data": _data,
            "predict": _predict,
            "bench": _bench,
        }
        return commands_run[args.command](args)
    except (ValueError, TypeError, OSError, RuntimeError, KeyError, FloatingPointError) as error:
        print(f"jmeta {args.command}: error: {error}", file=sys.stderr)
        return 2


def _add_process_flags(command: argparse.ArgumentParser) -> None:
    """--coordinator, --num-processes, --process-id: one process of a multi-host run (jax.distributed)."""
    command.add_argument(
        "--coordinator",
        help="HOST:PORT of process 0 for a multi-process run (the same command on every process), or 'auto' "
        "for JAX's cluster detection; without it, SLURM, Open MPI and TPU pods are detected",
    )
    command.add_argument("--num-processes", type=int, help="the number of processes of a multi-process run")
    command.add_argument("--process-id", type=int, help="this process's index, 0 to --num-processes - 1")


def _join(args: argparse.Namespace) -> bool:
    """Joins the processes of a multi-process run, if any; returns whether this one prints results."""
    from jmeta import distributed

    description = distributed.setup(args.coordinator, args.num_processes, args.process_id)
    if description != "one process":
        print(f"jmeta {args.command}: {description}", file=sys.stderr)
    return distributed.is_main_process()


def _train(args: argparse.Namespace) -> int:
    from jmeta.experiment import load_config
    from jmeta.train import format_results, train_and_evaluate

    main_process = _join(args)
    config = load_config(args.config, args.overrides)
    results = train_and_evaluate(config, args.workdir)
    if not main_process:
        return 0
    print(format_results(results))
    outputs = sorted(path.name for path in Path(args.workdir).iterdir() if path.is_file())
    print(f"outputs in {args.workdir}/: {', '.join(outputs)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from jmeta.train import evaluate_workdir, format_results

    main_process = _join(args)
    results = evaluate_workdir(args.workdir, args.overrides, best=not args.last)
    if main_process:
        print(format_results(results))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from jmeta.plotting import plot_workdir

    for path in plot_workdir(args.workdir):
        print(path)
    return 0


def _data(args: argparse.Namespace) -> int:
    from jmeta import data

    options = {"split": args.split} if args.split else {}
    print(data.summary(data.load(args.name, args.data_dir, **options)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Prints one predicted class per input point (its name when the artifact has class names)."""
    import numpy as np

    from jmeta.export import load_predictor

    predictor = load_predictor(args.artifact)
    inputs = np.load(args.inputs)
    outputs = predictor(inputs)
    if args.outputs:
        np.save(args.outputs, outputs)
    classes = np.argmax(outputs, axis=-1)
    for index in classes:
        print(predictor.class_names[index] if predictor.class_names else int(index))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from jmeta import bench

    default_steps, default_per_call = bench.DEFAULTS[args.name]
    steps, per_call = args.steps or default_steps, args.steps_per_call or default_per_call
    peers = {peer: _run_peer(args.name, peer, Path(args.peers_dir)) for peer in args.peer}
    results = [
        bench.run(args.name, steps=steps, steps_per_call=k, batching=args.batching, chunk_size=args.chunk_size)
        for k in sorted({1, per_call})
    ]
    for result in results:
        chunks = f" (chunks of {result.chunk_size})" if result.chunk_size else ""
        print(
            f"jmeta {args.name}: batching={args.batching}{chunks}, {result.steps} meta-steps of "
            f"{result.tasks_per_step} tasks, {result.steps_per_call} per call, in {result.run_s:.2f}s: "
            f"tasks/s {result.tasks_per_s:.1f} (first call, with compilation: {result.compile_s:.2f}s)"
        )
        for peer, tasks_per_s in peers.items():
            print(f"  jmeta / {peer} ({tasks_per_s:.1f} tasks/s) = {result.tasks_per_s / tasks_per_s:.1f}x")
    print(f"tasks/s {results[-1].tasks_per_s:.1f}")
    return 0


def _run_peer(name: str, peer: str, peers_dir: Path) -> float:
    """Runs one PyTorch peer on the same workload and returns its tasks/s (its last line)."""
    python, l2l_src = os.environ.get("PEERS_PY"), os.environ.get("L2L_SRC")
    if not python or not l2l_src:
        raise ValueError(
            "--peer needs PEERS_PY and L2L_SRC in the environment; set them with "
            f'eval "$(bash {peers_dir}/setup-peers.sh)".'
        )
    script = (peers_dir / PEER_SCRIPTS[name]).resolve()
    if not script.is_file():
        raise FileNotFoundError(f"peer script {script} not found; pass --peers-dir DIR holding {script.name}.")
    done = subprocess.run(
        [python, str(script), peer],
        capture_output=True,
        text=True,
        env={**os.environ, "L2L_SRC": l2l_src},
        cwd=peers_dir,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1:] if done.returncode == 0 else []
    if not last or not last[0].startswith("tasks/s "):
        raise ValueError(f"peer {peer} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return float(last[0].split()[1])


if __name__ == "__main__":
    sys.exit(main())
