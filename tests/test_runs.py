"""Runs as a user meets them: one run per workdir, runs without validation, a trained run back as a learner
(``jmeta.load_run``, ``jmeta predict``), ``jmeta eval`` with its own protocol and output file, diverged test
tasks counted, and the error messages of issue 11."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from conftest import REPO

import jmeta
from jmeta.checkpoint import Checkpoints
from jmeta.cli import main
from jmeta.experiment import build, load_config
from jmeta.lock import workdir_lock
from jmeta.plotting import learning_curves
from jmeta.train import checkpoint_validation, evaluate_workdir, format_results, prepare_workdir

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
SHORT = ["steps=20", "log_every=10", "val_every=10", "val_tasks=4", "eval_tasks=10", "eval_steps=(0, 1)"]
HOLD_LOCK = """
import sys, time
from jmeta.lock import workdir_lock
with workdir_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""

# ProtoNets on scikit-learn's bundled digits (8x8): no download, no validation classes (train 0-4, test 5-9).
DIGITS_PROTONET = """
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("digits", "protonet", ways=5, shots=1)
    del config.hidden, config.downsample, config.pool
    config.split, config.model, config.hidden = "", "mlp", (16, 8)
    config.eval_steps = (0,)
    config.meta_batch, config.steps, config.log_every, config.val_every = 2, 4, 2, 0
    config.eval_tasks = 6
    return config
"""


@pytest.fixture(scope="module")
def sinusoid_run(tmp_path_factory):
    """A finished 20-step sinusoid MAML run."""
    workdir = tmp_path_factory.mktemp("sinusoid")
    assert main(["train", SINUSOID, "--workdir", str(workdir), *SHORT]) == 0
    return workdir


def test_a_workdir_takes_one_run_at_a_time_and_stays_readable(sinusoid_run, capsys):
    tmp_path = sinusoid_run
    results = (tmp_path / "results.json").read_text()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", SINUSOID, "--workdir", str(tmp_path), *SHORT]) == 2
        error = capsys.readouterr().err
        assert f"is in use by another `jmeta train` (pid {holder.pid} on host" in error, error
        # Readers do not take the lock and leave a checkpoint being written alone.
        being_written = tmp_path / "checkpoints" / "latest" / "30.orbax-checkpoint-tmp-1700000000"
        being_written.mkdir()
        assert main(["eval", "--workdir", str(tmp_path), "eval_tasks=6"]) == 0
        out = capsys.readouterr().out
        assert f"results written to {tmp_path / 'eval_best_eval_tasks=6.json'}" in out
        assert json.loads((tmp_path / "eval_best_eval_tasks=6.json").read_text())["protocol"]["tasks"] == 6
        assert (tmp_path / "results.json").read_text() == results
        run = jmeta.load_run(tmp_path, checkpoint="latest")
        assert (run.step, run.checkpoint, run.input_shape) == (20, "latest", (1,))
        assert being_written.is_dir()
        being_written.rmdir()
    finally:
        holder.kill()  # SIGKILL: the operating system drops the lock
        holder.wait()
    with workdir_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} on host ")


def test_load_run_rebuilds_the_learner_without_data_and_predict_prints_values(sinusoid_run, tmp_path, capsys):
    run = jmeta.load_run(sinusoid_run)
    assert (run.step, run.checkpoint, run.config.learner) == (20, "best", "maml")
    task = jax.tree.map(lambda a: a[0], jmeta.tasks.sinusoid_tasks(jax.random.key(3), 1, shots=5, queries=4))
    adapted = run.learner.adapt(run.params, run.model_state, task.support_x, task.support_y, steps=1)
    expected = np.asarray(run.learner.predict(adapted, run.model_state, task.query_x)[0])
    for name, array in (("sx", task.support_x), ("sy", task.support_y), ("q", task.query_x)):
        np.save(tmp_path / f"{name}.npy", np.asarray(array))
    command = ["predict", "--workdir", str(sinusoid_run), "--steps", "1", "--query", str(tmp_path / "q.npy")]
    assert main([*command, "--support-x", str(tmp_path / "sx.npy"), "--support-y", str(tmp_path / "sy.npy")]) == 0
    printed = np.array([float(line) for line in capsys.readouterr().out.split()])
    np.testing.assert_allclose(printed, expected[:, 0], rtol=1e-4)
    assert main([*command, "--support-x", str(tmp_path / "sx.npy")]) == 2
    assert "--support-y" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"checkpoint must be one of 'best', 'latest'; got 'last'"):
        jmeta.load_run(sinusoid_run, checkpoint="last")


def test_a_run_without_validation_tests_its_last_checkpoint_and_predicts_from_image_folders(tmp_path, capsys):
    from PIL import Image

    config_path = tmp_path / "digits_protonet.py"
    config_path.write_text(DIGITS_PROTONET)
    workdir = tmp_path / "run"
    assert main(["train", str(config_path), "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    protocol_line = next(line for line in out.splitlines() if line.startswith("protocol:"))
    assert "inner lr" not in protocol_line, protocol_line
    assert "5-way 1-shot" in protocol_line and "BatchNorm transductive" in protocol_line, protocol_line
    results = json.loads((workdir / "results.json").read_text())
    assert results["protocol"]["checkpoint"] == "last (no validation: val_every=0), step 4"
    assert results["protocol"]["batch_norm"] == "transductive" and results["protocol"]["inner_lr"] is None
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in logged] == [2, 4] and not any("val_loss" in record for record in logged)

    overrides = ["eval_ways=3", "eval_shots=2", "eval_queries=3", "eval_batch_norm=transductive"]
    assert main(["eval", "--workdir", str(workdir), *overrides]) == 0  # no best checkpoint: the latest
    written = workdir / ("eval_latest_" + "_".join(overrides) + ".json")
    protocol = json.loads(written.read_text())["protocol"]
    assert (protocol["ways"], protocol["shots"], protocol["queries_per_task"]) == (3, 2, 9)
    assert protocol["batch_norm"] == "transductive" and protocol["checkpoint"].endswith("step 4")
    assert main(["eval", "--workdir", str(workdir), "eval_batch_norm=batch"]) == 2
    assert "eval_batch_norm must be one of 'transductive', 'support', 'running'; got 'batch'" in capsys.readouterr().err
    assert main(["eval", "--workdir", str(workdir), "meta_lr=0.1"]) == 2
    assert "jmeta eval only takes the overrides eval_tasks=..." in capsys.readouterr().err

    # A support folder per class and a query folder: the support images themselves are classified as
    # their own classes (one shot: each is its class's prototype; the same batch, so the same statistics).
    digits = jmeta.data.load("digits")["test"]
    names = ["five", "six", "seven", "eight", "nine"]
    for name, c in zip(names, range(5), strict=True):
        image = Image.fromarray(digits.images[digits.offsets[c]][..., 0])
        (tmp_path / "support" / name).mkdir(parents=True)
        image.save(tmp_path / "support" / name / "a.png")
        (tmp_path / "support" / name / "._a.png").write_bytes(b"\0\0\0\0")  # a macOS companion file
        (tmp_path / "query").mkdir(exist_ok=True)
        image.save(tmp_path / "query" / f"{c}_{name}.png")
    args = ["predict", "--workdir", str(workdir), "--support", str(tmp_path / "support")]
    assert main([*args, "--query", str(tmp_path / "query")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{c}_{name}.png\t{name}" for c, name in enumerate(names)]


def test_a_diverging_test_task_is_counted_not_averaged_into_nan(mlp_model):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    pool = jmeta.tasks.sinusoid_tasks(jax.random.key(5), 10, shots=5, queries=20)
    pool = pool._replace(support_y=pool.support_y.at[3].multiply(1e30))  # one task whose inner loop blows up

    class PoolTasks:  # a sampler drawing tasks of the pool of 10 by a random index
        def __call__(self, key, n):
            return jax.tree.map(lambda a: a[jax.random.randint(key, (n,), 0, 10)], pool)

    jax.tree_util.register_pytree_node(PoolTasks, lambda s: ((), None), lambda _, __: PoolTasks())
    results = jmeta.evaluate(learner, params, state, PoolTasks(), jax.random.key(1), num_tasks=30, steps=(0, 10))
    # evaluate draws task j alone, from fold_in(key, j)
    keys = [jax.random.fold_in(jax.random.key(1), j) for j in range(30)]
    drawn = np.array([int(jax.random.randint(key, (1,), 0, 10)[0]) for key in keys])
    threes = int(np.sum(drawn == 3))
    assert 0 < threes < 30
    assert results[0]["loss"].diverged == 0
    diverging = results[10]["loss"]
    assert (diverging.tasks, diverging.diverged) == (30 - threes, threes) and math.isfinite(diverging.mean)
    per_task = np.asarray(jax.jit(jax.vmap(lambda task: learner.task_loss(params, state, task, steps=10)[0]))(pool))
    assert not np.isfinite(per_task[3])
    np.testing.assert_allclose(diverging.mean, np.mean(per_task[drawn[drawn != 3]]), rtol=1e-5)
    table = format_results(
        {
            "protocol": {"tasks": 30, "shots": 5, "queries_per_task": 20, "inner_lr": 0.01, "checkpoint": "x"},
            "results": {str(k): {n: e._asdict() for n, e in by.items()} for k, by in results.items()},
            "published": {},
            "published_source": "",
        }
    )
    assert f"[{threes}/30 diverged]" in table.splitlines()[2] and "nan" not in table, table


def test_diverged_validation_tasks_do_not_choose_the_checkpoint(tmp_path, mlp_model):
    import optax

    trainer = jmeta.meta_trainer(jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1), optax.adam(1e-3))
    state, key = trainer.init(jax.random.key(0)), jax.random.key(1)
    config = ml_collections.ConfigDict({"val_metric": "loss", "val_tasks": 20})
    checkpoints = Checkpoints(tmp_path, best_metric="loss")
    # Step 1: a lower mean loss, but over the tasks that did not diverge; step 2: every task finite.
    for step, loss, diverged in ((1, 0.5, 1), (2, 0.9, 0), (3, math.nan, 20)):
        validation = checkpoint_validation(config, {"step": step, "val_loss": loss, "val_diverged": diverged})
        checkpoints.save(state._replace(step=state.step + step), key, validation=validation)
    assert checkpoints.best.best_step() == 2
    checkpoints.close()


def test_a_changed_config_error_shows_old_and_new_values(tmp_path):
    prepare_workdir(tmp_path, load_config(SINUSOID, ["seed=3"]))
    prepare_workdir(tmp_path, load_config(SINUSOID))  # no checkpoint yet: a failed start is replaced
    (tmp_path / "checkpoints" / "latest" / "20").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"meta_lr: 0\.001 there, 0\.01 now; seed: 0 there, 3 now\)"):
        prepare_workdir(tmp_path, load_config(SINUSOID, ["meta_lr=0.01", "seed=3"]))


@pytest.mark.parametrize(("override", "split"), [("ways=6", "train"), ("eval_ways=6", "test")])
def test_the_ways_error_names_the_split_it_counted(tmp_path, override, split):
    config_path = tmp_path / "digits_protonet.py"
    config_path.write_text(DIGITS_PROTONET)
    key = override.partition("=")[0]  # the error names the key the value came from
    message = rf"^{key} must be at most the number of classes in digits's {split} split \(its default split\) \(5\)"
    with pytest.raises(ValueError, match=message):
        build(load_config(config_path, [override]))


def test_learning_curves_show_a_run_of_one_logged_point():
    figure = learning_curves([{"step": 10, "loss": 1.5, "grad_norm": 0.3, "tasks_per_s": 100.0}])
    lines = [line for axis in figure.axes for line in axis.get_lines()]
    assert len(lines) == 2 and all(line.get_marker() not in (None, "None", "") for line in lines)


def _events(workdir):
    """(tag, step) of every scalar in the TensorBoard event files of ``workdir``."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    found = set()
    for path in (workdir / "tensorboard").glob("events.out.tfevents.*"):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            found |= {(value.tag, event.step) for value in event.summary.value}
            offset += 12 + length + 4
    return found


def test_ctrl_c_prints_one_line_and_exits_130_and_tensorboard_keeps_every_checkpointed_step(tmp_path):
    import signal
    import time

    command = [sys.executable, "-m", "jmeta.cli", "train", SINUSOID, "--workdir", str(tmp_path), "steps=1000000"]
    command += ["log_every=250", "val_every=500", "val_tasks=20"]
    latest = tmp_path / "checkpoints" / "latest"

    def start_and_wait_for_checkpoint_after(step):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while not (latest.is_dir() and any(p.name.isdigit() and int(p.name) > step for p in latest.iterdir())):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        return process

    killed = start_and_wait_for_checkpoint_after(-1)
    killed.kill()  # SIGKILL: no chance to flush anything more
    _, err = killed.communicate()
    assert "compiling" in err
    first = max(int(p.name) for p in latest.iterdir() if p.name.isdigit())
    assert {("loss", first), ("val_loss", first)} <= _events(tmp_path)

    interrupted = start_and_wait_for_checkpoint_after(first)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130, err
    assert f"resuming from step {first} " in err and "Traceback" not in err, err
    last_line = err.strip().splitlines()[-1]
    pattern = (
        r"jmeta train: interrupted at meta-step (\d+) of 1000000; the last checkpoint is step (\d+) \(.*latest\); "
        r"rerun the same command to resume"
    )
    match = re.fullmatch(pattern, last_line)
    assert match and int(match[1]) >= int(match[2]) > first, last_line


def test_eval_ways_need_only_fit_the_test_classes_not_the_validation_classes(tmp_path):
    config_path = tmp_path / "digits_protonet.py"
    config_path.write_text(DIGITS_PROTONET)
    workdir = tmp_path / "run"
    # 10 digit classes: 5 test; of the 5 train classes, 2 carved for validation (2-way validation tasks).
    overrides = ["ways=2", "eval_ways=2", "val_fraction=0.4", "val_every=2", "val_tasks=4"]
    assert main(["train", str(config_path), "--workdir", str(workdir), *overrides]) == 0
    results, path = evaluate_workdir(workdir, ["eval_ways=4"])
    assert results["protocol"]["ways"] == 4 and path.name == "eval_best_eval_ways=4.json"


def test_eval_sweeps_shots_and_shows_published_figures_only_beside_the_runs_own_protocol(sinusoid_run):
    results, path = evaluate_workdir(sinusoid_run, ["eval_shots=(5, 10)", "eval_tasks=4"])
    assert results["sweep"] == {"eval_shots": [5, 10]} and path.name == "eval_best_eval_shots=5-10_eval_tasks=4.json"
    own, other = results["evaluations"]
    assert (own["protocol"]["shots"], other["protocol"]["shots"]) == (5, 10)
    assert own["published"] == {"1": 0.67, "5": 0.38, "10": 0.35} and other["published"] == {}
    assert other["published_source"].startswith("not shown: the published figures are for the run's own protocol")
    assert format_results(results).count("protocol:") == 2
    single, _ = evaluate_workdir(sinusoid_run, ["eval_shots=5", "eval_tasks=4"])
    assert single["results"] == own["results"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped interrupt
def test_a_ctrl_c_dropped_where_it_was_raised_still_stops_training_at_the_next_block(tmp_path, monkeypatch):
    """Python drops a KeyboardInterrupt raised inside a garbage-collection callback ("Exception ignored in"):
    the interrupt is remembered, and the loop stops before its next compiled block."""
    import gc
    import os
    import signal

    from jmeta.train import TrainingInterrupted, train_and_evaluate

    fired = []

    def interrupt_inside_gc(phase, info):
        training = getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "remember"  # inside meta_train
        if phase == "start" and training and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the callback

    import jmeta.train

    check_finite = jmeta.train.check_finite

    def check_then_collect(*args):  # a garbage collection between two blocks, as JAX's buffers cause
        result = check_finite(*args)
        gc.collect()
        return result

    monkeypatch.setattr(jmeta.train, "check_finite", check_then_collect)
    config = load_config(SINUSOID, ["steps=40", "log_every=10", "val_every=0", "eval_tasks=4"])
    gc.callbacks.append(interrupt_inside_gc)
    try:
        with pytest.raises(TrainingInterrupted, match=r"interrupted at meta-step \d+ of 40"):
            train_and_evaluate(config, tmp_path / "run")
    finally:
        gc.callbacks.remove(interrupt_inside_gc)
    assert fired
