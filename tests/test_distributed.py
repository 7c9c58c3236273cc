"""`jmeta train` across processes (jax.distributed, CPU collectives over gloo on 127.0.0.1): two processes
give the run of one process with as many devices, and both killed and restarted resume it exactly."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
RUN = ["log_every=100", "val_every=100", "val_tasks=20", "eval_tasks=30", "eval_steps=(1,)", "meta_batch=24"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(workdir: Path, overrides: list[str], devices: int, process: tuple[int, int, int] | None = None):
    """Starts `jmeta train` on ``devices`` simulated CPU devices; ``process``: (port, count, index)."""
    command = [sys.executable, "-m", "jmeta.cli", "train", SINUSOID, "--workdir", str(workdir), *overrides]
    if process is not None:
        port, count, index = process
        command += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count), "--process-id", str(index)]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_processes(workdir: Path, overrides: list[str]) -> list[subprocess.Popen]:
    port = _free_port()
    return [_train(workdir, overrides, 1, (port, 2, index)) for index in (0, 1)]


def _finish(*processes: subprocess.Popen) -> list[str]:
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        outputs.append(out)
    return outputs


def _metrics(workdir: Path) -> list[dict[str, float]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tasks_per_s"} for line in lines]


def _results(workdir: Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def test_two_processes_give_the_run_of_one_process_with_two_devices(tmp_path):
    overrides = ["steps=100", *RUN]
    reference = _train(tmp_path / "one", overrides, 2)
    pair = _two_processes(tmp_path / "two", overrides)
    outputs = _finish(reference, *pair)
    assert "protocol:" in outputs[1] and "protocol:" not in outputs[2], "only process 0 prints the results"
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [100]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose([b[k] for k in a], [a[k] for k in a], rtol=1e-5)
    results = [_results(tmp_path / name) for name in ("one", "two")]
    assert [(r["protocol"]["devices"], r["protocol"]["processes"]) for r in results] == [(2, 1), (2, 2)]
    np.testing.assert_allclose(results[1]["results"]["1"]["loss"]["mean"], results[0]["results"]["1"]["loss"]["mean"])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        ".lock",
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "model_input.json",
        "results.json",
        "sinusoid_adaptation.png",
        "tensorboard",
    ]


@pytest.mark.slow
def test_both_processes_killed_and_restarted_resume_the_uninterrupted_run(tmp_path):
    overrides = ["steps=600", *RUN]
    reference = _two_processes(tmp_path / "reference", overrides)
    interrupted = _two_processes(tmp_path / "interrupted", overrides)
    latest = tmp_path / "interrupted" / "checkpoints" / "latest"
    deadline = time.monotonic() + 400
    while not (latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())):
        assert all(p.poll() is None for p in interrupted), [p.communicate() for p in interrupted]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    for process in interrupted:
        process.send_signal(signal.SIGKILL)
    for process in interrupted:
        process.wait()
    assert not (tmp_path / "interrupted" / "results.json").exists(), "the run finished before it was killed"
    assert max(r["step"] for r in _metrics(tmp_path / "interrupted")) < 600

    _finish(*reference, *_two_processes(tmp_path / "interrupted", overrides))
    assert _metrics(tmp_path / "interrupted") == _metrics(tmp_path / "reference")
    assert _results(tmp_path / "interrupted") == _results(tmp_path / "reference")
