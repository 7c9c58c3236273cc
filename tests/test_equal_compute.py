"""benchmarks/equal_compute.py on two tiny runs (4 meta-steps, a checkpoint every 2 without validation, every
one kept): a point per checkpoint, its example passes by the MAML formula, and the last point equal to
`jmeta eval --last` of that run on the same number of tasks (the same test key and tasks)."""

import importlib.util
import json
from pathlib import Path

import pytest

from jmeta.experiment import load_config
from jmeta.train import evaluate_workdir, train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
SINUSOID = REPO / "experiments" / "sinusoid_maml.py"
TINY = ["steps=4", "log_every=2", "val_every=0", "eval_tasks=5", "eval_steps=(1,)", "keep_checkpoints=0"]


def script():
    spec = importlib.util.spec_from_file_location("equal_compute", REPO / "benchmarks" / "equal_compute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("equal_compute")
    for name, inner_steps in (("one_step", 1), ("two_steps", 2)):
        train_and_evaluate(load_config(SINUSOID, [*TINY, f"inner_steps={inner_steps}"]), root / name)
    return root


def test_every_checkpoint_on_the_same_tasks_against_example_passes(two_runs, capsys):
    equal_compute = script()
    out = two_runs / "figure"
    runs = [str(two_runs / "one_step"), str(two_runs / "two_steps")]
    assert equal_compute.main([*runs, "--out", str(out), "--tasks", "20", "--metric", "loss"]) == 0
    results = json.loads((out / "equal_compute.json").read_text())
    assert (out / "equal_compute.png").stat().st_size > 10_000
    for run, inner_steps in zip(results["runs"], (1, 2), strict=True):
        assert [p["step"] for p in run["points"]] == [2, 4]
        per_step = 25 * (inner_steps * 10 + 10)  # meta_batch * (inner_steps * shots + queries)
        assert [p["training_example_passes"] for p in run["points"]] == [2 * per_step, 4 * per_step]
        assert all(p["tasks"] == 20 for p in run["points"])
    # The last checkpoint, as `jmeta eval --last` tests it with the run's own key: the same tasks, the same loss.
    again, _ = evaluate_workdir(two_runs / "two_steps", ["eval_tasks=20", "eval_steps=(1,)"], best=False)
    assert results["runs"][1]["points"][-1]["mean"] == pytest.approx(again["results"]["1"]["loss"]["mean"], rel=1e-6)
    assert "two_steps" in capsys.readouterr().out


def test_steps_asked_for_and_refusals(two_runs):
    equal_compute = script()
    protocol = {"eval_tasks": 10}
    results = equal_compute.compare([(two_runs / "one_step", [4])], protocol, seed=0, metric="loss")
    assert [p["step"] for p in results["runs"][0]["points"]] == [4]
    with pytest.raises(ValueError, match=r"has no checkpoint of steps \[3\]; it keeps \[2, 4\]"):
        equal_compute.compare([(two_runs / "one_step", [3])], {"eval_tasks": 10}, seed=0, metric="loss")
    with pytest.raises(ValueError, match="--metric must be one of loss"):
        equal_compute.compare([(two_runs / "one_step", [2])], {"eval_tasks": 10}, seed=0, metric="accuracy")
    with pytest.raises(ValueError, match="WORKDIR:S1,S2,... with positive steps; got 'runs/x:a'"):
        equal_compute.parse_workdir("runs/x:a")
