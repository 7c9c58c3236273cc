"""Meta-training and meta-testing a config: the loop with its side effects (progress, files, checkpoints).

``workdir`` holds ``config.json`` (the run's config), ``metrics.jsonl`` (one JSON object per logging
step), ``tensorboard/`` (the same as event files), ``checkpoints/{latest,best}`` (Orbax), ``results.json``
(meta-test estimates with their protocol) and, for sinusoid, ``sinusoid_adaptation.png``.

Running the same command again on a workdir resumes from its latest checkpoint and ends with the same
metrics as a run that was never interrupted: the tasks of step ``i`` are drawn from ``fold_in(key, i)``,
so the sampler's state is its key, saved with the parameters and optimiser state.

Every local device is used (config key ``devices``: how many per process, 0 = all), and every process
of a ``jax.distributed`` run (``jmeta.distributed``): each step's tasks are sampled from the same key
whatever the device count and split over one mesh, the state is replicated; only process 0 writes files.

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/sinusoid_maml.py", ["steps=200"])   # doctest: +SKIP
    >>> results = train_and_evaluate(config, "runs/try")                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jmeta import parallel
from jmeta.checkpoint import Checkpoints
from jmeta.distributed import check_meta_batch, is_main_process, run_mesh
from jmeta.evaluation import evaluate
from jmeta.experiment import Experiment, build, describe
from jmeta.meta_trainer import MetaTrainer, TrainState, meta_trainer

# Keys that may change between a run and its resumption: they do not affect meta-training.
# ``devices`` changes only the order of floating-point sums.
RESUMABLE_CHANGES = ("steps", "eval_tasks", "eval_steps", "devices")


class NonFiniteError(FloatingPointError):
    """The loss or gradient norm became NaN or infinite during meta-training."""


class RunKeys(NamedTuple):
    """The PRNG keys of a run, all derived from ``config.seed``."""

    init: jax.Array
    train: jax.Array
    val: jax.Array
    test: jax.Array
    plot: jax.Array


def run_keys(seed: int) -> RunKeys:
    return RunKeys(*jax.random.split(jax.random.key(seed), 5))


def run_mesh_of(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The devices a run uses: ``config.devices`` per process (0 or absent: all) of every process."""
    return run_mesh(config.get("devices", 0))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Meta-trains as ``config`` says (resuming from ``workdir`` if it holds a checkpoint), then meta-tests
    the best-by-validation parameters and writes the outputs to ``workdir``.

    A config with a ``program`` key runs that program of ``jmeta.programs`` instead (systems that are not
    a meta-learner trained episode by episode, e.g. supervised training or algorithm selection)."""
    if config.get("program"):
        from jmeta.programs import run_program

        return run_program(config, Path(workdir))
    experiment = build(config)
    check_meta_batch(config.meta_batch, run_mesh_of(config))
    workdir = prepare_workdir(workdir, config)
    _, best, keys = meta_train_workdir(config, experiment, workdir)
    return finish(config, experiment, best, keys, workdir)


@contextlib.contextmanager
def opened_run(
    config: ml_collections.ConfigDict, experiment: Experiment, workdir: Path
) -> Iterator[tuple[MetaTrainer, RunKeys, Checkpoints]]:
    """The trainer, keys and checkpoints of the run in ``workdir``; the checkpoints are closed on exit."""
    trainer = meta_trainer(experiment.learner, experiment.meta_optimizer, batching=config.batching)
    sharding = parallel.replicated(run_mesh_of(config))
    checkpoints = Checkpoints(workdir / "checkpoints", best_metric=config.val_metric, sharding=sharding)
    try:
        yield trainer, run_keys(config.seed), checkpoints
    finally:
        checkpoints.close()


def meta_train_workdir(
    config: ml_collections.ConfigDict, experiment: Experiment, workdir: Path
) -> tuple[TrainState, TrainState, RunKeys]:
    """Meta-trains in ``workdir``, resuming from its latest checkpoint; returns the last state, the best by
    validation, and the run's keys."""
    with opened_run(config, experiment, workdir) as (trainer, keys, checkpoints):
        state = resume_or_init(trainer, checkpoints, keys)
        last = meta_train(config, experiment, trainer, state, keys, checkpoints, workdir)
        best, _ = checkpoints.restore(*abstract_run_state(trainer, keys), best=True)
    return last, best, keys


def evaluate_workdir(workdir: str | Path, overrides: list[str] = (), *, best: bool = True) -> dict[str, Any]:
    """Meta-tests the best (or latest) checkpoint of a finished or running workdir again.

    Only evaluation keys (``eval_tasks``, ``eval_steps``) and ``devices`` may be overridden.
    """
    from jmeta.experiment import apply_override, apply_run_defaults

    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(f"{workdir / 'config.json'} not found: is {str(workdir)!r} a `jmeta train` workdir?")
    config = apply_run_defaults(ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text())))
    for override in overrides:
        if override.partition("=")[0] not in ("eval_tasks", "eval_steps", "devices"):
            raise ValueError(
                f"jmeta eval only takes eval_tasks=..., eval_steps=... and devices=... overrides; got {override!r}."
            )
        apply_override(config, override)
    experiment = build(config)
    with opened_run(config, experiment, workdir) as (trainer, keys, checkpoints):
        state, _ = checkpoints.restore(*abstract_run_state(trainer, keys), best=best)
    return finish(config, experiment, state, keys, workdir)


def finish(
    config: ml_collections.ConfigDict, experiment: Experiment, state: TrainState, keys: RunKeys, workdir: Path
) -> dict[str, Any]:
    """Meta-tests ``state``, writes ``results.json`` (and the sinusoid figure); returns the results."""
    results = meta_test(config, experiment, state, keys.test)
    if not is_main_process():
        return results
    write_atomically(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    if config.task == "sinusoid":
        from jmeta.plotting import plot_sinusoid_adaptation

        plot_sinusoid_adaptation(
            experiment.learner,
            state.params,
            state.model_state,
            keys.plot,
            shots=config.eval_shots,
            steps=(0, 1, 10),
            path=workdir / "sinusoid_adaptation.png",
        )
    return results


def prepare_workdir(workdir: str | Path, config: ml_collections.ConfigDict) -> Path:
    """Creates ``workdir`` with ``config.json``, or checks that an existing run there has the same config."""
    workdir = Path(workdir)
    if is_main_process():
        workdir.mkdir(parents=True, exist_ok=True)
    saved_path, current = workdir / "config.json", describe(config)
    if saved_path.exists():
        saved = json.loads(saved_path.read_text())
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if set(changed) - set(RESUMABLE_CHANGES):
            raise ValueError(
                f"workdir {str(workdir)!r} holds a run with a different config (keys {changed} differ); use a "
                f"new --workdir, or the same config (only {RESUMABLE_CHANGES} may change when resuming)."
            )
    if is_main_process():
        write_atomically(saved_path, json.dumps(current, indent=2) + "\n")
    return workdir


def abstract_run_state(trainer: MetaTrainer, keys: RunKeys) -> tuple[TrainState, jax.Array]:
    """Shapes and dtypes of what a checkpoint holds, for restoring it."""
    return jax.eval_shape(trainer.init, keys.init), jax.eval_shape(lambda: keys.train)


def resume_or_init(trainer: MetaTrainer, checkpoints: Checkpoints, keys: RunKeys) -> TrainState:
    if checkpoints.latest_step() is None:
        return trainer.init(keys.init)
    state, sampler_key = checkpoints.restore(*abstract_run_state(trainer, keys))
    if not np.array_equal(jax.random.key_data(sampler_key), jax.random.key_data(keys.train)):
        raise ValueError("the checkpoint's sampler key does not match config.seed; use a new --workdir.")
    return state


def meta_train(
    config: ml_collections.ConfigDict,
    experiment: Experiment,
    trainer: MetaTrainer,
    state: TrainState,
    keys: RunKeys,
    checkpoints: Checkpoints,
    workdir: Path,
) -> TrainState:
    """Runs meta-steps until ``config.steps``, ``config.log_every`` per compiled call; validates and
    checkpoints every ``config.val_every`` steps and at the end. Each step's tasks are split over the
    run's mesh; only the main process writes the metrics."""
    from tensorboardX import SummaryWriter

    mesh, main = run_mesh_of(config), is_main_process()

    def scan_steps(state: TrainState, sampler: Any, count: int) -> tuple[TrainState, dict[str, jax.Array]]:
        def one_step(state: TrainState, _: None) -> tuple[TrainState, dict[str, jax.Array]]:
            tasks = sampler(jax.random.fold_in(keys.train, state.step), config.meta_batch)
            return trainer.update(state, parallel.constrain_tasks(tasks, mesh))

        return jax.lax.scan(one_step, state, length=count)

    run_steps = jax.jit(scan_steps, static_argnums=2, donate_argnums=0, out_shardings=parallel.replicated(mesh))
    state, sampler = parallel.replicate((state, experiment.family.sample_train), mesh)
    metrics_path = workdir / "metrics.jsonl"
    if main:
        keep_metrics_until(metrics_path, int(state.step))
    with (
        open(metrics_path if main else os.devnull, "a") as log,
        SummaryWriter(str(workdir / "tensorboard"), write_to_disk=main) as board,
        tqdm(
            total=config.steps,
            initial=min(int(state.step), config.steps),
            desc="meta-train",
            unit="step",
            disable=not main,
        ) as bar,
    ):
        while (done := int(state.step)) < config.steps:
            count = min(config.log_every, config.steps - done)
            start = time.perf_counter()
            state, metrics = run_steps(state, sampler, count)
            record = {"step": done + count, **check_finite(jax.device_get(metrics), done, checkpoints)}
            record["tasks_per_s"] = count * config.meta_batch / (time.perf_counter() - start)
            checkpoint_now = record["step"] % config.val_every == 0 or record["step"] == config.steps
            if checkpoint_now:
                record.update(validate(config, experiment, state, keys.val))
            # The line goes out before the checkpoint: a resumed run drops lines past its checkpoint.
            log.write(json.dumps(record) + "\n")
            log.flush()
            if checkpoint_now:
                checkpoints.save(state, keys.train, validation={config.val_metric: record[f"val_{config.val_metric}"]})
            for name, value in record.items():
                if name != "step":
                    board.add_scalar(name, value, record["step"])
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"})
            bar.update(count)
    return state


def check_finite(metrics: dict[str, np.ndarray], first_step: int, checkpoints: Checkpoints) -> dict[str, float]:
    """Means of per-step metrics; raises ``NonFiniteError`` naming the first bad step and quantity."""
    for i in range(len(next(iter(metrics.values())))):
        bad = [name for name, values in metrics.items() if not math.isfinite(values[i])]
        if bad:
            last = checkpoints.latest_step()
            kept = "no checkpoint was written yet" if last is None else f"the last good checkpoint (step {last}) stays"
            raise NonFiniteError(
                f"{', '.join(bad)} became {metrics[bad[0]][i]} at meta-step {first_step + i + 1}; {kept} in "
                f"{checkpoints.latest.directory}. Lower meta_lr or inner_lr, or check the data."
            )
    return {name: float(np.mean(values)) for name, values in metrics.items()}


def validate(
    config: ml_collections.ConfigDict, experiment: Experiment, state: TrainState, key: jax.Array
) -> dict[str, float]:
    """Query metrics on ``config.val_tasks`` validation tasks after ``config.inner_steps`` inner steps: the
    objective being meta-trained. (More steps than were trained can diverge on a few tasks, and such
    outliers would then decide which checkpoint is kept.)"""
    steps = config.inner_steps
    estimates = evaluate(
        experiment.learner,
        state.params,
        state.model_state,
        experiment.family.sample_val,
        key,
        num_tasks=config.val_tasks,
        steps=(steps,),
        batching_strategy=config.batching,
        mesh=run_mesh_of(config),
    )[steps]
    return {f"val_{name}": estimate.mean for name, estimate in estimates.items()}


def keep_metrics_until(path: Path, step: int) -> None:
    """Drops logged lines past ``step`` (written after the checkpoint a run resumes from)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_atomically(path, "".join(line + "\n" for line in lines))


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def meta_test(
    config: ml_collections.ConfigDict, experiment: Experiment, state: TrainState, key: jax.Array
) -> dict[str, Any]:
    """Evaluates on ``config.eval_tasks`` test tasks; returns the estimates with their protocol."""
    estimates = evaluate(
        experiment.learner,
        state.params,
        state.model_state,
        experiment.family.sample_test,
        key,
        num_tasks=config.eval_tasks,
        steps=config.eval_steps,
        batching_strategy=config.batching,
        mesh=run_mesh_of(config),
    )
    return {
        "protocol": {
            "task": config.task,
            "ways": config.get("eval_ways", config.get("ways")),
            "tasks": config.eval_tasks,
            "shots": config.eval_shots,
            "queries_per_task": config.eval_queries * (config.get("eval_ways", config.get("ways")) or 1),
            "inner_steps": list(config.eval_steps),
            "inner_lr": config.inner_lr,
            "batch_norm": config.get("batch_norm", "none"),
            "checkpoint": f"best by validation {config.val_metric} ({config.val_tasks} tasks), step {int(state.step)}",
            "ci": "95%, 1.96 * std / sqrt(tasks)",
            "seed": config.seed,
            "devices": run_mesh_of(config).size,
            "processes": jax.process_count(),
        },
        "results": {str(k): {name: e._asdict() for name, e in by_metric.items()} for k, by_metric in estimates.items()},
        "published": dict(config.published),
        "published_source": config.published_source,
    }


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of meta-test results beside the published numbers."""
    names = list(next(iter(results["results"].values())))
    header = f"{'inner steps':>11}  " + "  ".join(f"{name + ' (mean ± 95% CI)':>26}" for name in names)
    lines = [header + f"  {'published':>9}"]
    for steps, by_metric in results["results"].items():
        published = results["published"].get(steps)
        cells = "  ".join(f"{by_metric[n]['mean']:>17.4f} ± {by_metric[n]['ci95']:<6.4f}" for n in names)
        lines.append(f"{steps:>11}  {cells}  {'' if published is None else published:>9}")
    protocol = results["protocol"]
    lines.append(
        f"protocol: {protocol['tasks']} test tasks, {protocol['shots']}-shot, {protocol['queries_per_task']} "
        f"query points per task, inner lr {protocol['inner_lr']}, {protocol['checkpoint']}; "
        f"published: {results['published_source']}"
    )
    return "\n".join(lines)
