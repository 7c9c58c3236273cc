"""Algorithm selection: regret, the comparison against the oracle and the single best learner and the
bootstrap of the gap closed on constructed cases; tasks derived from real data sets; meta-features and
learning curves; selectors (each objective of the MLP on meta-features, the LSTM on learning curves) that
beat the single best learner where the best learner depends on the task; leave-one-data-set-out never
training on the held-out data set; argument errors; and the program at a tiny budget."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest
from sklearn.naive_bayes import GaussianNB

from jmeta.experiment import load_config
from jmeta.models.ports import LearningCurveLSTM003
from jmeta.systems import selection
from jmeta.systems.programs import run_program
from jmeta.systems.selection import (
    DATASETS,
    META_FEATURES,
    base_learners,
    compare,
    dataset_folds,
    derived_tasks,
    evaluate_pool,
    fit_selector,
    from_estimator,
    gap_closed_interval,
    k_nearest_neighbours,
    learning_curves,
    leave_one_dataset_out,
    meta_features,
    mlp_classifier,
    regret,
    select,
    single_best,
    sklearn_datasets,
)

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_regret_and_comparison_on_a_constructed_case():
    scores = np.array([[0.9, 0.5, 0.6], [0.2, 0.8, 0.6], [0.4, 0.4, 0.7], [1.0, 0.0, 0.7]])
    assert math.isclose(regret(scores[:, 0], scores.max(1)), (0 + 0.6 + 0.3 + 0) / 4)
    assert single_best(scores) == 2  # mean scores 0.625, 0.425, 0.65
    chosen = np.array([0, 1, 2, 1])  # right on three tasks, wrong on the last (score 0 instead of 1)
    result = compare(scores, chosen, single_best_index=2)
    oracle = scores.max(1)
    assert math.isclose(result.oracle, oracle.mean())
    assert math.isclose(result.selector, (0.9 + 0.8 + 0.7 + 0.0) / 4)
    assert math.isclose(result.single_best, 0.65)
    assert math.isclose(result.selector_regret, 1.0 / 4)
    assert math.isclose(result.single_best_regret, (0.3 + 0.2 + 0.0 + 0.3) / 4)
    assert math.isclose(result.gap_closed, (0.2 - 0.25) / 0.2)
    perfect = compare(scores, scores.argmax(1), 2)
    assert perfect.selector_regret == 0.0 and perfect.gap_closed == 1.0
    assert math.isnan(compare(scores[:, 2:], np.zeros(4, int), 0).gap_closed)
    per_fold = compare(scores, chosen, np.array([2, 2, 0, 0]))  # a single best per task, as over folds
    assert math.isclose(per_fold.single_best, (0.6 + 0.6 + 0.4 + 1.0) / 4)


def test_single_best_takes_the_first_of_tied_means():
    assert single_best(np.array([[1.0, 0.0], [0.0, 1.0]])) == 0


def test_gap_closed_interval_brackets_the_gap_closed():
    rng = np.random.default_rng(0)
    single = rng.uniform(0.5, 0.9, 400)
    oracle = single + rng.uniform(0.0, 0.2, 400)
    chosen = np.where(rng.random(400) < 0.6, oracle, single)  # the oracle's pick on about 60% of the tasks
    low, high = gap_closed_interval(chosen, single, oracle, resamples=1000)
    point = (chosen - single).mean() / (oracle - single).mean()
    assert low < point < high and 0.5 < low and high < 0.7 and high - low < 0.15
    assert all(math.isnan(v) for v in gap_closed_interval(single, single, single))


def test_derived_tasks_vary_and_keep_training_and_test_apart():
    x = np.arange(600.0 * 6).reshape(600, 6) + np.random.default_rng(0).normal(size=(600, 6))  # unique rows
    y = np.repeat(np.arange(6), 100)
    tasks = derived_tasks(x, y, 30, max_classes=4, max_features=5, max_shots=20, max_queries=50,
                          noise_probability=0.0, seed=1)
    for task in tasks:
        k = task.support_y.max() + 1
        assert 2 <= k <= 4 and set(task.query_y) <= set(range(k)) and np.bincount(task.support_y).min() >= 3
        assert len(task.support_y) <= 4 * 20 and len(task.query_y) <= 50  # at most 4 classes of 20
        assert 1 <= task.support_x.shape[1] <= 5 and task.query_x.shape[1] == task.support_x.shape[1]
        support_rows = {row.tobytes() for row in task.support_x}
        assert not any(row.tobytes() in support_rows for row in task.query_x)
    assert len({t.support_x.shape for t in tasks}) > 10 and len({int(t.support_y.max()) for t in tasks}) == 3
    noisy = derived_tasks(x, y, 20, max_features=2, noise_probability=1.0, seed=1)
    assert all(2 <= t.support_x.shape[1] <= 6 for t in noisy)  # 1-2 features and 1-4 noise columns


def test_sklearn_datasets_and_the_pool_on_their_tasks():
    data = sklearn_datasets()
    assert from_estimator(GaussianNB())(np.array([[0.0], [0.1], [2.0], [2.1]]), np.array([0, 0, 1, 1]),
                                        np.array([[1.8]]), 2).tolist() == [1]
    assert tuple(data) == DATASETS and [int(y.max()) + 1 for _, y in data.values()] == [3, 3, 2, 10]
    tasks = [derived_tasks(*data[name], 2, seed=3)[1] for name in DATASETS]
    pool = base_learners(mlp_steps=50, max_features=48, max_points=300)
    scores = evaluate_pool(pool, tasks)
    assert scores.shape == (4, 7) and np.all((0 <= scores) & (scores <= 1)) and scores.max(1).min() > 0.5


def test_meta_features_on_known_tasks():
    x = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.1], [5.0, 5.0], [5.1, 5.2], [5.3, 5.0]])
    values = dict(zip(META_FEATURES, meta_features(x, np.array([0, 0, 0, 1, 1, 1])), strict=True))
    assert values["log classes"] == pytest.approx(np.log(2)) and values["log points"] == pytest.approx(np.log(6))
    assert values["class entropy"] == pytest.approx(1.0) and values["mean abs correlation"] > 0.99
    assert values["max fisher ratio"] > 3 and values["first component variance"] > 0.99
    assert values["1-NN cv accuracy"] == 1.0 and values["LDA cv accuracy"] == 1.0
    shuffled = meta_features(x[:, :1], np.array([0, 1, 0, 1, 0, 1]))
    assert np.all(np.isfinite(shuffled)) and shuffled[META_FEATURES.index("max fisher ratio")] < 0.5
    constant = meta_features(np.ones((6, 2)), np.array([0, 0, 0, 1, 1, 1]))
    assert np.all(np.isfinite(constant))


def test_learning_curves_of_perfect_and_constant_learners():
    x = np.concatenate([np.zeros((4, 1)), np.ones((4, 1))])
    y = np.repeat([0, 1], 4)
    pool = {"1-NN": k_nearest_neighbours(1), "always 0": lambda tx, ty, qx, k: np.zeros(len(qx), int)}
    curves = learning_curves(pool, x, y, sizes=(1, 2, 3))
    np.testing.assert_array_equal(curves, [[1.0, 0.5]] * 3)
    with pytest.raises(ValueError, match="at least max\\(sizes\\) \\+ validation_per_class = 5"):
        learning_curves(pool, x, y, sizes=(4,))


def constructed_tasks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Meta-features z ~ N(0, I_3); learner 0 scores 1 where z0 > 0 and 0 elsewhere, learner 1 the
    reverse, learner 2 always 0.6: the single best learner is learner 2, the oracle scores 1."""
    z = np.random.default_rng(seed).normal(size=(n, 3))
    first = (z[:, 0] > 0).astype(float)
    return z, np.stack([first, 1 - first, np.full(n, 0.6)], 1)


@pytest.mark.parametrize("objective", ["accuracy", "regret", "best"])
def test_selector_on_meta_features_beats_the_single_best_learner(objective):
    train_z, train_scores = constructed_tasks(200, 0)
    test_z, test_scores = constructed_tasks(200, 1)
    selector = fit_selector(train_z, train_scores, jax.random.key(0), objective=objective, steps=200, batch=64,
                            ensemble=2)
    result = compare(test_scores, select(selector, test_z), single_best(train_scores))
    assert single_best(train_scores) == 2
    assert result.selector > result.single_best + 0.3 and result.gap_closed > 0.8, result


def test_lstm_on_learning_curves_beats_the_single_best_learner():
    """Three learners' curves over four steps; the best at the end is the one whose curve rose most."""
    rng = np.random.default_rng(0)
    curves = rng.uniform(0.3, 0.7, size=(300, 4, 3))
    rise = np.zeros((300, 3))
    rise[np.arange(300), rng.integers(0, 3, 300)] = 0.3
    curves += rise[:, None] * np.linspace(0, 1, 4)[None, :, None]
    scores = curves[:, -1] + rise * 0.5
    selector = fit_selector(curves[:200], scores[:200], jax.random.key(0), steps=200, ensemble=1,
                            module=LearningCurveLSTM003(num_learners=3, hidden=16))
    result = compare(scores[200:], select(selector, curves[200:]), single_best(scores[:200]))
    assert result.gap_closed > 0.5, result


def test_leave_one_dataset_out_never_trains_on_the_held_out_data_set(monkeypatch):
    groups = np.array(["a", "b", "c"] * 10)
    inputs = np.stack([np.searchsorted(["a", "b", "c"], groups), np.arange(30)], 1).astype(float)
    scores = np.random.default_rng(0).uniform(size=(30, 3))
    seen = []
    fit = selection.fit_selector

    def spy(train_inputs, train_scores, key, **options):
        seen.append(train_inputs[:, 0].astype(int))
        return fit(train_inputs, train_scores, key, **options)

    monkeypatch.setattr(selection, "fit_selector", spy)
    choices = leave_one_dataset_out(inputs, scores, groups, jax.random.key(0), steps=5)
    assert [sorted(set(s.tolist())) for s in seen] == [[1, 2], [0, 2], [0, 1]] and all(len(s) == 20 for s in seen)
    for name, train, test in dataset_folds(groups):
        assert name not in groups[train] and set(groups[test]) == {name} and len(train) + len(test) == 30
        assert np.all(choices.single_best[test] == single_best(scores[train]))
    assert choices.single_best_by_fold == {n: single_best(scores[groups != n]) for n in "abc"}
    rows = np.arange(30)
    oracle = scores.max(1)
    assert np.all(oracle >= scores[rows, choices.chosen]) and np.all(oracle >= scores[rows, choices.single_best])


@pytest.mark.parametrize("selector", ["meta-features", "learning-curves"])
def test_program_at_a_tiny_budget(tmp_path, selector):
    overrides = ["eval_tasks=3", "steps=5", "meta_batch=4", "mlp_steps=5", "resamples=50", f"selector={selector}"]
    config = load_config(str(REPO / "experiments/seed003_selection.py"), overrides)
    results = run_program(config, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == json.loads(json.dumps(results))
    entry = results["comparison"]
    assert entry["system"] == "selector" and entry["baseline"] == "single best"
    assert set(entry["gain"]) == {"mean", "ci95", "tasks", "diverged"} and entry["gain"]["tasks"] == 12
    per_task = {name: np.array(values) for name, values in results["per_task"].items()}
    assert np.all(per_task["oracle"] >= per_task["selector"]) and np.all(per_task["oracle"] >= per_task["single best"])
    assert entry["gain"]["mean"] == pytest.approx(np.mean(per_task["selector"] - per_task["single best"]))
    gap = results["gap_closed"]
    assert len(gap["ci95"]) == 2 and gap["tasks"] == 12
    assert set(results["by_dataset"]) == set(DATASETS)
    saved = np.load(tmp_path / "run" / "meta_data.npz")
    inputs_shape = (12, len(META_FEATURES)) if selector == "meta-features" else (12, 2, 7)  # curve sizes (1, 2)
    assert saved["inputs"].shape == inputs_shape and saved["scores"].shape == (12, 7)
    np.testing.assert_allclose(saved["scores"].max(1), per_task["oracle"])
    assert results["results"]["oracle"]["regret_vs_oracle"]["mean"] == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: regret(np.zeros(3), np.zeros(2)), "same length; got shapes \\(3,\\) and \\(2,\\)"),
        (lambda: fit_selector(np.zeros((3, 2)), np.zeros((4, 2)), jax.random.key(0)), "same number of tasks"),
        (lambda: fit_selector(np.zeros((3, 2)), np.zeros((3, 2)), jax.random.key(0), objective="x"),
         "objective must be one of 'accuracy'"),
        (lambda: compare(np.zeros((3, 2)), np.zeros(2, int), 0), "chosen must hold one learner index"),
        (lambda: compare(np.zeros((3, 2)), np.zeros(3, int), 2), "single_best_index must hold one learner index"),
        (lambda: single_best(np.zeros(3)), "scores must have shape \\(tasks, learners\\)"),
        (lambda: meta_features(np.zeros((3, 1)), np.array([0, 2, 2])), "labels must be 0..k-1"),
        (lambda: meta_features(np.zeros((4, 1)), np.array([0, 0, 1, 1])), "every class at least folds times"),
        (lambda: mlp_classifier(10, 0.1, max_classes=2)(np.zeros((3, 1)), np.arange(3), np.zeros((1, 1)), 3),
         "max_classes=2"),
        (lambda: derived_tasks(np.zeros((20, 2)), np.repeat([0, 1], 10), 2, max_shots=2), "3 <= min_shots <= max"),
        (lambda: derived_tasks(np.zeros((10, 2)), np.repeat([0, 1], 5), 2), "at least 8 examples"),
        (lambda: sklearn_datasets(["iris", "mnist"]), "names entries must be one of 'iris'"),
        (lambda: list(dataset_folds(["a", "a"])), "at least 2 data sets"),
        (lambda: k_nearest_neighbours(0), "k must be a positive integer"),
        (lambda: evaluate_pool({}, []), "pool must hold at least one learner"),
    ],
)
def test_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
