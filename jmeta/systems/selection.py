"""Algorithm selection (source article ``003_95a7f28474b43b71.txt``): a meta-model that picks, for a new
task, the base learner expected to do best on it (Rice 1976, "The Algorithm Selection Problem").

The pieces, all functions of NumPy arrays except the meta-model's training:

* a *pool* of base learners, each ``fit_predict(train_x, train_y, test_x, num_classes) -> labels``:
  :func:`nearest_centroid`, :func:`nearest_neighbour`, :func:`logistic_regression` and
  :func:`mlp_classifier` (the article's ``IrisBaseModel003``), the last two trained in JAX with a given
  step count and learning rate; :func:`evaluate_pool` scores every learner on every task's query set;
* what the meta-model reads about a task, from its support set only: :func:`meta_features` (size,
  class separability, feature correlation and two *landmarkers*, the leave-one-out accuracies of cheap
  learners, Pfahringer, Bensusan & Giraud-Carrier 2000), or :func:`learning_curves`, every learner's
  validation accuracy after training on a growing part of the support set (sample-size learning curves,
  Leite & Brazdil 2005), read by the article's LSTM (``LearningCurveLSTM003``);
* :func:`fit_selector` trains the meta-model, a small Flax network whose output ``k`` scores learner
  ``k``, on training tasks; :func:`select` picks a learner per new task;
* :func:`regret` and :func:`compare` measure the choice against the per-task *oracle* (the best learner
  of each task, the "virtual best") and the *single best* learner (the best on average over the
  training tasks), as in ASlib (Bischl et al. 2016), including the fraction of the gap between the two
  that the selector closes.

:func:`tabular_tasks` draws tasks from a tabular ``ClassDataset`` such as ``jmeta.data.load("iris")``:
random subsets of classes and features and random support sizes, so that different learners win.

Example::

    >>> import numpy as np
    >>> float(regret(np.array([0.5, 1.0]), np.array([1.0, 1.0])))
    0.25
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen

from jmeta.data import load
from jmeta.data.dataset import ClassDataset
from jmeta.evaluation import estimate
from jmeta.models import MLP
from jmeta.models.ports import IrisBaseModel003, LearningCurveLSTM003
from jmeta.nn import PyTree
from jmeta.systems.common import report
from jmeta.tasks.task import Task
from jmeta.validation import one_of, positive_float, positive_int

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]

META_FEATURES = (
    "classes",
    "log shots per class",
    "features",
    "fisher ratio",
    "mean abs correlation",
    "nearest-centroid loo accuracy",
    "1-nn loo accuracy",
)

# ---------------------------------------------------------------------------------------------------------
# Base learners


def nearest_centroid(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels each test point with the class whose training mean is nearest (Euclidean).

    Example::

        >>> import numpy as np
        >>> nearest_centroid(np.array([[0.0], [2.0]]), np.array([0, 1]), np.array([[1.6]]), 2).tolist()
        [1]
    """
    centroids = np.stack([train_x[train_y == c].mean(0) for c in range(num_classes)])
    return np.argmin(((test_x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)


def nearest_neighbour(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels each test point with the label of its nearest training point (Euclidean).

    Example::

        >>> import numpy as np
        >>> nearest_neighbour(np.array([[0.0], [2.0], [3.0]]), np.array([0, 1, 0]), np.array([[2.9]]), 2).tolist()
        [0]
    """
    return train_y[np.argmin(((test_x[:, None] - train_x[None]) ** 2).sum(-1), axis=1)]


def logistic_regression(steps: int = 100, learning_rate: float = 0.1, **padding: int) -> FitPredict:
    """Multinomial logistic regression (one ``Dense`` layer) on standardised features, trained by full-batch
    Adam for ``steps`` steps at ``learning_rate`` (the step count is its only regularisation).
    ``padding``: ``max_classes``, ``max_points``, ``max_features``, as for :func:`mlp_classifier`.

    Example::

        >>> import numpy as np
        >>> fit_predict = logistic_regression()
        >>> fit_predict(np.array([[0.0], [1.0]]), np.array([0, 1]), np.array([[0.9]]), 2).tolist()
        [1]
    """
    return _padded_classifier(lambda classes: linen.Dense(classes), steps, learning_rate, **padding)


def mlp_classifier(steps: int, learning_rate: float, *, hidden: int = 64, seed: int = 0, **padding: int) -> FitPredict:
    """The article's base learner (``IrisBaseModel003``, Dense(hidden)-ReLU-Dense) on standardised features,
    trained by full-batch Adam for ``steps`` steps at ``learning_rate`` from initial weights drawn with
    ``seed``.

    Tasks are padded to ``max_points`` points (default 64; the padding weighs 0 in the loss),
    ``max_features`` features (default 4; zero columns change nothing) and ``max_classes`` outputs
    (default 3; those past the task's classes are masked), so that tasks of every shape share one
    compiled program.

    Example::

        >>> import numpy as np
        >>> fit_predict = mlp_classifier(steps=50, learning_rate=0.05)
        >>> x, y = np.array([[0.0, 1.0], [1.0, 0.0]] * 3), np.array([0, 1] * 3)
        >>> fit_predict(x, y, x[:2], 2).tolist()
        [0, 1]
    """
    hidden = positive_int("hidden", hidden)
    return _padded_classifier(
        lambda classes: IrisBaseModel003(hidden=hidden, num_classes=classes), steps, learning_rate, seed, **padding
    )


def _padded_classifier(
    make_module: Callable[[int], linen.Module], steps: int, learning_rate: float, seed: int = 0, *,
    max_classes: int = 3, max_points: int = 64, max_features: int = 4,
) -> FitPredict:
    """``make_module(max_classes)`` trained by full-batch Adam on standardised, padded tasks."""
    steps = positive_int("steps", steps)
    learning_rate = positive_float("learning_rate", learning_rate)
    max_classes = positive_int("max_classes", max_classes)
    max_points = positive_int("max_points", max_points)
    max_features = positive_int("max_features", max_features)
    module = make_module(max_classes)
    key = jax.random.key(positive_int("seed", seed, allow_zero=True))

    def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int) -> np.ndarray:
        n, d = train_x.shape
        if max(n, len(test_x)) > max_points or d > max_features or num_classes > max_classes:
            raise ValueError(
                f"this classifier was built for at most max_points={max_points} points, max_features="
                f"{max_features} and max_classes={max_classes}; got {n} training and {len(test_x)} test "
                f"points, {d} features and {num_classes} classes."
            )
        mean, std = train_x.mean(0), train_x.std(0) + 1e-6

        def pad(a: np.ndarray) -> np.ndarray:
            return np.pad((a - mean) / std, ((0, max_points - len(a)), (0, max_features - d))).astype(np.float32)

        weight = (np.arange(max_points) < n).astype(np.float32)
        labels = np.pad(train_y, (0, max_points - n)).astype(np.int32)
        train, test = pad(train_x), pad(test_x)
        logits = _fit_and_score(module, key, train, labels, weight, test, num_classes, steps, learning_rate)
        return np.argmax(np.asarray(logits)[: len(test_x)], axis=-1)

    return fit_predict


@functools.partial(jax.jit, static_argnums=0)
def _fit_and_score(
    module: linen.Module, key: jax.Array, x: jax.Array, y: jax.Array, weight: jax.Array, test_x: jax.Array,
    k: jax.Array, steps: jax.Array, learning_rate: jax.Array,
) -> jax.Array:
    """Trains ``module`` on the points of weight 1 and scores ``test_x``; outputs from ``k`` on are masked.
    Only the module is static, so learners that differ in steps or learning rate share one program."""
    optimizer = optax.adam(learning_rate)

    def masked(params: PyTree, inputs: jax.Array) -> jax.Array:
        logits = module.apply({"params": params}, inputs)
        return jnp.where(jnp.arange(logits.shape[-1]) < k, logits, -1e9)

    def loss(params: PyTree) -> jax.Array:
        per_point = optax.softmax_cross_entropy_with_integer_labels(masked(params, x), y)
        return jnp.sum(weight * per_point) / jnp.sum(weight)

    def step(_: jax.Array, carry: tuple[PyTree, optax.OptState]) -> tuple[PyTree, optax.OptState]:
        params, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params = module.init(key, x)["params"]
    params, _ = jax.lax.fori_loop(0, steps, step, (params, optimizer.init(params)))
    return masked(params, test_x)


def evaluate_pool(pool: Mapping[str, FitPredict], tasks: Sequence[Task]) -> np.ndarray:
    """The query accuracy of every learner of ``pool`` on every task: shape ``(tasks, learners)``, learners
    in the pool's order. Each task's labels are ``0..k-1``.

    Example::

        >>> import numpy as np
        >>> task = Task(np.array([[0.0], [1.0]]), np.array([0, 1]), np.array([[0.2]]), np.array([0]))
        >>> evaluate_pool({"centroid": nearest_centroid}, [task]).tolist()
        [[1.0]]
    """
    if not pool:
        raise ValueError("pool must hold at least one learner; got an empty mapping.")
    scores = np.zeros((len(tasks), len(pool)))
    for i, task in enumerate(tasks):
        k = _num_classes(task.support_y)
        for j, fit_predict in enumerate(pool.values()):
            scores[i, j] = np.mean(fit_predict(task.support_x, task.support_y, task.query_x, k) == task.query_y)
    return scores


# ---------------------------------------------------------------------------------------------------------
# What the meta-model reads


def meta_features(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The :data:`META_FEATURES` of a task's support set ``x`` ``(points, features)``, ``y`` labels ``0..k-1``.

    Example::

        >>> import numpy as np
        >>> values = meta_features(np.array([[0.0, 1.0], [0.1, 0.0], [3.0, 1.0], [3.1, 0.2]]), np.array([0, 0, 1, 1]))
        >>> dict(zip(META_FEATURES, values.round(2).tolist()))["classes"]
        2.0
    """
    x, y = np.asarray(x, np.float64), np.asarray(y)
    k = _num_classes(y)
    points, features = x.shape
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    between = np.sum((means[y] - x.mean(0)) ** 2)
    within = np.sum((x - means[y]) ** 2)
    correlation = np.corrcoef(x, rowvar=False) if features > 1 else np.zeros((1, 1))
    off_diagonal = np.abs(np.nan_to_num(correlation))[~np.eye(features, dtype=bool)]
    return np.array([
        k,
        np.log(points / k),
        features,
        np.log1p(between / (within + 1e-9)),
        off_diagonal.mean() if off_diagonal.size else 0.0,
        _leave_one_out(nearest_centroid, x, y, k),
        _leave_one_out(nearest_neighbour, x, y, k),
    ])


def learning_curves(
    pool: Mapping[str, FitPredict], x: np.ndarray, y: np.ndarray, *, sizes: Sequence[int] = (1, 2, 3),
    validation_per_class: int = 1, seed: int = 0,
) -> np.ndarray:
    """Every learner's accuracy on a held-out part of the support set after training on ``sizes[t]``
    points per class of the rest: shape ``(len(sizes), learners)``, the input of ``LearningCurveLSTM003``.

    ``validation_per_class`` points of each class are held out (chosen at random with ``seed``); every
    class needs at least ``max(sizes) + validation_per_class`` support points.

    Example::

        >>> import numpy as np
        >>> x, y = np.arange(8.0)[:, None], np.array([0, 0, 0, 0, 1, 1, 1, 1])
        >>> learning_curves({"centroid": nearest_centroid}, x, y, sizes=(1, 3)).shape
        (2, 1)
    """
    sizes = tuple(positive_int("sizes entries", s) for s in sizes)
    validation_per_class = positive_int("validation_per_class", validation_per_class)
    k = _num_classes(y)
    rng = np.random.default_rng(seed)
    needed = max(sizes) + validation_per_class
    orders = [rng.permutation(np.flatnonzero(y == c)) for c in range(k)]
    if min(len(order) for order in orders) < needed:
        raise ValueError(
            f"every class needs at least max(sizes) + validation_per_class = {needed} support points; the "
            f"smallest has {min(len(order) for order in orders)}."
        )
    held_out = np.concatenate([order[:validation_per_class] for order in orders])
    curves = np.zeros((len(sizes), len(pool)))
    for t, size in enumerate(sizes):
        train = np.concatenate([order[validation_per_class : validation_per_class + size] for order in orders])
        for j, fit_predict in enumerate(pool.values()):
            curves[t, j] = np.mean(fit_predict(x[train], y[train], x[held_out], k) == y[held_out])
    return curves


# ---------------------------------------------------------------------------------------------------------
# The meta-model


class Selector(NamedTuple):
    """A trained meta-model: ``module`` with ``params``, and the ``mean`` and ``std`` that standardise its
    inputs."""

    module: linen.Module
    params: PyTree
    mean: np.ndarray
    std: np.ndarray


def fit_selector(
    inputs: np.ndarray,
    scores: np.ndarray,
    key: jax.Array,
    *,
    module: linen.Module | None = None,
    steps: int = 100,
    learning_rate: float = 1e-2,
    tolerance: float = 1e-9,
) -> Selector:
    """Trains a meta-model to name each training task's best learner.

    ``inputs`` is ``(tasks, meta_features)`` (e.g. :func:`meta_features`) or ``(tasks, time, learners)``
    (:func:`learning_curves`); ``scores`` ``(tasks, learners)`` is :func:`evaluate_pool`'s. The default
    ``module`` is ``MLP((32, learners))`` for the first and ``LearningCurveLSTM003(learners)`` for the
    second. The loss is the cross-entropy against the uniform distribution over each task's best
    learners (those within ``tolerance`` of its best score), so ties are not broken arbitrarily;
    ``steps`` full-batch Adam steps on standardised inputs.

    Example::

        >>> import jax, numpy as np
        >>> inputs, scores = np.array([[-1.0], [1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> selector = fit_selector(inputs, scores, jax.random.key(0), steps=100)
        >>> select(selector, inputs).tolist()
        [0, 1]
    """
    inputs, scores = np.asarray(inputs, np.float32), np.asarray(scores, np.float32)
    if scores.ndim != 2 or inputs.ndim not in (2, 3) or len(inputs) != len(scores):
        raise ValueError(
            "inputs must have shape (tasks, meta_features) or (tasks, time, learners) and scores (tasks, "
            f"learners), with the same number of tasks; got {inputs.shape} and {scores.shape}."
        )
    steps = positive_int("steps", steps)
    learning_rate = positive_float("learning_rate", learning_rate)
    learners = scores.shape[1]
    if module is None:
        module = MLP((32, learners)) if inputs.ndim == 2 else LearningCurveLSTM003(learners)
    mean, std = _standardiser(inputs)
    best = scores >= scores.max(1, keepdims=True) - tolerance
    targets = best / best.sum(1, keepdims=True)
    params = _train(module, learning_rate, steps, key, jnp.asarray((inputs - mean) / std), targets)
    return Selector(module, params, mean, std)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _train(
    module: linen.Module, learning_rate: float, steps: int, key: jax.Array, x: jax.Array, targets: jax.Array
) -> PyTree:
    optimizer = optax.adam(learning_rate)

    def loss(params: PyTree) -> jax.Array:
        return jnp.mean(optax.softmax_cross_entropy(module.apply({"params": params}, x), targets))

    def step(carry: tuple[PyTree, optax.OptState], _: None) -> tuple[tuple[PyTree, optax.OptState], None]:
        params, opt_state = carry
        updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    params = module.init(key, x)["params"]
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return params


def select(selector: Selector, inputs: np.ndarray) -> np.ndarray:
    """The index of the learner the meta-model picks for each task.

    Example::

        >>> import jax, numpy as np
        >>> selector = fit_selector(np.array([[0.0], [1.0]]), np.eye(2), jax.random.key(0), steps=50)
        >>> select(selector, np.array([[0.9]])).tolist()
        [1]
    """
    if not isinstance(selector, Selector):
        raise TypeError(f"selector must be a Selector from fit_selector; got {type(selector).__name__}.")
    x = (np.asarray(inputs, np.float32) - selector.mean) / selector.std
    return np.asarray(_choose(selector.module, selector.params, x))


@functools.partial(jax.jit, static_argnums=0)
def _choose(module: linen.Module, params: PyTree, x: jax.Array) -> jax.Array:
    return jnp.argmax(module.apply({"params": params}, x), axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Measuring a choice


def regret(chosen_scores: np.ndarray, oracle_scores: np.ndarray) -> float:
    """The mean over tasks of ``oracle_scores - chosen_scores``: what choosing cost against the oracle.

    Example::

        >>> import numpy as np
        >>> round(regret(np.array([0.9, 0.2]), np.array([0.9, 0.8])), 6)
        0.3
    """
    chosen, oracle = np.asarray(chosen_scores, np.float64), np.asarray(oracle_scores, np.float64)
    if chosen.shape != oracle.shape or chosen.ndim != 1 or chosen.size == 0:
        raise ValueError(
            f"chosen_scores and oracle_scores must be 1-D arrays of one score per task, of the same length; got "
            f"shapes {chosen.shape} and {oracle.shape}."
        )
    return float(np.mean(oracle - chosen))


def single_best(scores: np.ndarray) -> int:
    """The index of the learner with the highest mean score over the (training) tasks.

    Example::

        >>> import numpy as np
        >>> single_best(np.array([[1.0, 0.6], [0.0, 0.6]]))
        1
    """
    scores = _scores_matrix(scores)
    return int(np.argmax(scores.mean(0)))


class Comparison(NamedTuple):
    """Mean scores of the selector, the single best learner and the oracle on the test tasks; the
    regrets of the selector and of the single best learner against the oracle; and ``gap_closed``,
    ``(single_best - selector regret) / single_best regret`` (1: as good as the oracle; 0: no better
    than the single best; negative: worse; NaN when the single best is already the oracle)."""

    selector: float
    single_best: float
    oracle: float
    selector_regret: float
    single_best_regret: float
    gap_closed: float


def compare(scores: np.ndarray, chosen: np.ndarray, single_best_index: int) -> Comparison:
    """Compares the learners ``chosen`` per test task against the oracle and the single best learner
    (found on the *training* tasks with :func:`single_best`), given the test ``scores``.

    Example::

        >>> import numpy as np
        >>> compare(np.array([[1.0, 0.5], [0.0, 0.5]]), np.array([0, 1]), 1).gap_closed
        1.0
    """
    scores = _scores_matrix(scores)
    chosen = np.asarray(chosen)
    if chosen.shape != scores.shape[:1] or not np.issubdtype(chosen.dtype, np.integer):
        raise ValueError(f"chosen must hold one learner index per task, shape ({len(scores)},); got {chosen.shape}.")
    rows = np.arange(len(scores))
    oracle = scores.max(1)
    selector_regret = regret(scores[rows, chosen], oracle)
    single_best_regret = regret(scores[:, single_best_index], oracle)
    gap = (single_best_regret - selector_regret) / single_best_regret if single_best_regret > 0 else float("nan")
    return Comparison(
        float(scores[rows, chosen].mean()), float(scores[:, single_best_index].mean()), float(oracle.mean()),
        selector_regret, single_best_regret, float(gap),
    )


# ---------------------------------------------------------------------------------------------------------
# Tasks from a tabular data set


def tabular_tasks(
    dataset: ClassDataset, num_tasks: int, *, shots: tuple[int, int] = (2, 5), queries: int = 10,
    min_classes: int = 2, seed: int = 0,
) -> list[Task]:
    """Tasks drawn from a tabular ``dataset`` (float features ``(N, d)``): each a random subset of at least
    ``min_classes`` classes (relabelled ``0..k-1``) and of at least one feature, with a support size of
    ``shots[0]..shots[1]`` points per class drawn uniformly, and ``queries`` query points per class.

    Example::

        >>> import jmeta.data
        >>> tasks = tabular_tasks(jmeta.data.load("iris")["train"], 3, seed=1)
        >>> tasks[0].query_x.shape[0] % 10
        0
    """
    if not isinstance(dataset, ClassDataset) or dataset.images.ndim != 2:
        raise ValueError("dataset must be a ClassDataset of tabular features, shape (N, features), e.g. iris.")
    num_tasks = positive_int("num_tasks", num_tasks)
    low, high = (positive_int("shots entries", s) for s in shots)
    queries = positive_int("queries", queries)
    min_classes = positive_int("min_classes", min_classes)
    if low > high or high + queries > dataset.counts.min() or not 1 <= min_classes <= dataset.num_classes:
        raise ValueError(
            f"shots must be (low, high) with low <= high and high + queries <= {dataset.counts.min()} (the smallest "
            f"class), and min_classes at most {dataset.num_classes}; got shots={shots}, queries={queries}, "
            f"min_classes={min_classes}."
        )
    rng = np.random.default_rng(positive_int("seed", seed, allow_zero=True))
    x, y = np.asarray(dataset.images), np.asarray(dataset.labels)
    tasks = []
    for _ in range(num_tasks):
        classes = rng.choice(dataset.num_classes, rng.integers(min_classes, dataset.num_classes + 1), replace=False)
        columns = np.sort(rng.choice(x.shape[1], rng.integers(1, x.shape[1] + 1), replace=False))
        shots_per_class = rng.integers(low, high + 1)
        picks = [rng.choice(np.flatnonzero(y == c), shots_per_class + queries, replace=False) for c in classes]
        support = np.concatenate([p[:shots_per_class] for p in picks])
        query = np.concatenate([p[shots_per_class:] for p in picks])
        support_y, query_y = (np.repeat(np.arange(len(classes)), n) for n in (shots_per_class, queries))
        tasks.append(Task(x[support][:, columns], support_y, x[query][:, columns], query_y))
    return tasks


def _num_classes(y: np.ndarray) -> int:
    y = np.asarray(y)
    k = int(y.max()) + 1
    if not np.array_equal(np.unique(y), np.arange(k)):
        raise ValueError(f"labels must be 0..k-1 with every class present; got the labels {np.unique(y).tolist()}.")
    return k


def _leave_one_out(fit_predict: FitPredict, x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Leave-one-out accuracy; a point whose class would be left empty counts as a miss."""
    correct = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        if np.any(y[keep] == y[i]):
            correct += int(fit_predict(x[keep], y[keep], x[i : i + 1], k)[0] == y[i])
    return correct / len(y)


def _standardiser(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = tuple(range(inputs.ndim - 1))
    std = inputs.std(axes)
    return inputs.mean(axes), np.where(std > 0, std, 1.0).astype(np.float32)


def _scores_matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"scores must have shape (tasks, learners), as evaluate_pool returns; got {scores.shape}.")
    return scores


# ---------------------------------------------------------------------------------------------------------
# The `selection` program of `jmeta train`


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Scores a pool of base learners on ``config.meta_batch`` training and ``config.eval_tasks`` test tasks
    drawn from Iris (:func:`tabular_tasks`, training tasks from the training flowers, test
    tasks from the held-out ones), trains the selector (``config.selector``: an MLP on meta-features or the
    article's LSTM on learning curves) for ``config.steps`` Adam steps, and compares its choices on the test
    tasks with the single best learner (best on the training tasks) and the per-task oracle."""
    one_of("selector", config.selector, ("meta-features", "learning-curves"))
    data = load("iris", seed=config.seed)
    pool = {
        "nearest centroid": nearest_centroid,
        "1-nn": nearest_neighbour,
        "logistic regression": logistic_regression(),
        "mlp (article)": mlp_classifier(
            steps=config.mlp_steps, learning_rate=config.mlp_lr, seed=config.seed
        ),
    }
    shots = tuple(config.shots)
    if config.selector == "learning-curves" and shots[0] < max(config.curve_sizes) + 1:
        raise ValueError(
            f"selector='learning-curves' needs shots[0] >= max(curve_sizes) + 1 = {max(config.curve_sizes) + 1} "
            f"support points per class (one is held out); got shots={shots}. Raise shots or lower curve_sizes."
        )

    def tasks_and_inputs(split: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        tasks = tabular_tasks(
            data[split], positive_int(f"{split} tasks", count), shots=shots, queries=config.queries, seed=seed
        )
        if config.selector == "meta-features":
            inputs = [meta_features(t.support_x, t.support_y) for t in tasks]
        else:
            inputs = [
                learning_curves(pool, t.support_x, t.support_y, sizes=config.curve_sizes) for t in tasks
            ]
        return evaluate_pool(pool, tasks), np.stack(inputs)

    train_scores, train_inputs = tasks_and_inputs("train", config.meta_batch, config.seed)
    test_scores, test_inputs = tasks_and_inputs("test", config.eval_tasks, config.seed + 1)
    selector = fit_selector(train_inputs, train_scores, jax.random.key(config.seed), steps=config.steps)
    chosen = select(selector, test_inputs)
    best = single_best(train_scores)
    per_task = {
        "selector": test_scores[np.arange(len(chosen)), chosen],
        f"single best ({list(pool)[best]})": test_scores[:, best],
        "oracle": test_scores.max(1),
    }
    rows = {
        name: {
            "accuracy": estimate(scores),
            "regret_vs_oracle": estimate(per_task["oracle"] - scores),
            "gain_vs_single_best": estimate(scores - test_scores[:, best]),
        }
        for name, scores in per_task.items()
    }
    comparison = compare(test_scores, chosen, best)
    protocol = {
        "tasks": config.eval_tasks,
        "shots": f"{shots[0]}-{shots[1]} per class",
        "queries_per_task": f"{config.queries} per class",
        "inner_lr": "-",
        "checkpoint": f"selector ({config.selector}) after {config.steps} Adam steps on {config.meta_batch} tasks",
        "pool": list(pool),
    }
    mean_pool = {name: float(s) for name, s in zip(pool, test_scores.mean(0), strict=True)}
    return report(config, rows, protocol, gap_closed=comparison.gap_closed, pool_test_accuracy=mean_pool)


