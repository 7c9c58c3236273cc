"""Meta-training and meta-testing a config: the loop with its side effects (progress, files, checkpoints).

``workdir`` holds ``config.json`` (the run's config), ``model_input.json`` (the shape of one input, to
rebuild the model without data: ``jmeta.load_run``), ``metrics.jsonl`` (one JSON object per logging
step), ``tensorboard/`` (the same as event files), ``checkpoints/{latest,best}`` (Orbax), ``results.json``
(meta-test estimates with their protocol), ``eval_*.json`` (from ``jmeta eval``) and, for task families
that declare a ``figure`` (sinusoid), ``<task>_adaptation.png``. One ``jmeta train`` at a time writes to a
workdir (``jmeta.lock``).

Running the same command again on a workdir resumes from its latest checkpoint and ends with the same
metrics as a run that was never interrupted: the tasks of step ``i`` are drawn from ``fold_in(key, i)``,
so the sampler's state is its key, saved with the parameters and optimiser state. Ctrl-C raises
``TrainingInterrupted``, whose message says where the run stopped. A damaged checkpoint is set aside
(``<step>.damaged-<n>``) and the run resumes from the newest intact one (``Checkpoints.resume``); a full
disk raises ``jmeta.storage.DiskFullError``, one line whichever layer reported it.

Every local device is used (config key ``devices``: how many per process, 0 = all), and every process
of a ``jax.distributed`` run (``jmeta.distributed``): each step's tasks are sampled from the same key
whatever the device count and split over one mesh (padded with tasks of weight 0 when they do not divide
over it: ``jmeta.parallel.pad_with_weights``), the state is replicated; only process 0 writes files.

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/sinusoid_maml.py", ["steps=200"])   # doctest: +SKIP
    >>> results = train_and_evaluate(config, "runs/try")                      # doctest: +SKIP
"""

from __future__ import annotations

import ast
import contextlib
import copy
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from jmeta import parallel
from jmeta.checkpoint import HIGHER_IS_BETTER, Checkpoints, interrupt_deferred, interrupts_remembered
from jmeta.compute import passes_per_step, training_example_passes
from jmeta.distributed import is_main_process, run_mesh
from jmeta.evaluation import BATCH_NORM_MODES, evaluate
from jmeta.experiment import (
    Experiment,
    apply_override,
    apply_run_defaults,
    build,
    check_config,
    components,
    describe,
    family_component,
    is_population,
)
from jmeta.lock import workdir_lock
from jmeta.meta_trainer import MetaTrainer, NonFiniteError, TrainState, meta_trainer
from jmeta.registry import PROGRAMS
from jmeta.runs import read_config, restore_state, save_model_input
from jmeta.storage import close_event_writer, disk_full_reported
from jmeta.tasks.checks import check_finite_tasks

# Keys that may change between a run and its resumption: they do not affect meta-training.
# ``devices`` changes only the order of floating-point sums.
RESUMABLE_CHANGES = ("steps", "eval_tasks", "eval_steps", "eval_batch_norm", "devices", "keep_checkpoints")
# Keys `jmeta eval` may override: they only change the meta-test protocol (or the devices it runs on).
EVAL_OVERRIDES = ("eval_tasks", "eval_steps", "eval_ways", "eval_shots", "eval_queries", "eval_batch_norm", "devices")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during meta-training; the message names the step reached and the last checkpoint."""


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
    the best-by-validation parameters (the last ones with ``val_every=0``) and writes the outputs to
    ``workdir``, holding its lock throughout (``WorkdirBusyError`` if another run holds it).

    A config with a ``program`` key is not a meta-learner's: ``jmeta train`` runs it with
    ``jmeta.systems.programs.run_program``, and this function refuses it."""
    if config.get("program"):
        raise ValueError(
            f"config sets program={config.program!r}: run it with jmeta.systems.programs.run_program "
            "(as `jmeta train` does), not train_and_evaluate."
        )
    if is_population(config):
        raise ValueError(
            "config sets seeds or sweep (a population): train it with jmeta.population.train_population "
            "(as `jmeta train` does), not train_and_evaluate."
        )
    check_config(config)
    fix_schedule(config, Path(workdir))
    experiment = build(config)  # reads only: a bad config leaves no workdir behind
    # One process of a multi-process run holds the lock for all of them.
    with workdir_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
        workdir = prepare_workdir(workdir, config)
        if is_main_process():
            save_model_input(workdir, experiment.family.example_input)
        _, best, keys = meta_train_workdir(config, experiment, workdir)
        return finish(config, experiment, best, keys, workdir)


@contextlib.contextmanager
def opened_run(
    config: ml_collections.ConfigDict, experiment: Experiment, workdir: Path
) -> Iterator[tuple[MetaTrainer, RunKeys, Checkpoints]]:
    """The trainer, keys and checkpoints of the run in ``workdir``; the checkpoints are closed on exit."""
    trainer = meta_trainer(experiment.learner, experiment.meta_optimizer, batching=config.batching)
    sharding = parallel.replicated(run_mesh_of(config))
    keep = config.get("keep_checkpoints", 2) or None  # 0: every checkpoint (Orbax's max_to_keep=None)
    checkpoints = Checkpoints(workdir / "checkpoints", best_metric=config.val_metric, keep=keep, sharding=sharding)
    try:
        yield trainer, run_keys(config.seed), checkpoints
    finally:
        checkpoints.close()


def meta_train_workdir(
    config: ml_collections.ConfigDict, experiment: Experiment, workdir: Path
) -> tuple[TrainState, TrainState, RunKeys]:
    """Meta-trains in ``workdir``, resuming from its latest checkpoint; returns the last state, the best by
    validation (the last without validation: ``val_every=0``), and the run's keys."""
    with opened_run(config, experiment, workdir) as (trainer, keys, checkpoints):
        state = resume_or_init(trainer, checkpoints, keys)
        last = meta_train(config, experiment, trainer, state, keys, checkpoints, workdir)
        best = checkpoints.restore(*abstract_run_state(trainer, keys), best=True)[0] if config.val_every else last
    return last, best, keys


def evaluate_workdir(
    workdir: str | Path, overrides: Sequence[str] = (), *, best: bool = True
) -> tuple[dict[str, Any], Path | None]:
    """Meta-tests the best (or latest) checkpoint of a finished or running workdir again, without taking
    its lock or touching its checkpoints. Returns the results and the file they were written to,
    ``eval_<checkpoint>[_<overrides>].json`` in the workdir (the training run's ``results.json`` stays).

    Only the keys ``EVAL_OVERRIDES`` (tasks, inner steps, ways, shots, queries, test-time BatchNorm, devices)
    may be overridden. ``eval_ways``, ``eval_shots`` and ``eval_queries`` may be given several values, e.g.
    ``eval_shots=(1, 5)``: every combination is evaluated, and the results hold ``{"sweep": {key: values},
    "evaluations": [results, ...]}``. The published figures are shown only beside results whose ways, shots
    and queries are the run's own. A run without validation (``val_every=0``) has no best checkpoint: its
    latest is used.
    A program's run (config key ``program``) is evaluated by the ``evaluate`` its program declares
    (``jmeta.registry.register_program``) on the config with the overrides; one that declares none is refused.
    A workdir that cannot be written (read-only, full) gives the path None and one warning line.
    """
    workdir = Path(workdir)
    config = read_config(workdir)
    evaluate_once = _evaluate_once
    if config.get("program"):  # a source system's run (jmeta.systems.programs): the evaluate its program declares
        if PROGRAMS[config.program].properties["evaluate"] is None:
            raise ValueError(
                f"this workdir holds a run of program {config.program!r}, which declares no evaluate; its "
                "results are in results.json; jmeta eval re-tests meta-learner runs."
            )
        evaluate_once = _evaluate_program
    elif is_population(config):
        raise ValueError(
            f"{str(workdir)!r} holds a population (seeds or sweep): evaluate it with "
            "jmeta.population.evaluate_population_workdir (as `jmeta eval` does), not evaluate_workdir."
        )
    sweep: dict[str, tuple[Any, ...]] = {}
    fixed = []
    for override in overrides:
        key, _, text = override.partition("=")
        if key not in EVAL_OVERRIDES:
            allowed = ", ".join(f"{key}=..." for key in EVAL_OVERRIDES)
            alone = " (member=K selects a member of a population; this workdir holds a single run)" * (key == "member")
            raise ValueError(f"jmeta eval only takes the overrides {allowed}; got {override!r}{alone}.")
        values = _literal(text)
        if key in SWEEPABLE and isinstance(values, (tuple, list)):
            sweep[key] = tuple(values)
        else:
            fixed.append(override)
    combinations = [dict(zip(sweep, values, strict=True)) for values in itertools.product(*sweep.values())]
    evaluations = [
        evaluate_once(workdir, config, [*fixed, *(f"{k}={v!r}" for k, v in chosen.items())], best)
        for chosen in combinations
    ]
    results = (
        evaluations[0] if not sweep else {"sweep": {k: list(v) for k, v in sweep.items()}, "evaluations": evaluations}
    )
    path = workdir / f"eval_{'best' if best and config.get('val_every') else 'latest'}{eval_suffix(overrides)}.json"
    try:
        write_atomically(path, json.dumps(results, indent=2) + "\n")
    except OSError as error:  # a read-only or full workdir: the results are still printed
        print(f"jmeta eval: warning: could not write {path} ({error}); the results are printed only", file=sys.stderr)
        return results, None
    return results, path


def eval_suffix(overrides: Sequence[str]) -> str:
    """The overrides in an eval file's name, e.g. ``_eval_tasks=1000_eval_steps=1-5`` for ``eval_tasks=1000``
    ``"eval_steps=(1, 5)"``."""
    return "".join("_" + re.sub(r"[^\w.=-]+", "-", re.sub(r"[\s()\[\]]", "", item)) for item in overrides)


SWEEPABLE = ("eval_ways", "eval_shots", "eval_queries")  # jmeta eval keys that take several values at once


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _evaluate_once(workdir: Path, run_config: ml_collections.ConfigDict, overrides: list[str], best: bool) -> dict:
    """One meta-test of the run in ``workdir`` with ``overrides``; the published figures are kept only where
    the protocol (ways, shots, queries) is the run's own."""
    config = copy.deepcopy(run_config)
    for override in overrides:
        apply_override(config, override)
    test_only = copy.deepcopy(config)
    test_only.val_every = 0  # no validation sampler: eval_ways and eval_shots need only fit the test classes
    experiment = build(test_only)
    best = best and bool(config.val_every)
    state = restore_state(workdir, config, experiment.learner, experiment.meta_optimizer, best=best)
    label = None if best or not config.val_every else f"latest checkpoint (--last), step {int(state.step)}"
    results = meta_test(config, experiment, state, run_keys(config.seed).test, checkpoint=label)
    changed = [key for key in SWEEPABLE if config.get(key) != run_config.get(key)]
    if changed and (results["published"] or results["published_source"]):
        own = ", ".join(f"{key}={run_config.get(key)}" for key in SWEEPABLE if key in run_config)
        results["published"] = {}
        results["published_source"] = f"not shown: the published figures are for the run's own protocol ({own})"
    return results


def _evaluate_program(workdir: Path, run_config: ml_collections.ConfigDict, overrides: list[str], _: bool) -> dict:
    """One evaluation of a program's run in ``workdir`` with ``overrides``: its program's ``evaluate``."""
    config = copy.deepcopy(run_config)
    for override in overrides:
        apply_override(config, override)
    return PROGRAMS[config.program].properties["evaluate"](config, workdir)


def finish(
    config: ml_collections.ConfigDict, experiment: Experiment, state: TrainState, keys: RunKeys, workdir: Path
) -> dict[str, Any]:
    """Meta-tests ``state``, writes ``results.json`` (and the sinusoid figure); returns the results."""
    results = meta_test(config, experiment, state, keys.test)
    if not is_main_process():
        return results
    write_atomically(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    figure = family_component(config.task).properties["figure"]
    if figure is not None:
        figure(
            experiment.learner,
            state.params,
            state.model_state,
            keys.plot,
            config,
            workdir / f"{config.task}_adaptation.png",
        )
    return results


def prepare_workdir(workdir: str | Path, config: ml_collections.ConfigDict) -> Path:
    """Creates ``workdir`` with ``config.json``, or checks that an existing run there has the same config
    (keys a run's config lacks because an older jmeta wrote it count as their defaults). A ``config.json``
    without any checkpoint beside it (a start that failed) is replaced. The record stays true: a lower
    ``steps`` than the run already reached keeps the saved ``steps``."""
    workdir = Path(workdir)
    if is_main_process():
        workdir.mkdir(parents=True, exist_ok=True)
    saved_path, current = workdir / "config.json", describe(config)
    reached = checkpointed_step(workdir)
    if saved_path.exists() and reached is not None:
        saved = describe(apply_run_defaults(ml_collections.ConfigDict(json.loads(saved_path.read_text()))))
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if set(changed) - set(RESUMABLE_CHANGES):
            differences = "; ".join(f"{key}: {_shown(saved, key)} there, {_shown(current, key)} now" for key in changed)
            raise ValueError(
                f"workdir {str(workdir)!r} holds a run with a different config ({differences}); use a new "
                f"--workdir, or the same config (only {RESUMABLE_CHANGES} may change when resuming)."
            )
        if "steps" in current and current["steps"] < min(reached, saved["steps"]):
            print(
                f"the run in {workdir} already reached step {reached}; steps={current['steps']} trains nothing more, "
                f"and its config.json keeps steps={saved['steps']}",
                file=sys.stderr,
            )
            current["steps"] = saved["steps"]
    if is_main_process():
        write_atomically(saved_path, json.dumps(current, indent=2) + "\n")
    return workdir


def checkpointed_step(workdir: Path) -> int | None:
    """The newest step under ``workdir/checkpoints/latest`` (complete or not), or ``None`` without one."""
    steps = [int(p.name) for p in (workdir / "checkpoints" / "latest").glob("*") if p.name.isdigit()]
    return max(steps, default=None)


def fix_schedule(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Fixes the horizon of a learner's meta-optimiser schedule (learners that declare ``schedule``) when
    the run starts: ``schedule_steps`` 0 becomes ``steps``, or, when resuming, the horizon the run started
    with, said in one line if ``steps`` changed. Setting ``schedule_steps`` to another value than the run's
    is refused by the config check on resume (it is not a resumable change)."""
    if not components(config).learner.properties["schedule"] or config.get("schedule_steps"):
        return
    saved_path = workdir / "config.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() and checkpointed_step(workdir) else {}
    horizon = saved.get("schedule_steps") or saved.get("steps") or config.steps
    if horizon != config.steps and is_main_process():
        print(
            f"the {config.learner} meta-optimiser's schedule keeps the horizon the run started with, "
            f"schedule_steps={horizon} (steps={config.steps} now)",
            file=sys.stderr,
        )
    config.schedule_steps = horizon


def _shown(config: dict[str, Any], key: str) -> str:
    return repr(config[key]) if key in config else "(absent)"


def abstract_run_state(trainer: MetaTrainer, keys: RunKeys) -> tuple[TrainState, jax.Array]:
    """Shapes and dtypes of what a checkpoint holds, for restoring it."""
    return jax.eval_shape(trainer.init, keys.init), jax.eval_shape(lambda: keys.train)


def resume_or_init(trainer: MetaTrainer, checkpoints: Checkpoints, keys: RunKeys) -> TrainState:
    restored = checkpoints.resume(*abstract_run_state(trainer, keys))  # the newest intact checkpoint
    if restored is None:
        return trainer.init(keys.init)
    state, sampler_key = restored
    if not np.array_equal(jax.random.key_data(sampler_key), jax.random.key_data(keys.train)):
        raise ValueError("the checkpoint's sampler key does not match config.seed; use a new --workdir.")
    print(f"resuming from step {int(state.step)} ({checkpoints.restored_from})", file=sys.stderr)
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
    checkpoints every ``config.val_every`` steps and at the end (without validation, ``val_every=0``,
    checkpoints every ``log_every`` steps). TensorBoard's events are written out before each checkpoint.
    tasks/s is measured without compilation (each block size is compiled ahead, while the progress bar
    says "compiling"). Ctrl-C raises ``TrainingInterrupted``. Each step's tasks are split over the run's
    mesh; only the main process writes the metrics."""
    from tensorboardX import SummaryWriter

    mesh, main = run_mesh_of(config), is_main_process()

    def scan_steps(state: TrainState, sampler: Any, count: int) -> tuple[TrainState, dict[str, jax.Array]]:
        def one_step(state: TrainState, _: None) -> tuple[TrainState, dict[str, jax.Array]]:
            tasks = sampler(jax.random.fold_in(keys.train, state.step), config.meta_batch)
            tasks, weights = parallel.constrain_tasks(parallel.pad_with_weights(tasks, mesh.size), mesh)
            return trainer.update(state, tasks, weights)

        return jax.lax.scan(one_step, state, length=count)

    run_steps = jax.jit(scan_steps, static_argnums=2, donate_argnums=0, out_shardings=parallel.replicated(mesh))
    first = experiment.family.sample_train(jax.random.fold_in(keys.train, state.step), config.meta_batch)
    check_finite_tasks(first, f"the meta-training sampler (step {int(state.step) + 1})")  # before compiling
    passes = passes_per_step(config, first)  # training example passes per meta-step (jmeta.compute)
    state, sampler = parallel.replicate((state, experiment.family.sample_train), mesh)
    compiled: dict[int, Any] = {}  # one program per block size: log_every, and a shorter last block
    metrics_path = workdir / "metrics.jsonl"
    if main:
        keep_metrics_until(metrics_path, int(state.step))
    done = int(state.step)
    # An event file per checkpoint interval: closing its writer is what writes its queued events out
    # (tensorboardX's flush() leaves its queue alone).
    board = None
    with (
        interrupts_remembered() as interrupted,
        open(metrics_path if main else os.devnull, "a") as log,
        tqdm(
            total=config.steps, initial=min(done, config.steps), desc="meta-train", unit="step", disable=not main
        ) as bar,
    ):
        try:
            while (done := int(state.step)) < config.steps:
                if interrupted:  # a Ctrl-C whose KeyboardInterrupt was dropped where it was raised
                    raise KeyboardInterrupt
                count = min(config.log_every, config.steps - done)
                if count not in compiled:
                    bar.set_description("compiling")
                    with interrupt_deferred():  # Ctrl-C inside XLA's compiler can crash the process on exit
                        compiled[count] = run_steps.lower(state, sampler, count).compile()
                    bar.set_description("meta-train")
                start = time.perf_counter()
                state, metrics = compiled[count](state, sampler)
                record = {"step": done + count, **check_finite(jax.device_get(metrics), done, checkpoints)}
                done = record["step"]
                record["tasks_per_s"] = count * config.meta_batch / (time.perf_counter() - start)
                record["training_example_passes"] = done * passes  # cumulative, for curves against compute
                validate_now = bool(config.val_every) and record["step"] % config.val_every == 0
                checkpoint_now = validate_now or not config.val_every or record["step"] == config.steps
                if checkpoint_now and config.val_every:
                    record.update(validate(config, experiment, state, keys.val))
                # The line goes out before the checkpoint: a resumed run drops lines past its checkpoint.
                with disk_full_reported(metrics_path, f"writing {metrics_path.name}"):
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                board = board or SummaryWriter(
                    str(workdir / "tensorboard"), filename_suffix=f".{done - count}", write_to_disk=main
                )
                for name, value in record.items():
                    if name != "step":
                        board.add_scalar(name, value, record["step"])
                if checkpoint_now:
                    close_event_writer(board, workdir / "tensorboard")
                    board = None
                    checkpoints.save(state, keys.train, validation=checkpoint_validation(config, record))
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"})
                bar.update(count)
        except KeyboardInterrupt:
            raise interrupted_at(f"at meta-step {done} of {config.steps}", checkpoints) from None
        finally:
            if board is not None:
                close_event_writer(board, workdir / "tensorboard")
    return state


def interrupted_at(where: str, checkpoints: Checkpoints, unit: str = "step") -> TrainingInterrupted:
    """The one-line error of a run stopped by Ctrl-C ``where`` (e.g. ``"at meta-step 3 of 10"``), naming the
    checkpoint (its number in ``unit``, e.g. "iteration") a rerun of the same command resumes from."""
    last = checkpoints.latest_step()
    kept = "no checkpoint was written yet" if last is None else f"the last checkpoint is {unit} {last}"
    return TrainingInterrupted(
        f"interrupted {where}; {kept} ({checkpoints.latest.directory}); rerun the same command to resume"
    )


def checkpoint_validation(config: ml_collections.ConfigDict, record: dict[str, float]) -> dict[str, float] | None:
    """What ranks a checkpoint among the best: the validation metric and the count of diverged validation
    tasks (fewer always ranks first; a metric over no finite task counts as the worst); ``None`` without
    validation."""
    if f"val_{config.val_metric}" not in record:
        return None
    value, diverged = record[f"val_{config.val_metric}"], record["val_diverged"]
    if diverged:
        tqdm.write(
            f"validation at step {record['step']}: {diverged} of {config.val_tasks} tasks diverged (non-finite "
            f"{config.val_metric}); a checkpoint with fewer diverged tasks is preferred as the best"
        )
    if not math.isfinite(value):
        value = -math.inf if config.val_metric in HIGHER_IS_BETTER else math.inf
    return {config.val_metric: value, "diverged": diverged}


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
    objective being meta-trained (more steps than were trained can diverge on a few tasks), as means over
    the tasks with finite values, and ``val_diverged``: the most tasks any metric had non-finite."""
    steps = config.get("inner_steps", 0)  # 0 for learners without an inner loop (their steps do nothing)
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
    diverged = max(estimate.diverged for estimate in estimates.values())
    return {**{f"val_{name}": estimate.mean for name, estimate in estimates.items()}, "val_diverged": diverged}


def keep_metrics_until(path: Path, step: int) -> None:
    """Drops logged lines past ``step`` (written after the checkpoint a run resumes from)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_atomically(path, "".join(line + "\n" for line in lines))


def write_atomically(path: Path, text: str) -> None:
    """Writes ``path`` whole or not at all; a full disk raises ``jmeta.storage.DiskFullError``."""
    temporary = path.with_name(path.name + ".tmp")
    with disk_full_reported(path, f"writing {path.name}"):
        temporary.write_text(text)
        os.replace(temporary, path)


def meta_test(
    config: ml_collections.ConfigDict,
    experiment: Experiment,
    state: TrainState,
    key: jax.Array,
    *,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Evaluates on ``config.eval_tasks`` test tasks with the test-time BatchNorm mode
    ``config.eval_batch_norm`` (where the config has one); returns the estimates with their protocol.
    ``checkpoint`` describes the state tested (default: the best by validation, or the last without it)."""
    options = {"batch_norm": config.eval_batch_norm} if "eval_batch_norm" in config else {}
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
        **options,
    )
    if checkpoint is None and config.val_every:
        checkpoint = f"best by validation {config.val_metric} ({config.val_tasks} tasks), step {int(state.step)}"
    elif checkpoint is None:
        checkpoint = f"last (no validation: val_every=0), step {int(state.step)}"
    return {
        "protocol": {
            "task": config.task,
            "ways": config.get("eval_ways", config.get("ways")),
            "tasks": config.eval_tasks,
            "shots": config.eval_shots,
            "queries_per_task": config.eval_queries * (config.get("eval_ways", config.get("ways")) or 1),
            "inner_steps": list(config.eval_steps),
            "inner_lr": _inner_lr(config),
            "batch_norm": options.get("batch_norm", config.get("batch_norm", "none")),
            "checkpoint": checkpoint,
            "training_example_passes": training_example_passes(config, experiment.family, int(state.step)),
            "ci": "95%, 1.96 * std / sqrt(tasks)",
            "seed": config.seed,
            "devices": run_mesh_of(config).size,
            "processes": jax.process_count(),
        },
        "results": {str(k): {name: e._asdict() for name, e in by_metric.items()} for k, by_metric in estimates.items()},
        "published": {} if config.get("inner_optimizer") else dict(config.published),
        "published_source": (
            "not shown: the published figures are for the config's own inner loop, not inner_optimizer"
            if config.get("inner_optimizer") and config.published
            else config.published_source
        ),
    }


def _inner_lr(config: ml_collections.ConfigDict) -> Any:
    """The protocol's inner learning rate: for learners that declare one, ``inner_lr`` or the optimiser
    ``inner_optimizer`` names; ``None`` for the others (no inner gradient step)."""
    if not components(config).learner.properties["inner_lr"]:
        return None
    return dict(config.inner_optimizer) if config.get("inner_optimizer") else config.inner_lr


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of meta-test results beside the published numbers (one table per evaluation of a
    sweep); diverged (non-finite) tasks are counted after the estimate, which is over the other tasks."""
    if "settings" in results:
        raise ValueError("these are a population's results: format them with jmeta.population.format_population.")
    if "evaluations" in results:
        return "\n\n".join(format_results(evaluation) for evaluation in results["evaluations"])
    names = list(next(iter(results["results"].values())))
    header = f"{'inner steps':>11}  " + "  ".join(f"{name + ' (mean ± 95% CI)':>26}" for name in names)
    lines = [header + f"  {'published':>9}"]
    for steps, by_metric in results["results"].items():
        published = results["published"].get(steps)
        cells = "  ".join(_cell(by_metric[n]) for n in names)
        lines.append(f"{steps:>11}  {cells}  {'' if published is None else published:>9}")
    protocol = results["protocol"]
    ways = f"{protocol['ways']}-way " if protocol.get("ways") else ""
    inner_lr = protocol.get("inner_lr")
    if isinstance(inner_lr, dict):  # an inner_optimizer: name(arguments)
        arguments = ", ".join(f"{k}={v}" for k, v in inner_lr.items() if k != "name")
        inner_lr = f"inner optimizer {inner_lr.get('name')}({arguments}), "
    else:
        inner_lr = f"inner lr {inner_lr}, " if inner_lr is not None else ""
    batch_norm = f"BatchNorm {protocol['batch_norm']}, " if protocol.get("batch_norm") in BATCH_NORM_MODES else ""
    lines.append(
        f"protocol: {protocol['tasks']} test tasks, {ways}{protocol['shots']}-shot, {protocol['queries_per_task']} "
        f"query points per task, {inner_lr}{batch_norm}{protocol['checkpoint']}; "
        f"published: {results['published_source']}"
    )
    return "\n".join(lines)


def _cell(estimate: dict[str, Any]) -> str:
    """``mean ± ci95`` of one estimate, then ``[k/n diverged]`` if some of its tasks were not finite."""
    diverged = estimate.get("diverged", 0)
    tasks = estimate["tasks"] + diverged  # ``tasks`` counts the finite ones
    if not math.isfinite(estimate["mean"]):  # fewer than 2 finite tasks
        return f"{f'{diverged} of {tasks} tasks diverged':>26}"
    cell = f"{estimate['mean']:>17.4f} ± {estimate['ci95']:<6.4f}"
    return cell + (f" [{diverged}/{tasks} diverged]" if diverged else "")
