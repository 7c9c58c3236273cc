"""Runs you can trust: a run killed with SIGKILL and started again ends exactly as an uninterrupted one."""

import errno
import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, kill_at_first_checkpoint

from jmeta.checkpoint import Checkpoints
from jmeta.cli import main
from jmeta.train import NonFiniteError, check_finite

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
RUN = ["steps=12000", "log_every=250", "val_every=500", "val_tasks=20", "eval_tasks=40", "eval_steps=(1,)"]


def _train(workdir):
    command = [sys.executable, "-m", "jmeta.cli", "train", SINUSOID, "--workdir", str(workdir), *RUN]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _metrics(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tasks_per_s"} for line in lines]


def test_killed_run_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    reference = _train(tmp_path / "reference")
    interrupted = _train(tmp_path / "interrupted")
    kill_at_first_checkpoint(interrupted, tmp_path / "interrupted", timeout=240)
    killed_at = max(_metrics(tmp_path / "interrupted"), key=lambda r: r["step"])["step"]
    assert killed_at < 12000

    resumed = _train(tmp_path / "interrupted")
    for process in (reference, resumed):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    assert _metrics(tmp_path / "interrupted") == _metrics(tmp_path / "reference")
    results = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("reference", "interrupted")]
    assert results[0] == results[1]


def test_a_checkpoint_left_half_written_is_ignored(tmp_path, mlp_model):
    import jax
    import optax

    import jmeta

    trainer = jmeta.meta_trainer(jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1), optax.adam(1e-3))
    state, key = trainer.init(jax.random.key(0)), jax.random.key(1)
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(state, key)
    checkpoints.close()
    half_written = tmp_path / "latest" / "7.orbax-checkpoint-tmp-1700000000"
    half_written.mkdir()
    (half_written / "garbage").write_bytes(os.urandom(64))

    reopened = Checkpoints(tmp_path)
    assert reopened.latest_step() == 0
    restored, restored_key = reopened.restore(
        jax.eval_shape(trainer.init, jax.random.key(0)), jax.eval_shape(lambda: key)
    )
    jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
    reopened.close()


def test_non_finite_loss_names_the_step_and_quantity(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    metrics = {"loss": np.array([1.0, 0.5, np.nan]), "grad_norm": np.array([1.0, np.inf, np.nan])}
    with pytest.raises(NonFiniteError, match=r"grad_norm became inf at meta-step 42; no checkpoint was written yet"):
        check_finite(metrics, 40, checkpoints)
    checkpoints.close()


def test_a_diverging_run_stops_with_a_clear_message(tmp_path, capsys):
    args = [
        "train",
        SINUSOID,
        "--workdir",
        str(tmp_path),
        "steps=200",
        "log_every=100",
        "val_every=100",
        "inner_lr=1e6",
    ]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "became nan at meta-step" in error or "became inf at meta-step" in error, error
    assert not (tmp_path / "results.json").exists()


def test_a_full_disk_is_reported(tmp_path, capsys, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", no_space)
    args = ["train", SINUSOID, "--workdir", str(tmp_path), "steps=100", "log_every=100", "val_every=100", "val_tasks=5"]
    assert main(args) == 2
    assert "no space left on the device" in capsys.readouterr().err
