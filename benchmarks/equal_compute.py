"""Which learner is best at equal training compute: test accuracy (95% CI) against training example passes.

Evaluates the saved checkpoints of several `jmeta train` workdirs (e.g. MAML, ProtoNets, MetaOptNet-R2D2,
Baseline++) on the same test tasks and draws one curve per run into a PNG, with every figure in a JSON
beside it. Train the runs with ``keep_checkpoints=0`` to keep every checkpoint (one per ``val_every``
steps; without validation, one per ``log_every``); otherwise a run holds its last two and its best.

The same test tasks for every run: task ``i`` is ``sampler(fold_in(key, i), 1)`` (``jmeta.evaluate``), with
one sampler, the test sampler of the first workdir's config under the common protocol (``--eval-ways``,
``--eval-shots``, ``--eval-queries``, ``--tasks``), and one key, ``jmeta.train.run_keys(--seed).test``: the
key `jmeta train` and `jmeta eval` test a run of that seed with, so a point at a run's tested step equals
`jmeta eval` of that run with the same protocol. Each other run's own test sampler must draw the same first
tasks from that key (the same data set, split, data options and image size), or the script stops and says
so. Each run adapts with its own largest ``eval_steps`` and its own test-time BatchNorm mode. Training
example passes: ``jmeta.compute`` (its docstring states the convention), from each run's config.

Example (the figure of docs/results.md)::

    python benchmarks/equal_compute.py runs/maml runs/protonet runs/metaoptnet_r2d2 runs/baselinepp \\
        --out runs/equal_compute --eval-ways 5 --eval-shots 1 --eval-queries 15 --tasks 600

``WORKDIR:S1,S2`` evaluates only the checkpoints of steps S1 and S2 of that run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmeta.checkpoint import Checkpoints
from jmeta.experiment import Experiment, apply_override, build
from jmeta.runs import read_config, restore_state
from jmeta.train import meta_test, run_keys
from jmeta.validation import positive_int

SPOT_CHECK_TASKS = 2  # tasks each run's own test sampler must draw exactly as the common one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", help="`jmeta train` workdirs; WORKDIR:S1,S2 for some steps only")
    parser.add_argument("--out", type=Path, required=True, help="folder for equal_compute.png and .json")
    parser.add_argument("--tasks", type=int, default=600, help="test tasks (default 600)")
    parser.add_argument("--seed", type=int, default=0, help="the test key is that of `jmeta train` with this seed")
    parser.add_argument("--eval-ways", type=int, help="ways of the test tasks (default: the first run's)")
    parser.add_argument("--eval-shots", type=int, help="shots of the test tasks (default: the first run's)")
    parser.add_argument("--eval-queries", type=int, help="queries per class (default: the first run's)")
    parser.add_argument("--metric", default="accuracy", help="the metric drawn (default accuracy)")
    args = parser.parse_args(argv)
    runs = [parse_workdir(text) for text in args.workdirs]
    protocol = {"eval_tasks": positive_int("--tasks", args.tasks)}
    for key in ("eval_ways", "eval_shots", "eval_queries"):
        if getattr(args, key) is not None:
            protocol[key] = positive_int(f"--{key.replace('_', '-')}", getattr(args, key))
    results = compare(runs, protocol, seed=args.seed, metric=args.metric)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "equal_compute.json").write_text(json.dumps(results, indent=2) + "\n")
    draw(results, args.out / "equal_compute.png")
    for run in results["runs"]:
        for point in run["points"]:
            print(
                f"{run['label']}: step {point['step']}, {point['training_example_passes']:,} example passes: "
                f"{args.metric} {point['mean']:.4f} ± {point['ci95']:.4f}"
            )
    print(f"wrote {args.out / 'equal_compute.png'} and {args.out / 'equal_compute.json'}")
    return 0


def parse_workdir(text: str) -> tuple[Path, list[int] | None]:
    """``WORKDIR`` or ``WORKDIR:S1,S2``: the workdir and the steps asked for (None: every saved checkpoint)."""
    path, sep, steps = text.rpartition(":") if ":" in text and not Path(text).exists() else (text, "", "")
    if not sep:
        return Path(text), None
    try:
        return Path(path), [positive_int("step", int(step)) for step in steps.split(",")]
    except ValueError:
        raise ValueError(f"a workdir is WORKDIR or WORKDIR:S1,S2,... with positive steps; got {text!r}.") from None


def compare(
    runs: list[tuple[Path, list[int] | None]], protocol: dict[str, int], *, seed: int, metric: str
) -> dict[str, Any]:
    """Evaluates each run's checkpoints on the common test tasks; returns the JSON-able figures."""
    if not runs:
        raise ValueError("give at least one workdir.")
    first_config = read_config(runs[0][0])
    for key in ("eval_ways", "eval_shots", "eval_queries"):
        if key in first_config:
            protocol.setdefault(key, first_config[key])
    experiments = [protocol_experiment(workdir, protocol) for workdir, _ in runs]  # all under the common protocol
    key = run_keys(seed).test
    common = experiments[0][1].family.sample_test
    reference = common(key, SPOT_CHECK_TASKS)
    out = []
    for (workdir, asked), (config, experiment) in zip(runs, experiments, strict=True):
        own = experiment.family.sample_test(key, SPOT_CHECK_TASKS)
        if not same_tasks(own, reference):
            raise ValueError(
                f"{workdir}'s test tasks differ from {runs[0][0]}'s under the same key (data set, split, data "
                "options or image size): its accuracy would not be on the same tasks. Compare runs of one data set."
            )
        experiment = experiment._replace(family=experiment.family._replace(sample_test=common))
        config.eval_steps = (max(config.eval_steps),)
        points = []
        for step, best in checkpoint_steps(workdir, config, asked):
            state = restore_state(workdir, config, experiment.learner, experiment.meta_optimizer, best=best, step=step)
            tested = meta_test(config, experiment, state, key, checkpoint=f"step {step}")
            estimate = tested["results"][str(config.eval_steps[0])]
            if metric not in estimate:
                raise ValueError(f"--metric must be one of {', '.join(estimate)} for {workdir}; got {metric!r}.")
            passes = tested["protocol"]["training_example_passes"]
            points.append({"step": step, "training_example_passes": passes, **estimate[metric]})
        out.append(
            {
                "workdir": str(workdir),
                "label": f"{config.learner} ({workdir.name})",
                "learner": config.learner,
                "inner_steps_at_test": config.eval_steps[0],
                "points": points,
            }
        )
    return {
        "metric": metric,
        "protocol": {
            **protocol,
            "test_key": f"jmeta.train.run_keys({seed}).test; task i = sampler(fold_in(key, i), 1)",
            "sampler": f"the test sampler of {runs[0][0]}'s config under this protocol",
            "ci": "95%, 1.96 * std / sqrt(tasks)",
        },
        "runs": out,
    }


def same_tasks(a: Any, b: Any) -> bool:
    """Whether two task batches hold the same arrays (structure, shapes and values)."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in pairs)


def protocol_experiment(workdir: Path, protocol: dict[str, int]) -> tuple[Any, Experiment]:
    """The run's config under the common test protocol, and its experiment (samplers, learner)."""
    config = copy.deepcopy(read_config(workdir))
    for key, value in protocol.items():
        apply_override(config, f"{key}={value}")
    test_only = copy.deepcopy(config)
    test_only.val_every = 0  # no validation sampler: the eval ways and shots need only fit the test classes
    return config, build(test_only)


def checkpoint_steps(workdir: Path, config: Any, asked: list[int] | None) -> list[tuple[int, bool]]:
    """``(step, in best)`` of the checkpoints to evaluate: those asked for, else every saved one (the latest
    ones and the best), oldest first. Raises ValueError for an asked step that was not kept."""
    checkpoints = Checkpoints(workdir / "checkpoints", best_metric=config.val_metric, read_only=True)
    try:
        latest, best = set(checkpoints.saved_steps()), set(checkpoints.best.all_steps())
    finally:
        checkpoints.close()
    missing = sorted(set(asked or ()) - latest - best)
    if missing:
        raise ValueError(
            f"{workdir} has no checkpoint of steps {missing}; it keeps {sorted(latest | best)} (train with "
            "keep_checkpoints=0 to keep every one)."
        )
    steps = sorted(set(asked) if asked else latest | best)
    if not steps:
        raise FileNotFoundError(f"{workdir} has no checkpoint yet; train first with `jmeta train`.")
    return [(step, step not in latest) for step in steps]


def draw(results: dict[str, Any], path: Path) -> None:
    """One curve per run: the metric (95% CI bars) against training example passes (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for run in results["runs"]:
        x = [p["training_example_passes"] for p in run["points"]]
        y = [p["mean"] for p in run["points"]]
        axis.errorbar(x, y, yerr=[p["ci95"] for p in run["points"]], marker="o", capsize=3, label=run["label"])
    protocol = results["protocol"]
    axis.set_xscale("log")
    axis.set_xlabel("training example passes (jmeta.compute)")
    axis.set_ylabel(f"test {results['metric']} (95% CI)")
    ways = f"{protocol['eval_ways']}-way " if "eval_ways" in protocol else ""
    shots = f"{protocol['eval_shots']}-shot, " if "eval_shots" in protocol else ""
    axis.set_title(f"{ways}{shots}the same {protocol['eval_tasks']} test tasks", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
