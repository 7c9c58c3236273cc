"""The ``jmeta`` command: ``train``, ``eval``, ``plot``, ``data``, ``predict``, ``bench``.

Example::

    jmeta train experiments/sinusoid_maml.py --workdir runs/sinusoid_maml steps=2000
    jmeta eval --workdir runs/sinusoid_maml eval_tasks=1000
    jmeta train CONFIG --workdir D --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # on each host
    jmeta plot --workdir runs/sinusoid_maml
    jmeta data omniglot --data-dir ~/jmeta_data/omniglot
    jmeta data folder --data-dir my_images --option image_size=32 --option split_file=splits.csv
    jmeta predict runs/distill/student images.npy
    jmeta predict --workdir runs/sinusoid_maml --support-x xs.npy --support-y ys.npy --query xq.npy
    jmeta bench sinusoid-maml --peer l2l
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PEER_SCRIPTS = {"sinusoid-maml": "peers_sine.py", "omniglot-maml": "peers_torch.py"}
BENCH_WORKLOADS = [  # jmeta.bench.WORKLOADS
    "omniglot-imaml",
    "omniglot-maml",
    "omniglot-matchingnet",
    "omniglot-metaoptnet-r2d2",
    "sinusoid-maml",
]
# Errors printed as one line "jmeta COMMAND: error: ..." (exit status 2); others keep their traceback.
REPORTED_ERRORS = (ValueError, TypeError, OSError, RuntimeError, KeyError, FloatingPointError, ImportError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jmeta", description="Meta-learning in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train and meta-test an experiment config")
    train.add_argument("config", help="a config file, e.g. experiments/sinusoid_maml.py")
    train.add_argument("--workdir", required=True, help="where metrics, results and figures are written")
    train.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. steps=1000 seed=1")
    train.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module (or .py file) that registers the config's own learner, task family, model or data set; "
        "recorded in the run's config (key imports), so every later command imports it too",
    )
    _add_process_flags(train)

    evaluate = commands.add_parser(
        "eval", help="meta-test the best checkpoint of a workdir again (also while it trains); writes eval_*.json"
    )
    evaluate.add_argument("--workdir", required=True, help="a workdir written by `jmeta train`")
    evaluate.add_argument("--last", action="store_true", help="use the latest checkpoint, not the best")
    evaluate.add_argument(
        "overrides",
        nargs="*",
        help="evaluation overrides: eval_tasks, eval_steps, eval_ways, eval_shots, eval_queries, eval_batch_norm "
        "(transductive, support or running), devices, e.g. eval_tasks=1000; member=K for one member of a population",
    )
    _add_process_flags(evaluate)

    plot = commands.add_parser("plot", help="learning curves (and the sinusoid figure) of a workdir as PNG")
    plot.add_argument("--workdir", required=True, help="a workdir written by `jmeta train`")

    data = commands.add_parser("data", help="prepare a few-shot data set (cached) and print its summary")
    data.add_argument(
        "name",
        help="omniglot, folder, mini-imagenet, cifar-fs, fc100, mnist, cifar10, digits, iris, mnist-idx, "
        "mnist-sample, or a name registered with jmeta.data.register_dataset",
    )
    data.add_argument(
        "--data-dir",
        help="folder holding the data (omniglot: the two official zips; folder: one sub-folder of images per "
        "class); without it, TFDS where the data set has a TFDS builder",
    )
    data.add_argument(
        "--split",
        help="omniglot: vinyals, maml or background; mnist/cifar10: classes or official; or a registered split",
    )
    data.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any option of the data set's loader (repeatable), the value a Python literal or else text, e.g. "
        "--option image_size=32 --option 'fractions=(0.6,0.2,0.2)' --option split_file=splits.csv; also "
        "val_fraction=0.1",
    )

    predict = commands.add_parser(
        "predict",
        help="run an exported model (jmeta.export) on inputs from a .npy file, or adapt a trained run (--workdir) "
        "to a support set and predict a query set",
    )
    predict.add_argument("artifact", nargs="?", help="a folder written by jmeta.export.export_model")
    predict.add_argument("inputs", nargs="?", help="a .npy file of inputs shaped (points, *input_shape)")
    predict.add_argument("--outputs", help="also save the raw outputs (e.g. logits) to this .npy file")
    predict.add_argument("--workdir", help="a workdir written by `jmeta train` (instead of an artifact)")
    predict.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="with --workdir")
    predict.add_argument("--member", type=int, help="with --workdir of a population: the member K to predict with")
    predict.add_argument("--support-x", help=".npy of support inputs, (points, *input_shape), images in [0, 1]")
    predict.add_argument("--support-y", help=".npy of support labels (points,), or targets (points, outputs)")
    predict.add_argument("--support", help="instead of --support-x/-y: a folder holding a folder of images per class")
    predict.add_argument("--query", help=".npy of query inputs, an image file, or a folder of images")
    predict.add_argument("--steps", type=int, help="inner steps (default: the most the run was meta-tested with)")

    bench = commands.add_parser(
        "bench",
        help="measure a meta-training step: tasks/s and FLOP utilisation ('tasks/s N' last), or with --memory "
        "its compiled memory ('memory_bytes N' last); gmm-em: EM against scikit-learn ('EM iterations/s N' last)",
    )
    bench.add_argument("name", choices=sorted([*BENCH_WORKLOADS, "gmm-em", "nav2d-maml"]), help="the workload")
    bench.add_argument(
        "--steps", type=int, help="timed meta-steps after one warm-up (default: 1000 sinusoid, 20 omniglot-maml)"
    )
    bench.add_argument("--batching", default="auto", help="auto, vmap, map, unroll or accumulate")
    bench.add_argument("--chunk-size", type=int, help="tasks per loop iteration for --batching map or accumulate")
    bench.add_argument(
        "--steps-per-call",
        type=int,
        help="meta-steps fused into one compiled call, as `jmeta train` runs them (the last line; default: 100 "
        "for sinusoid, 1 for omniglot); the figure for one `trainer.step` call per meta-step is printed too",
    )
    bench.add_argument("--inner-steps", type=int, default=1, help="inner steps of the learner (default 1)")
    bench.add_argument("--remat", action="store_true", help="checkpoint the inner loop (memory ~ log inner steps)")
    bench.add_argument(
        "--compute-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="dtype of the model's forward and backward passes (parameters and losses stay float32)",
    )
    bench.add_argument(
        "--conv",
        default="auto",
        choices=["auto", "xla", "patches"],
        help="Conv-4's convolutions: XLA's, matrix products over patches, or auto (patches on CPU only)",
    )
    bench.add_argument(
        "--memory",
        action="store_true",
        help="compile one meta-step and print XLA's compiled memory of it (arguments + outputs + temporaries) "
        "as the last line, 'memory_bytes N', instead of timing it",
    )
    bench.add_argument(
        "--peer",
        action="append",
        default=[],
        choices=["l2l", "higher", "func", "sklearn", "torch"],
        help="also run this PyTorch peer from --peers-dir in the same run and print the ratio "
        '(needs PEERS_PY and L2L_SRC from `eval "$(bash ../shared/bench/setup-peers.sh)"`); '
        "sklearn: scikit-learn's GaussianMixture, for gmm-em; torch: benchmarks/peers_nav2d_torch.py, for nav2d-maml "
        "(needs PEERS_PY only)",
    )
    bench.add_argument("--peers-dir", default="../shared/bench", help="folder of the peer scripts")
    bench.add_argument(
        "--population",
        type=int,
        help="N members as one program (vmap and lax.map over members) against N sequential runs, with the "
        "memory per member (jmeta.population_bench)",
    )

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
    except Exception as error:  # a full disk is one line whichever layer (Orbax, TensorStore, Python) raised it
        from jmeta.storage import as_disk_full

        if not isinstance(error, REPORTED_ERRORS) and as_disk_full(error) is None:
            raise
        print(f"jmeta {args.command}: error: {as_disk_full(error) or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C: one line, no traceback (meta-training says where it was)
        resume = "; rerun the same command to resume" if args.command == "train" else ""
        print(f"jmeta {args.command}: {str(interrupt) or 'interrupted' + resume}", file=sys.stderr)
        return 130


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
    from jmeta.experiment import is_population, load_config
    from jmeta.train import format_results, train_and_evaluate

    main_process = _join(args)
    config = load_config(args.config, args.overrides, imports=args.imports)
    if config.get("program"):  # a source system (jmeta.systems), not a meta-learner trained episode by episode
        from jmeta.systems.programs import run_program

        results = run_program(config, args.workdir)
    elif is_population(config):  # seeds or sweep: many runs as one program
        from jmeta.population import format_population, train_population

        results = train_population(config, args.workdir)
        format_results = format_population
    else:
        results = train_and_evaluate(config, args.workdir)
    if not main_process:
        return 0
    print(format_results(results))
    outputs = sorted(p.name for p in Path(args.workdir).iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"outputs in {args.workdir}/: {', '.join(outputs)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from jmeta.experiment import is_population
    from jmeta.runs import read_config
    from jmeta.train import evaluate_workdir, format_results

    main_process = _join(args)
    if is_population(read_config(Path(args.workdir))):  # member=K or every member
        from jmeta.population import evaluate_population_workdir, format_population

        evaluate_workdir, format_results = evaluate_population_workdir, format_population
    results, path = evaluate_workdir(args.workdir, args.overrides, best=not args.last)
    if main_process:
        print(format_results(results))
        if path is not None:  # else evaluate_workdir said why it could not write them
            print(f"results written to {path} (the training run's results.json is unchanged)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from jmeta.experiment import is_population
    from jmeta.plotting import plot_workdir
    from jmeta.runs import read_config

    config_path = Path(args.workdir) / "config.json"
    labels = None
    if config_path.is_file() and is_population(config := read_config(Path(args.workdir))):
        from jmeta.population import member_labels

        labels = member_labels(config)
    for path in plot_workdir(args.workdir, labels):
        print(path)
    return 0


def _data(args: argparse.Namespace) -> int:
    from jmeta import data

    options = data.registry.parse_options(args.name, [*args.option, *([f"split={args.split!r}"] if args.split else [])])
    print(data.summary(data.load(args.name, args.data_dir, **options)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Prints one predicted class per input point (its name when the artifact has class names)."""
    import numpy as np

    from jmeta.export import load_predictor

    run_options = ("workdir", "support_x", "support_y", "support", "query", "steps")
    if args.workdir:
        return _predict_run(args)
    if not args.artifact or not args.inputs:
        raise ValueError("jmeta predict needs an artifact folder and an inputs .npy file, or --workdir RUN.")
    given = [f"--{name.replace('_', '-')}" for name in run_options if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} only apply with --workdir; an exported artifact predicts directly.")

    predictor = load_predictor(args.artifact)
    inputs = np.load(args.inputs)
    outputs = predictor(inputs)
    if args.outputs:
        np.save(args.outputs, outputs)
    classes = np.argmax(outputs, axis=-1)
    for index in classes:
        print(predictor.class_names[index] if predictor.class_names else int(index))
    return 0


def _predict_run(args: argparse.Namespace) -> int:
    """Adapts a trained run to a support set and prints one prediction per query point: its class (the
    class folder's name with --support) or, for regression, its values."""
    import numpy as np

    from jmeta import data, population, runs
    from jmeta.experiment import components

    if args.artifact or args.inputs:
        raise ValueError("give either --workdir or an artifact folder with an inputs file, not both.")
    if not args.query or bool(args.support) == bool(args.support_x or args.support_y):
        raise ValueError(
            "jmeta predict --workdir needs --query and either --support-x with --support-y (.npy files) or "
            "--support (a folder holding a folder of images per class)."
        )
    if not args.support and not (args.support_x and args.support_y):
        raise ValueError("--support-x and --support-y go together: the support inputs and their labels.")
    run = population.load_run(args.workdir, args.checkpoint, member=args.member)
    class_names: list[str] = []
    if args.support and run.config.task not in data.dataset_names():
        raise ValueError(
            f"--support reads a folder of images per class, for a run on an image data set; this run's task "
            f"{run.config.task!r} is not one. Give --support-x and --support-y (.npy files) instead."
        )
    if args.support:
        folders = sorted(p for p in Path(args.support).iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [runs.image_files(folder) for folder in folders]
        if not folders or not all(files):
            raise ValueError(f"--support {args.support} must hold one folder of images per class (each non-empty).")
        support_x = runs.read_images([f for group in files for f in group], run)
        support_y = np.repeat(np.arange(len(folders)), [len(group) for group in files])
        class_names = [folder.name for folder in folders]
    else:
        support_x, support_y = np.load(args.support_x), np.load(args.support_y)
    query_x, query_names = _query_inputs(Path(args.query), run)
    outputs = runs.predict(run, support_x, support_y, query_x, steps=args.steps)
    if args.outputs:
        np.save(args.outputs, outputs)
    for i, row in enumerate(outputs):
        if components(run.config).task.properties["labels"] == "values":
            prediction = " ".join(f"{value:.6g}" for value in row)
        else:
            label = int(np.argmax(row))
            prediction = class_names[label] if class_names else str(label)
        print(f"{query_names[i]}\t{prediction}" if query_names else prediction)
    return 0


def _query_inputs(path: Path, run: object) -> tuple[object, list[str]]:
    """``--query``: a folder of images, one image file (read as the run's data set reads its images), or a
    .npy file of inputs; returns the inputs and the image files' names (none for .npy)."""
    import numpy as np

    from jmeta import runs
    from jmeta.data.files import IMAGE_SUFFIXES, skip_reason

    if path.is_dir() or (path.is_file() and skip_reason(path.name) is None):
        files = runs.image_files(path) if path.is_dir() else [path]
        return runs.read_images(files, run), [file.name for file in files]
    accepted = f"a .npy file of inputs (points, *input_shape), an image file ({' '.join(IMAGE_SUFFIXES)}) or a folder"
    if not path.exists():
        raise FileNotFoundError(f"--query {str(path)!r} does not exist; --query takes {accepted} of them.")
    try:
        return np.load(path, allow_pickle=False), []
    except (OSError, ValueError):
        raise ValueError(
            f"--query {str(path)!r} is not an image file and numpy cannot read it as a .npy file of numbers; "
            f"--query takes {accepted} of them."
        ) from None


def _bench(args: argparse.Namespace) -> int:
    if args.name == "gmm-em" or "sklearn" in args.peer:
        return _bench_gmm(args)
    if args.name == "nav2d-maml" or "torch" in args.peer:
        return _bench_nav2d(args)
    from jmeta import bench

    setting = {
        "batching": args.batching,
        "chunk_size": args.chunk_size,
        "inner_steps": args.inner_steps,
        "remat": args.remat,
        "compute_dtype": args.compute_dtype,
        "conv": args.conv,
    }
    described = (
        f"batching={args.batching}{f' (chunks of {args.chunk_size})' if args.chunk_size else ''}, "
        f"inner_steps={args.inner_steps}{', remat' if args.remat else ''}, compute_dtype={args.compute_dtype}, "
        f"conv={args.conv}"
    )
    if args.memory:
        if args.peer:
            raise ValueError("--peer does not apply with --memory (the peers are timed, not compiled by XLA).")
        used = bench.memory(args.name, **setting)
        print(
            f"jmeta {args.name}: {described}: one meta-step, compiled in {used.compile_s:.1f}s: arguments "
            f"{used.argument}, outputs {used.output} ({used.alias} of them in donated argument buffers), "
            f"temporaries {used.temp} bytes"
        )
        print(f"memory_bytes {used.total}")
        return 0
    default_steps, default_per_call = bench.DEFAULTS[args.name]
    steps, per_call = args.steps or default_steps, args.steps_per_call or default_per_call
    if args.population is not None:  # one population program against N sequential runs
        from jmeta import population_bench

        results = population_bench.compare(args.name, args.population, steps=steps, steps_per_call=per_call, **setting)
        print(population_bench.report(args.name, results))
        return 0
    if args.peer and args.name not in PEER_SCRIPTS:
        raise ValueError(f"--peer needs a workload with a PyTorch peer ({', '.join(PEER_SCRIPTS)}); got {args.name}.")
    peers = {peer: _run_peer(args.name, peer, Path(args.peers_dir)) for peer in args.peer}
    results = [bench.run(args.name, steps=steps, steps_per_call=k, **setting) for k in sorted({1, per_call})]
    peak = bench.measure_peak_flops()
    for result in results:
        print(
            f"jmeta {args.name}: {described}, {result.steps} meta-steps of {result.tasks_per_step} tasks, "
            f"{result.steps_per_call} per call, in {result.run_s:.2f}s: tasks/s {result.tasks_per_s:.1f} "
            f"(first call, with compilation: {result.compile_s:.2f}s)"
        )
        for peer, tasks_per_s in peers.items():
            print(f"  jmeta / {peer} ({tasks_per_s:.1f} tasks/s) = {result.tasks_per_s / tasks_per_s:.1f}x")
    last = results[-1]
    print(
        f"FLOPs per meta-step {last.flops_per_step:.3g} (matrix products and convolutions, loop bodies counted "
        f"per trip; XLA's cost analysis of the compiled call, loop bodies once: {last.xla_flops:.3g})"
    )
    print(f"FLOP/s {last.flops_per_s:.3g} = {100 * last.flops_per_s / peak:.1f}% of the measured peak {peak:.3g}")
    print(f"tasks/s {last.tasks_per_s:.1f}")
    return 0


def _bench_gmm(args: argparse.Namespace) -> int:
    """``jmeta bench gmm-em [--peer sklearn] [--steps ITERATIONS]`` (``jmeta.systems.gmm.bench_em``)."""
    from jmeta.systems import gmm

    if args.name != "gmm-em" or set(args.peer) - {"sklearn"}:
        raise ValueError(
            f"--peer sklearn goes with gmm-em only, and gmm-em takes no other peer; got {args.name} "
            f"with --peer {' '.join(args.peer)}."
        )
    meta_step_flags = (
        args.batching != "auto",
        args.chunk_size,
        args.steps_per_call,
        args.inner_steps != 1,
        args.remat,
        args.memory,
        args.compute_dtype != "float32",
        args.conv != "auto",
    )
    if any(meta_step_flags):
        raise ValueError(
            "gmm-em takes --steps (EM iterations) and --peer sklearn only, not --batching, "
            "--chunk-size, --steps-per-call, --inner-steps, --remat, --memory, --compute-dtype or --conv."
        )
    print(gmm.format_bench(gmm.bench_em(iterations=args.steps or 20, peer="sklearn" in args.peer)))
    return 0


def _bench_nav2d(args: argparse.Namespace) -> int:
    """``jmeta bench nav2d-maml [--peer torch] [--steps META_ITERATIONS]`` (``jmeta.rl.bench``)."""
    from jmeta.rl import bench

    if args.name != "nav2d-maml" or set(args.peer) - {"torch"}:
        raise ValueError(
            f"--peer torch goes with nav2d-maml only, and nav2d-maml takes no other peer; got {args.name} "
            f"with --peer {' '.join(args.peer)}."
        )
    python = os.environ.get("PEERS_PY") if args.peer else None
    if args.peer and not python:
        raise ValueError(
            "--peer torch needs PEERS_PY (a Python with torch) in the environment; set it with "
            f'eval "$(bash {args.peers_dir}/setup-peers.sh)".'
        )
    print(bench.format_bench(bench.bench_nav2d(iterations=args.steps or 3, peer_python=python)))
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
