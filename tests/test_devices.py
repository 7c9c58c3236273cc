"""`jmeta train` / `jmeta eval` on every local device: one mesh, each task batch split along it, the same
tasks and (within float tolerance) the same metrics and results whatever the number of devices."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from conftest import REPO

import jmeta
from jmeta import distributed, parallel
from jmeta.cli import main

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
OMNIGLOT_DATA = Path("/work/shared/data/omniglot")
SHORT = ["log_every=100", "val_every=100", "val_tasks=20", "eval_tasks=30", "eval_steps=(1,)", "meta_batch=24"]


def _runs_on_8_devices(config: str, overrides: list[str], workdir: Path) -> dict[int, Path]:
    """Trains ``config`` with devices=1 and devices=8 in one process of 8 simulated CPU devices."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax
        from jmeta.experiment import load_config
        from jmeta.train import train_and_evaluate
        assert jax.device_count() == 8, jax.devices()
        for devices in (1, 8):
            config = load_config({config!r}, {overrides!r} + [f"devices={{devices}}"])
            train_and_evaluate(config, {str(workdir)!r} + f"/d{{devices}}")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {devices: workdir / f"d{devices}" for devices in (1, 8)}


def _metrics(workdir: Path) -> list[dict[str, float]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tasks_per_s"} for line in lines]


def _assert_same_run(one: Path, eight: Path, rtol: float) -> None:
    first, second = _metrics(one), _metrics(eight)
    assert [r["step"] for r in first] == [r["step"] for r in second]
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=rtol)
    results = [json.loads((workdir / "results.json").read_text()) for workdir in (one, eight)]
    assert (results[0]["protocol"]["devices"], results[1]["protocol"]["devices"]) == (1, 8)
    assert results[0]["protocol"]["processes"] == results[1]["protocol"]["processes"] == 1
    for steps, by_metric in results[0]["results"].items():
        for name, estimate in by_metric.items():
            other = results[1]["results"][steps][name]
            assert other["tasks"] == estimate["tasks"]
            np.testing.assert_allclose(other["mean"], estimate["mean"], rtol=rtol)
            np.testing.assert_allclose(other["ci95"], estimate["ci95"], rtol=rtol)


def test_sinusoid_on_8_simulated_devices_gives_the_one_device_run(tmp_path):
    runs = _runs_on_8_devices(SINUSOID, ["steps=200", *SHORT], tmp_path)
    _assert_same_run(runs[1], runs[8], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not (OMNIGLOT_DATA / "images_background.zip").exists(), reason=f"no Omniglot in {OMNIGLOT_DATA}")
def test_omniglot_on_8_simulated_devices_gives_the_one_device_run(tmp_path):
    config = str(REPO / "experiments" / "omniglot_maml.py")
    overrides = [f"data_dir={OMNIGLOT_DATA}", "steps=4", "log_every=2", "val_every=2", "val_tasks=10"]
    runs = _runs_on_8_devices(config, [*overrides, "eval_tasks=12", "meta_batch=8"], tmp_path)
    _assert_same_run(runs[1], runs[8], rtol=1e-4)


def test_a_meta_batch_that_does_not_split_names_the_nearest_valid_values():
    mesh = SimpleNamespace(size=8)  # the check reads only the mesh's size
    with pytest.raises(ValueError, match=r"meta_batch 30 does not divide over 8 devices; use 24 or 32, or devices=6"):
        distributed.check_meta_batch(30, mesh)
    with pytest.raises(ValueError, match=r"meta_batch 5 does not divide over 8 devices; use 8, or devices=5"):
        distributed.check_meta_batch(5, mesh)
    distributed.check_meta_batch(32, mesh)


def test_train_refuses_a_meta_batch_that_does_not_split_before_compiling(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("jmeta.train.run_mesh", lambda devices: SimpleNamespace(size=8))
    assert main(["train", SINUSOID, "--workdir", str(tmp_path / "run"), "meta_batch=25"]) == 2
    assert "meta_batch 25 does not divide over 8 devices; use 24 or 32" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_devices_beyond_the_local_ones_are_refused():
    with pytest.raises(ValueError, match=rf"devices must be 0 \(all\) to {jax.local_device_count()}.*got 99"):
        distributed.run_mesh(99)
    assert distributed.run_mesh(0).size == jax.device_count()


def test_evaluation_on_a_mesh_pads_batches_and_gives_the_same_estimates(mlp_model):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    sampler = jmeta.tasks.SinusoidSampler(shots=5, queries=10)
    kwargs = dict(num_tasks=6, steps=(1,), batch_size=3)
    plain = jmeta.evaluate(learner, params, state, sampler, jax.random.key(1), **kwargs)
    mesh = parallel.task_mesh(jax.devices()[:1])
    meshed = jmeta.evaluate(learner, params, state, sampler, jax.random.key(1), mesh=mesh, **kwargs)
    assert meshed == plain


def test_pad_tasks_repeats_the_first_tasks():
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(0), 3, shots=2, queries=2)
    padded = parallel.pad_tasks(tasks, 8)
    assert padded.support_x.shape[0] == 8
    np.testing.assert_array_equal(padded.query_y[3:6], tasks.query_y)
    assert parallel.pad_tasks(tasks, 3) is tasks


def test_process_flags_must_come_together(capsys):
    assert main(["train", SINUSOID, "--workdir", "unused", "--coordinator", "127.0.0.1:1234"]) == 2
    error = capsys.readouterr().err
    assert "needs --coordinator HOST:PORT, --num-processes N and --process-id I together" in error
    assert "--num-processes and --process-id missing" in error
    assert main(["eval", "--workdir", "unused", "--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"])
    assert "--coordinator must be HOST:PORT of process 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--process-id must be 0 to 1 for --num-processes 2; got 2"):
        distributed.setup("127.0.0.1:1234", 2, 2)


def test_a_plain_machine_is_not_a_cluster(monkeypatch):
    for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.detected_cluster() is None
    assert distributed.setup() == "one process"
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    for name, value in {**slurm, "SLURM_NTASKS": "1"}.items():
        monkeypatch.setenv(name, value)
    assert distributed.detected_cluster() is None  # one SLURM task: nothing to join
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed.detected_cluster() == "SLURM"
