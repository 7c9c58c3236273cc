"""Algorithm selection: regret and the comparison against the oracle and the single best learner on
constructed cases, meta-features and learning curves, selectors (MLP on meta-features, the LSTM on learning
curves) that beat the single best learner where the best learner depends on the task, argument errors, and
a smoke run on Iris-derived tasks."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import jmeta.data
from jmeta.models.ports import LearningCurveLSTM003
from jmeta.systems.selection import (
    META_FEATURES,
    compare,
    evaluate_pool,
    fit_selector,
    learning_curves,
    logistic_regression,
    meta_features,
    mlp_classifier,
    nearest_centroid,
    nearest_neighbour,
    regret,
    select,
    single_best,
    tabular_tasks,
)
from jmeta.tasks.task import Task


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


def test_single_best_takes_the_first_of_tied_means():
    assert single_best(np.array([[1.0, 0.0], [0.0, 1.0]])) == 0


def test_meta_features_on_known_tasks():
    x = np.array([[0.0, 0.0], [0.1, 0.1], [5.0, 5.0], [5.1, 5.2]])
    values = dict(zip(META_FEATURES, meta_features(x, np.array([0, 0, 1, 1])), strict=True))
    assert values["classes"] == 2 and values["features"] == 2 and math.isclose(values["log shots per class"], np.log(2))
    assert values["fisher ratio"] > 5 and values["mean abs correlation"] > 0.99
    assert values["nearest-centroid loo accuracy"] == 1.0 and values["1-nn loo accuracy"] == 1.0
    single_feature = meta_features(x[:, :1], np.array([0, 1, 0, 1]))
    assert np.all(np.isfinite(single_feature)) and single_feature[META_FEATURES.index("1-nn loo accuracy")] == 0.0


def test_learning_curves_of_perfect_and_constant_learners():
    x = np.concatenate([np.zeros((4, 1)), np.ones((4, 1))])
    y = np.repeat([0, 1], 4)
    pool = {"centroid": nearest_centroid, "always 0": lambda tx, ty, qx, k: np.zeros(len(qx), int)}
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


def test_selector_on_meta_features_beats_the_single_best_learner():
    train_z, train_scores = constructed_tasks(200, 0)
    test_z, test_scores = constructed_tasks(200, 1)
    selector = fit_selector(train_z, train_scores, jax.random.key(0), steps=200)
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
    selector = fit_selector(curves[:200], scores[:200], jax.random.key(0), steps=300,
                            module=LearningCurveLSTM003(num_learners=3, hidden=16))
    result = compare(scores[200:], select(selector, curves[200:]), single_best(scores[:200]))
    assert result.gap_closed > 0.5, result


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: regret(np.zeros(3), np.zeros(2)), "same length; got shapes \\(3,\\) and \\(2,\\)"),
        (lambda: fit_selector(np.zeros((3, 2)), np.zeros((4, 2)), jax.random.key(0)), "same number of tasks"),
        (lambda: compare(np.zeros((3, 2)), np.zeros(2, int), 0), "one learner index per task"),
        (lambda: single_best(np.zeros(3)), "scores must have shape \\(tasks, learners\\)"),
        (lambda: meta_features(np.zeros((3, 1)), np.array([0, 2, 2])), "labels must be 0..k-1"),
        (lambda: mlp_classifier(10, 0.1, max_classes=2)(np.zeros((3, 1)), np.arange(3), np.zeros((1, 1)), 3),
         "max_classes=2"),
        (lambda: tabular_tasks(jmeta.data.load("iris")["test"], 2, shots=(2, 10)), "high \\+ queries <= 15"),
        (lambda: logistic_regression(steps=0), "steps must be a positive integer"),
        (lambda: evaluate_pool({}, []), "pool must hold at least one learner"),
    ],
)
def test_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_iris_smoke_run():
    data = jmeta.data.load("iris")
    pool = {
        "nearest centroid": nearest_centroid,
        "nearest neighbour": nearest_neighbour,
        "logistic regression": logistic_regression(),
        "mlp 20 steps": mlp_classifier(20, 1e-2),
        "mlp 200 steps": mlp_classifier(200, 1e-2),
    }
    train = tabular_tasks(data["train"], 80, shots=(3, 8), queries=10, seed=0)
    test = tabular_tasks(data["test"], 40, shots=(3, 5), queries=10, seed=1)
    assert all(isinstance(t, Task) and 2 <= t.support_y.max() + 1 <= 3 for t in train + test)
    train_scores, test_scores = evaluate_pool(pool, train), evaluate_pool(pool, test)
    assert train_scores.shape == (80, 5) and np.all((0 <= train_scores) & (train_scores <= 1))
    best = single_best(train_scores)

    features = [np.stack([meta_features(t.support_x, t.support_y) for t in tasks]) for tasks in (train, test)]
    assert np.all(np.isfinite(features[0])) and features[0].shape == (80, len(META_FEATURES))
    by_features = compare(test_scores, select(fit_selector(features[0], train_scores, jax.random.key(0)), features[1]),
                          best)

    curves = [np.stack([learning_curves(pool, t.support_x, t.support_y, sizes=(1, 2)) for t in tasks])
              for tasks in (train, test)]
    assert curves[0].shape == (80, 2, 5)
    lstm = LearningCurveLSTM003(num_learners=5, hidden=16)
    by_curves = compare(test_scores, select(fit_selector(curves[0], train_scores, jax.random.key(0), module=lstm),
                                            curves[1]), best)
    for result in (by_features, by_curves):
        assert result.oracle > 0.8 and result.oracle >= max(result.selector, result.single_best)
        assert 0 <= result.selector_regret <= 1 and 0 <= result.single_best_regret <= 1
