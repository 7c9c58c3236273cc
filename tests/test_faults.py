"""Runs that survive what clusters and laptops do to them: read on another device count, a damaged newest
checkpoint, a full disk, a read-only workdir. Each compares with an uninterrupted run of the same config."""

import contextlib
import errno
import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO
from tensorboardX.event_file_writer import EventFileWriter

import jmeta
from jmeta.checkpoint import NoIntactCheckpointError
from jmeta.cli import main

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
# latest/{50,100}, best/100 (its validation loss is below step 50's: checked in `reference`)
TINY = ["steps=100", "log_every=50", "val_every=50", "val_tasks=50", "eval_tasks=50", "meta_batch=24"]
TINY.append("eval_steps=(1,)")


def _train(workdir: Path, *extra: str) -> int:
    return main(["train", SINUSOID, "--workdir", str(workdir), *TINY, *extra])


def _metrics(workdir: Path) -> list[dict[str, float]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tasks_per_s"} for line in lines]


def _results(workdir: Path, name: str = "results.json") -> dict:
    return json.loads((workdir / name).read_text())


def _error_lines(err: str) -> list[str]:
    """stderr without tqdm's progress bars (written with carriage returns) and empty lines."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "step/s" not in line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted TINY run."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    assert _train(workdir) == 0
    metrics = _metrics(workdir)
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"], "best/100 must be the best, not best/50"
    assert sorted(p.name for p in (workdir / "checkpoints" / "best").iterdir()) == ["100"]
    return workdir


def _copy(reference: Path, workdir: Path) -> Path:
    shutil.copytree(reference, workdir)
    return workdir


# --- 1. A run read on another number of devices (Orbax #683) -------------------------------------------

TRAIN_ON_2_DEVICES = """
import os, sys
import numpy as np
import jax
from jmeta import runs
from jmeta.cli import main
assert jax.device_count() == 2, jax.devices()
workdir, support_x, support_y, query_x = sys.argv[1], *(np.load(p) for p in sys.argv[2:5])
assert main(["train", {sinusoid!r}, "--workdir", workdir, *{tiny!r}]) == 0
run = runs.load_run(workdir)
np.savez(os.path.join(workdir, "..", "on_2.npz"), *jax.tree.leaves(run.params),
         predictions=runs.predict(run, support_x, support_y, query_x))
"""


def test_a_run_trained_on_2_devices_is_read_on_this_machine(tmp_path, capsys):
    """Orbax restores arrays as they were saved unless told otherwise ("Topology mismatch detected"):
    eval, load_run and predict on this process's devices must read the 2-device run."""
    rng = np.random.default_rng(0)
    files = {name: tmp_path / f"{name}.npy" for name in ("support_x", "support_y", "query_x")}
    np.save(files["support_x"], rng.uniform(-5, 5, (5, 1)).astype(np.float32))
    np.save(files["support_y"], rng.uniform(-1, 1, (5, 1)).astype(np.float32))
    np.save(files["query_x"], rng.uniform(-5, 5, (7, 1)).astype(np.float32))
    workdir = tmp_path / "run"
    script = textwrap.dedent(TRAIN_ON_2_DEVICES.format(sinusoid=SINUSOID, tiny=TINY))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(workdir), *map(str, files.values())],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    on_2 = np.load(tmp_path / "on_2.npz")
    assert jax.device_count() != 2, "this test reads the 2-device run on another device count"

    assert main(["eval", "--workdir", str(workdir)]) == 0
    trained, evaluated = _results(workdir), _results(workdir, "eval_best.json")
    assert (trained["protocol"]["devices"], evaluated["protocol"]["devices"]) == (2, jax.device_count())
    for steps, by_metric in trained["results"].items():
        for name, estimate in by_metric.items():
            np.testing.assert_allclose(evaluated["results"][steps][name]["mean"], estimate["mean"], rtol=1e-5)
            np.testing.assert_allclose(evaluated["results"][steps][name]["ci95"], estimate["ci95"], rtol=1e-5)

    run = jmeta.load_run(workdir)
    assert (run.step, run.checkpoint) == (100, "best")
    leaves = jax.tree.leaves(run.params)
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(np.asarray(leaf), on_2[f"arr_{i}"])

    capsys.readouterr()
    predict_args = [f"--{name.replace('_', '-')}={path}" for name, path in files.items() if name != "query_x"]
    assert main(["predict", "--workdir", str(workdir), *predict_args, f"--query={files['query_x']}"]) == 0
    printed = np.array([[float(v) for v in line.split()] for line in capsys.readouterr().out.splitlines()])
    np.testing.assert_allclose(printed, on_2["predictions"], rtol=1e-5, atol=1e-6)


# --- 2. A damaged newest checkpoint (AllenNLP #2129) ------------------------------------------------------


def _truncate(step: Path) -> None:
    """Every array file cut to a third (a copy or a write cut off)."""
    for path in (step / "default" / "ocdbt.process_0" / "d").iterdir():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _empty(step: Path) -> None:
    shutil.rmtree(step)
    step.mkdir()


def _drop_metadata(step: Path) -> None:
    (step / "default" / "_METADATA").unlink()


DAMAGES = {"truncated": _truncate, "emptied": _empty, "metadata-less": _drop_metadata}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_older(
    reference, tmp_path, capsys, monkeypatch, damage
):
    unraisable = []  # Orbax's abandoned reads of a failed restore must not print tracebacks either
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    workdir = _copy(reference, tmp_path / "run")
    (workdir / "results.json").unlink()
    checkpoints = workdir / "checkpoints"
    for name in ("latest", "best"):
        DAMAGES[damage](checkpoints / name / "100")

    # A reader skips it with a warning and moves nothing (a trainer may be writing the workdir).
    capsys.readouterr()
    run = jmeta.load_run(workdir, checkpoint="latest")
    assert run.step == 50
    warnings = [line for line in _error_lines(capsys.readouterr().err) if "warning" in line]
    assert len(warnings) == 1 and "latest/100" in warnings[0] and "left in place" in warnings[0], warnings
    assert sorted(p.name for p in (checkpoints / "latest").iterdir()) == ["100", "50"]
    with pytest.raises(NoIntactCheckpointError, match="best/100"):
        jmeta.load_run(workdir)  # the only best checkpoint is damaged

    # `jmeta train` sets both aside (renamed, not deleted), says so in one line, and resumes from step 50.
    assert _train(workdir) == 0
    lines = _error_lines(capsys.readouterr().err)
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1, lines
    assert "latest/100 -> latest/100.damaged-1" in warnings[0] and "best/100 -> best/100.damaged-1" in warnings[0]
    assert any(line.startswith("resuming from step 50") for line in lines), lines
    assert not any("Traceback" in line for line in lines), lines
    for name in ("latest", "best"):
        assert (checkpoints / name / "100.damaged-1").is_dir()
    assert _metrics(workdir) == _metrics(reference)
    assert _results(workdir) == _results(reference)
    gc.collect()
    assert [repr(u.exc_value) for u in unraisable] == []


def test_a_checkpoint_whose_data_files_are_cut_short_is_set_aside_without_tracebacks(
    reference, tmp_path, capsys, monkeypatch
):
    """Every array data file (in ``d/`` folders, wherever this Orbax version keeps them) cut short: Orbax's
    failed restore closes its event loop while TensorStore still reads, and each read still under way used to
    print an unraisable "Event loop is closed" traceback (dozens of them) around the one warning line."""
    workdir = _copy(reference, tmp_path / "run")
    (workdir / "results.json").unlink()
    step = workdir / "checkpoints" / "latest" / "100"
    for path in [path for path in step.rglob("*") if path.parent.name == "d" and path.is_file()]:
        path.write_bytes(path.read_bytes()[:100])
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for _ in range(5):  # how many reads are still under way when the loop closes varies: read it a few times
        assert jmeta.load_run(workdir, checkpoint="latest").step == 50
    capsys.readouterr()
    assert _train(workdir) == 0
    lines = _error_lines(capsys.readouterr().err)
    assert [line for line in lines if "warning" in line and "latest/100 -> latest/100.damaged-1" in line], lines
    assert f"resuming from step 100 ({workdir / 'checkpoints' / 'best' / '100'})" in lines, lines  # not latest/
    assert not any("Traceback" in line for line in lines), lines
    gc.collect()  # abandoned read coroutines are finalised (and report) here at the latest
    assert [repr(u.exc_value) for u in unraisable] == []
    assert _metrics(workdir) == _metrics(reference)


def test_with_no_intact_checkpoint_train_says_so_in_one_line_and_moves_nothing(reference, tmp_path, capsys):
    workdir = _copy(reference, tmp_path / "run")
    steps = [workdir / "checkpoints" / name / step for name, step in (("latest", "50"), ("latest", "100"))]
    steps.append(workdir / "checkpoints" / "best" / "100")
    for step in steps:
        _empty(step)
    capsys.readouterr()
    assert _train(workdir) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("jmeta train: error: no intact checkpoint in"), lines
    assert all(f"{s.parent.name}/{s.name}: an empty folder" in lines[0] for s in steps), lines[0]
    assert all(step.is_dir() for step in steps)
    assert not list(workdir.glob("checkpoints/*/*.damaged-*"))


def test_a_finished_run_whose_only_best_checkpoint_is_damaged_says_so_and_eval_last_still_works(
    reference, tmp_path, capsys
):
    workdir = _copy(reference, tmp_path / "run")
    _empty(workdir / "checkpoints" / "best" / "100")
    capsys.readouterr()
    assert _train(workdir) == 2  # resumes from latest/100 (intact, the last step): nothing to train, no best left
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 3, lines  # the warning, "resuming from step 100", the error
    assert "best/100 -> best/100.damaged-1 (an empty folder); using latest/100" in lines[0]
    assert lines[2].startswith("jmeta train: error: no intact checkpoint in") and "100.damaged-1" in lines[2]
    assert "--last" in lines[2]
    assert main(["eval", "--workdir", str(workdir), "--last"]) == 0
    assert _results(workdir, "eval_latest.json")["results"] == _results(reference)["results"]  # best was 100


# --- 3. A full disk (Orbax #605) and a read-only workdir ------------------------------------------------

TENSORSTORE_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing local file "{path}/_sharding": Failed writing: "{path}/_sharding" '
    "[OS error 28: No space left on device] [os_error_code='28'] [source locations='tensorstore/util/file.cc:42']"
)


def _orbax_full_disk(self, step, *args, **kwargs):
    """Orbax's own failure on a full disk: a ValueError from TensorStore (not an OSError)."""
    raise ValueError(TENSORSTORE_ENOSPC.format(path=f"{self.directory}/{step}.orbax-checkpoint-tmp/default"))


def _results_full_disk(self, *args, **kwargs):
    if self.name.startswith("results.json"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    return original_write_text(self, *args, **kwargs)


original_write_text = Path.write_text


def _events_full_disk(self):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    ("method", "replacement", "folder", "doing"),
    [
        ((ocp.CheckpointManager, "save"), _orbax_full_disk, "run/checkpoints", "saving the checkpoint of step 50"),
        ((Path, "write_text"), _results_full_disk, "run", "writing results.json"),
        ((EventFileWriter, "flush"), _events_full_disk, "run/tensorboard", "writing the TensorBoard events"),
    ],
    ids=["orbax-value-error", "results-json-oserror", "tensorboard-oserror"],
)
def test_a_full_disk_is_one_line_whichever_layer_reports_it(
    tmp_path, capsys, monkeypatch, method, replacement, folder, doing
):
    monkeypatch.setattr(*method, replacement)
    assert _train(tmp_path / "run") == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"jmeta train: error: [Errno {errno.ENOSPC}] no space left on the device holding {tmp_path / folder} while "
        f"{doing}; free some space and run the same command again (a training run resumes from its last complete "
        "checkpoint)"
    ]


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.slow  # two trainings in processes of their own, and a third: ~60 s on a shared 2-core machine
def test_a_really_full_disk_prints_one_line_and_the_rerun_with_space_ends_as_the_uninterrupted_run(reference, tmp_path):
    """In a process of its own, as a user runs it: Orbax's writer threads log and print their errors. Which
    write fails first (and so which layer reports it) depends on the size and on the threads' timing:
    two sizes (one checkpoint fits, or one and a half)."""
    for size in ("160k", "200k"):
        with _tmpfs(tmp_path / f"disk{size}", size) as disk:
            workdir = disk / "run"
            command = [sys.executable, "-m", "jmeta.cli", "train", SINUSOID, "--workdir", str(workdir), *TINY]
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
            assert done.returncode == 2
            lines = _error_lines(done.stderr)
            assert len(lines) == 1, lines
            assert lines[0].startswith(f"jmeta train: error: [Errno 28] no space left on the device holding {disk}")
            if size == "200k":
                subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
                assert _train(workdir) == 0
                assert _metrics(workdir) == _metrics(reference)
                assert _results(workdir) == _results(reference)


@pytest.mark.parametrize("how", ["write-fails", "read-only-mount"])
def test_eval_of_a_read_only_workdir_prints_its_results_and_says_it_could_not_write_them(
    reference, tmp_path, capsys, monkeypatch, how
):
    if how == "write-fails":  # root writes through chmod: the write itself fails
        workdir = _copy(reference, tmp_path / "run")

        def read_only(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

        monkeypatch.setattr(Path, "write_text", read_only)
        context = contextlib.nullcontext()
    else:
        context = _tmpfs(tmp_path / "disk", "4m")
    with context:
        if how == "read-only-mount":
            workdir = _copy(reference, tmp_path / "disk" / "run")
            subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "disk")], check=True)
        capsys.readouterr()
        assert main(["eval", "--workdir", str(workdir)]) == 0
        out, err = capsys.readouterr()
        assert not list(workdir.glob("eval_*"))
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"jmeta eval: warning: could not write {workdir}/eval_best.json")
    mean = _results(reference)["results"]["1"]["loss"]["mean"]
    assert f"{mean:.4f}" in out.splitlines()[1], out
