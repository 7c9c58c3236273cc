"""Algorithm selection (source article ``003_95a7f28474b43b71.txt``): a meta-model that picks, for a new
task, the base learner expected to do best on it (Rice 1976, "The Algorithm Selection Problem").

The pieces, all functions of NumPy arrays except the meta-model's training:

* a *meta-data set* of real tasks: :func:`derived_tasks` draws classification tasks from a data set
  (e.g. one of :func:`sklearn_datasets`, the four classification sets that ship with scikit-learn) by
  subsampling and grouping classes, subsampling features and training examples and, on some tasks,
  adding irrelevant features, so that the best learner differs from task to task; each task can be
  split several times into training and test examples, to average a learner's score over the splits;
* a *pool* of base learners, each ``fit_predict(train_x, train_y, test_x, num_classes) -> labels``:
  :func:`base_learners` (scikit-learn's k-NN, logistic regression, Gaussian naive Bayes, decision tree,
  linear and RBF SVMs, and the article's Dense(64) network, :func:`mlp_classifier`, trained in JAX);
  :func:`evaluate_pool` scores every learner on every task's held-out examples;
* what the meta-model reads about a task, from its training examples only: :func:`meta_features`
  (size, class balance, feature statistics and *landmarkers*, the cross-validated accuracies of cheap
  learners, Pfahringer, Bensusan & Giraud-Carrier 2000), or :func:`learning_curves`, every learner's
  validation accuracy after training on a growing part of the training examples (sample-size learning
  curves, Leite & Brazdil 2005), read by the article's LSTM (``LearningCurveLSTM003``);
* :func:`fit_selector` trains the meta-model, a vmapped ensemble of small Flax networks whose output ``k``
  scores learner ``k`` (a regression of each learner's accuracy relative to the task's mean, a
  cost-sensitive expected-regret objective, or plain classification of the best learner);
  :func:`select` picks a learner per new task; :func:`leave_one_dataset_out` trains it on the
  tasks of all data sets but one and selects on the tasks of that one, for each data set in turn;
* :func:`regret`, :func:`single_best`, :func:`compare` and :func:`gap_closed_interval` measure the choice
  against the per-task *oracle* (the best learner of each task, the "virtual best") and the *single best*
  learner (the best on average over the training tasks), as in ASlib (Bischl et al. 2016), including the
  fraction of the gap between the two that the selector closes.

Example::

    >>> import numpy as np
    >>> float(regret(np.array([0.5, 1.0]), np.array([1.0, 1.0])))
    0.25
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen
from sklearn import config_context
from sklearn import datasets as sklearn_data
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from jmeta.evaluation import estimate
from jmeta.models import MLP
from jmeta.models.ports import IrisBaseModel003, LearningCurveLSTM003
from jmeta.nn import PyTree
from jmeta.systems.common import comparison, paired_gain, report
from jmeta.tasks.task import Task
from jmeta.validation import one_of, positive_float, positive_int

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]

DATASETS = ("iris", "wine", "breast cancer", "digits")
_LOADERS = {
    "iris": sklearn_data.load_iris,
    "wine": sklearn_data.load_wine,
    "breast cancer": sklearn_data.load_breast_cancer,
    "digits": sklearn_data.load_digits,
}
LANDMARKERS = ("1-NN", "naive Bayes", "decision stump", "LDA", "nearest centroid")
META_FEATURES = (
    "log points",
    "log features",
    "log classes",
    "log points per feature",
    "log smallest class",
    "class entropy",
    "mean abs skewness",
    "mean kurtosis",
    "mean abs correlation",
    "first component variance",
    "components for 90% variance",
    "distinct values per point",
    "max fisher ratio",
    "mean fisher ratio",
    *(f"{name} cv accuracy" for name in LANDMARKERS),
)
OBJECTIVES = ("accuracy", "regret", "best")

# ---------------------------------------------------------------------------------------------------------
# The meta-data set: tasks derived from real data sets


def sklearn_datasets(names: Sequence[str] = DATASETS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The classification data sets bundled with scikit-learn (no download), as ``{name: (x, y)}``: ``x``
    float64 ``(examples, features)``, ``y`` int labels ``0..classes-1``. ``names`` from :data:`DATASETS`:
    iris (150 x 4, 3 classes), wine (178 x 13, 3), breast cancer (569 x 30, 2), digits (1797 x 64, 10).

    Example::

        >>> x, y = sklearn_datasets(["wine"])["wine"]
        >>> x.shape, int(y.max()) + 1
        ((178, 13), 3)
    """
    names = tuple(names)
    for name in names:
        one_of("names entries", name, DATASETS)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"names must be distinct names from {DATASETS}; got {names}.")
    return {name: tuple(np.asarray(a) for a in _LOADERS[name](return_X_y=True)) for name in names}


def derived_tasks(
    x: np.ndarray,
    y: np.ndarray,
    num_tasks: int,
    *,
    max_classes: int = 5,
    max_features: int = 16,
    min_shots: int = 3,
    max_shots: int = 40,
    max_queries: int = 300,
    noise_probability: float = 0.5,
    noise_ratio: int = 2,
    splits: int = 1,
    seed: int = 0,
) -> list[Task]:
    """``num_tasks`` classification tasks derived from one data set ``x`` ``(examples, features)``, ``y``
    labels ``0..C-1``, each varying what decides which learner wins:

    * classes: a random subset of ``m`` in ``2..min(C, max_classes)`` classes, grouped at random into
      ``k`` in ``2..m`` labels ``0..k-1`` (every label gets at least one class; when ``k < m`` some labels
      hold several classes, so that their examples form several clusters, which linear learners and naive
      Bayes cannot separate and nearest neighbours, trees and RBF kernels can);
    * features: a random subset of ``1..min(d, max_features)`` of those that vary within these classes,
      the count drawn log-uniformly;
    * training size: ``s`` drawn log-uniformly in ``min_shots..max_shots``; class ``c`` gets ``s * n_c /
      max n`` training examples (the data set's class proportions; at least 3, and at least 5 left for
      testing);
    * irrelevant features: with probability ``noise_probability``, ``1..noise_ratio * features``
      (log-uniform) columns of standard normal noise are appended, a known weakness of distance-based
      learners;
    * test (query) set: up to ``max_queries`` of the chosen classes' remaining examples, drawn at random.

    Each such learning problem is split ``splits`` times at random into training and test examples (fresh
    noise columns each time): the tasks are returned problem by problem, ``num_tasks * splits`` in all, so
    that a learner's accuracy on a problem can be averaged over its splits (repeated hold-out), which
    lowers the noise of the per-problem scores and of the oracle (the best of several noisy scores).

    Example::

        >>> x, y = sklearn_datasets(["iris"])["iris"]
        >>> task = derived_tasks(x, y, 1, seed=0)[0]
        >>> task.support_x.shape[1] == task.query_x.shape[1], set(task.support_y) == set(task.query_y)
        (True, True)
    """
    x, y = np.asarray(x, np.float64), np.asarray(y)
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ValueError(f"x must be (examples, features) and y (examples,); got shapes {x.shape} and {y.shape}.")
    num_tasks = positive_int("num_tasks", num_tasks)
    max_classes, max_features = positive_int("max_classes", max_classes), positive_int("max_features", max_features)
    noise_ratio = positive_int("noise_ratio", noise_ratio)
    max_shots, max_queries = positive_int("max_shots", max_shots), positive_int("max_queries", max_queries)
    min_shots = positive_int("min_shots", min_shots)
    if max_classes < 2 or not 3 <= min_shots <= max_shots:
        raise ValueError(f"max_classes must be >= 2 and 3 <= min_shots <= max_shots; got {max_classes}, {min_shots} "
                         f"and {max_shots}.")
    if not 0 <= noise_probability <= 1:
        raise ValueError(f"noise_probability must be in [0, 1]; got {noise_probability!r}.")
    num_classes = _num_classes(y)
    counts = np.bincount(y)
    if num_classes < 2 or counts.min() < 8:
        raise ValueError(f"y needs at least 2 classes of at least 8 examples each; got the counts {counts.tolist()}.")
    rng = np.random.default_rng(positive_int("seed", seed, allow_zero=True))
    tasks = []
    for _ in range(num_tasks):
        classes = rng.choice(num_classes, rng.integers(2, min(num_classes, max_classes) + 1), replace=False)
        labels = rng.integers(2, len(classes) + 1)
        grouping = np.concatenate([np.arange(labels), rng.integers(0, labels, len(classes) - labels)])
        relabel = np.zeros(num_classes, int)
        relabel[classes] = rng.permutation(grouping)
        members = [np.flatnonzero(y == c) for c in classes]
        shots = _log_uniform(rng, min_shots, max_shots)
        sizes = [int(np.clip(round(shots * len(m) / max(map(len, members))), 3, len(m) - 5)) for m in members]
        varying = np.flatnonzero(x[np.concatenate(members)].std(0) > 0)
        columns = rng.choice(varying, _log_uniform(rng, 1, min(len(varying), max_features)), replace=False)
        noise = _log_uniform(rng, 1, noise_ratio * len(columns)) if rng.random() < noise_probability else 0
        for _ in range(splits):
            rows = [rng.permutation(m) for m in members]
            support = np.concatenate([r[:n] for r, n in zip(rows, sizes, strict=True)])
            rest = np.concatenate([r[n:] for r, n in zip(rows, sizes, strict=True)])
            query = rng.choice(rest, min(len(rest), max_queries), replace=False)
            support_x = np.hstack([x[support][:, columns], rng.standard_normal((len(support), noise))])
            query_x = np.hstack([x[query][:, columns], rng.standard_normal((len(query), noise))])
            tasks.append(Task(support_x, relabel[y[support]], query_x, relabel[y[query]]))
    return tasks


def _log_uniform(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in ``low..high`` whose logarithm is uniform."""
    return int(min(high, np.floor(np.exp(rng.uniform(np.log(low), np.log(high + 1))))))


# ---------------------------------------------------------------------------------------------------------
# Base learners


def from_estimator(estimator: Any) -> FitPredict:
    """A scikit-learn classifier as a ``fit_predict``: a fresh clone is fitted on each call.

    Example::

        >>> import numpy as np
        >>> from sklearn.naive_bayes import GaussianNB
        >>> from_estimator(GaussianNB())(np.array([[0.0], [0.2], [2.0], [2.2]]), np.array([0, 0, 1, 1]),
        ...                              np.array([[1.9]]), 2).tolist()
        [1]
    """
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise TypeError(f"estimator must be a scikit-learn classifier; got {type(estimator).__name__}.")

    def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int) -> np.ndarray:
        return clone(estimator).fit(train_x, train_y).predict(test_x)

    return fit_predict


def k_nearest_neighbours(k: int = 5) -> FitPredict:
    """k-NN on standardised features (scikit-learn's), with ``k`` lowered to the number of training points
    when there are fewer.

    Example::

        >>> import numpy as np
        >>> k_nearest_neighbours(5)(np.array([[0.0], [1.0], [3.0]]), np.array([0, 0, 1]), np.array([[0.2]]), 2)
        array([0])
    """
    k = positive_int("k", k)

    def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int) -> np.ndarray:
        model = make_pipeline(StandardScaler(), KNeighborsClassifier(min(k, len(train_y)), algorithm="brute"))
        return model.fit(train_x, train_y).predict(test_x)

    return fit_predict


def mlp_classifier(
    steps: int, learning_rate: float, *, hidden: int = 64, seed: int = 0, max_classes: int = 10,
    max_features: int = 64, max_points: int = 512,
) -> FitPredict:
    """The article's base learner (``IrisBaseModel003``, Dense(hidden)-ReLU-Dense) on standardised features,
    trained by full-batch Adam for ``steps`` steps at ``learning_rate`` from initial weights drawn with
    ``seed``.

    Inputs are padded to ``max_features`` features (zero columns change nothing), ``max_classes`` outputs
    (those past the task's classes are masked) and ``max_points`` training and test points (padding weighs 0
    in the loss), so that tasks of every shape share one compiled program. A ValueError names the limit a
    task exceeds.

    Example::

        >>> import numpy as np
        >>> fit_predict = mlp_classifier(steps=50, learning_rate=0.05)
        >>> x, y = np.array([[0.0, 1.0], [1.0, 0.0]] * 3), np.array([0, 1] * 3)
        >>> fit_predict(x, y, x[:2], 2).tolist()
        [0, 1]
    """
    steps, learning_rate = positive_int("steps", steps), positive_float("learning_rate", learning_rate)
    max_classes, max_features = positive_int("max_classes", max_classes), positive_int("max_features", max_features)
    max_points = positive_int("max_points", max_points)
    module = IrisBaseModel003(hidden=positive_int("hidden", hidden), num_classes=max_classes)
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

        train = pad(train_x)
        weight = (np.arange(len(train)) < len(train_x)).astype(np.float32)
        labels = np.pad(train_y, (0, len(train) - len(train_y))).astype(np.int32)
        logits = _fit_and_score(module, key, train, labels, weight, pad(test_x), num_classes, steps, learning_rate)
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


def base_learners(
    *, mlp_steps: int = 200, mlp_lr: float = 0.01, seed: int = 0, max_classes: int = 10, max_features: int = 64,
    max_points: int = 512,
) -> dict[str, FitPredict]:
    """The pool: seven learners of different kinds, scikit-learn's at their default settings (features
    standardised for the scale-sensitive ones) and the article's network (:func:`mlp_classifier` with
    ``mlp_steps``, ``mlp_lr``, ``seed``, ``max_classes``, ``max_features``, ``max_points``).

    Example::

        >>> list(base_learners())[:3]
        ['5-NN', 'logistic regression', 'Gaussian naive Bayes']
    """
    scaled = functools.partial(make_pipeline, StandardScaler())
    return {
        "5-NN": k_nearest_neighbours(5),
        "logistic regression": from_estimator(scaled(LogisticRegression(max_iter=1000))),
        "Gaussian naive Bayes": from_estimator(GaussianNB()),
        "decision tree": from_estimator(DecisionTreeClassifier(random_state=seed)),
        "linear SVM": from_estimator(scaled(SVC(kernel="linear"))),
        "RBF SVM": from_estimator(scaled(SVC(kernel="rbf"))),
        "Dense(64) network (article)": mlp_classifier(
            mlp_steps, mlp_lr, seed=seed, max_classes=max_classes, max_features=max_features, max_points=max_points
        ),
    }


def evaluate_pool(pool: Mapping[str, FitPredict], tasks: Sequence[Task]) -> np.ndarray:
    """The query accuracy of every learner of ``pool`` on every task: shape ``(tasks, learners)``, learners
    in the pool's order. Each task's labels are ``0..k-1``. BLAS runs on one thread and scikit-learn skips
    its input checks (many tiny fits of finite data).

    Example::

        >>> import numpy as np
        >>> task = Task(np.array([[0.0], [1.0]]), np.array([0, 1]), np.array([[0.2]]), np.array([0]))
        >>> evaluate_pool({"1-NN": k_nearest_neighbours(1)}, [task]).tolist()
        [[1.0]]
    """
    if not pool:
        raise ValueError("pool must hold at least one learner; got an empty mapping.")
    scores = np.zeros((len(tasks), len(pool)))
    with _quick_sklearn():
        for i, task in enumerate(tasks):
            k = _num_classes(task.support_y)
            for j, fit_predict in enumerate(pool.values()):
                scores[i, j] = np.mean(fit_predict(task.support_x, task.support_y, task.query_x, k) == task.query_y)
    return scores


# ---------------------------------------------------------------------------------------------------------
# What the meta-model reads


def meta_features(x: np.ndarray, y: np.ndarray, *, folds: int = 3, seed: int = 0) -> np.ndarray:
    """The :data:`META_FEATURES` of a task's training examples ``x`` ``(points, features)``, ``y`` labels
    ``0..k-1`` (every class at least ``folds`` times): sizes (logarithms), the normalised entropy of the class
    proportions, feature statistics (skewness, kurtosis, correlation, principal components, discreteness,
    Fisher's discriminant ratio per feature), and the :data:`LANDMARKERS`' stratified ``folds``-fold
    cross-validated accuracies (splits drawn with ``seed``).

    Example::

        >>> import numpy as np
        >>> x = np.array([[0.0, 1.0], [0.1, 0.0], [0.3, 0.5], [3.0, 1.0], [3.1, 0.2], [2.9, 0.7]])
        >>> values = dict(zip(META_FEATURES, meta_features(x, np.array([0, 0, 0, 1, 1, 1]))))
        >>> float(values["1-NN cv accuracy"]), round(float(values["log classes"]), 3)
        (1.0, 0.693)
    """
    x, y = np.asarray(x, np.float64), np.asarray(y)
    k = _num_classes(y)
    counts = np.bincount(y)
    folds = positive_int("folds", folds)
    if x.ndim != 2 or len(x) != len(y) or folds < 2 or counts.min() < folds:
        raise ValueError(
            f"x must be (points, features) with one label per point, folds >= 2, and every class at least folds "
            f"times; got shapes {x.shape} and {y.shape}, folds={folds}, class counts {counts.tolist()}."
        )
    points, features = x.shape
    proportions = counts / points
    std = x.std(0)
    z = (x[:, std > 0] - x[:, std > 0].mean(0)) / std[std > 0]
    if z.shape[1]:
        skewness, kurtosis = np.abs((z**3).mean(0)).mean(), (z**4).mean(0).mean() - 3
        variances = np.sort(np.linalg.svd(z, compute_uv=False) ** 2)[::-1] / np.sum(z**2)
        first, needed = variances[0], (np.searchsorted(np.cumsum(variances), 0.9) + 1) / features
        correlation = np.abs(np.corrcoef(z, rowvar=False)) if z.shape[1] > 1 else np.zeros((1, 1))
        off_diagonal = correlation[~np.eye(len(correlation), dtype=bool)]
        mean_correlation = off_diagonal.mean() if off_diagonal.size else 0.0
    else:
        skewness = kurtosis = first = needed = mean_correlation = 0.0
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    between = (proportions[:, None] * (means - x.mean(0)) ** 2).sum(0)
    within = ((x - means[y]) ** 2).mean(0)
    fisher = np.log1p(between / (within + 1e-9))
    distinct = np.mean([len(np.unique(column)) for column in x.T]) / points
    return np.array([
        np.log(points),
        np.log(features),
        np.log(k),
        np.log(points / features),
        np.log(counts.min()),
        -np.sum(proportions * np.log(proportions)) / np.log(k),
        skewness,
        kurtosis,
        mean_correlation,
        first,
        needed,
        distinct,
        fisher.max(),
        fisher.mean(),
        *_landmarks(x, y, folds, seed),
    ])


def _landmarks(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> list[float]:
    """The stratified cross-validated accuracy of each of :data:`LANDMARKERS`."""
    scaled = functools.partial(make_pipeline, StandardScaler())
    learners = [
        scaled(KNeighborsClassifier(1, algorithm="brute")),
        GaussianNB(),
        DecisionTreeClassifier(max_depth=1, random_state=0),
        LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"),
        scaled(NearestCentroid()),
    ]
    correct = np.zeros(len(learners))
    with _quick_sklearn(), warnings.catch_warnings():
        # NearestCentroid's statistics of features constant within a class (unused without shrinkage)
        warnings.filterwarnings("ignore", "self.within_class_std_dev_ has at least 1 zero", UserWarning)
        warnings.filterwarnings("ignore", "(divide by zero|invalid value) encountered in divide", RuntimeWarning)
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
            constant = np.all(x[train] == x[train][0])  # nothing to learn from: the majority class
            for i, learner in enumerate(learners):
                predicted = (np.full(len(test), np.argmax(np.bincount(y[train]))) if constant
                             else clone(learner).fit(x[train], y[train]).predict(x[test]))
                correct[i] += np.sum(predicted == y[test])
    return (correct / len(y)).tolist()


def learning_curves(
    pool: Mapping[str, FitPredict], x: np.ndarray, y: np.ndarray, *, sizes: Sequence[int] = (1, 2),
    validation_per_class: int = 1, seed: int = 0,
) -> np.ndarray:
    """Every learner's accuracy on a held-out part of the training examples after training on ``sizes[t]``
    points per class of the rest: shape ``(len(sizes), learners)``, the input of ``LearningCurveLSTM003``.

    ``validation_per_class`` points of each class are held out (chosen at random with ``seed``); every
    class needs at least ``max(sizes) + validation_per_class`` points.

    Example::

        >>> import numpy as np
        >>> x, y = np.arange(8.0)[:, None], np.array([0, 0, 0, 0, 1, 1, 1, 1])
        >>> learning_curves({"1-NN": k_nearest_neighbours(1)}, x, y, sizes=(1, 3)).shape
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
            f"every class needs at least max(sizes) + validation_per_class = {needed} points; the "
            f"smallest has {min(len(order) for order in orders)}."
        )
    held_out = np.concatenate([order[:validation_per_class] for order in orders])
    curves = np.zeros((len(sizes), len(pool)))
    with _quick_sklearn():
        for t, size in enumerate(sizes):
            train = np.concatenate([order[validation_per_class : validation_per_class + size] for order in orders])
            for j, fit_predict in enumerate(pool.values()):
                curves[t, j] = np.mean(fit_predict(x[train], y[train], x[held_out], k) == y[held_out])
    return curves


# ---------------------------------------------------------------------------------------------------------
# The meta-model


class Selector(NamedTuple):
    """A trained meta-model: ``module`` with ``params`` (an ensemble: every leaf has a leading member
    axis), and the ``mean`` and ``std`` that standardise its inputs."""

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
    objective: str = "accuracy",
    steps: int = 1000,
    batch: int | None = None,
    learning_rate: float = 3e-3,
    weight_decay: float = 1e-2,
    ensemble: int = 5,
) -> Selector:
    """Trains a meta-model whose output ``k`` for a task scores learner ``k`` on it.

    ``inputs`` is ``(tasks, meta_features)`` (e.g. :func:`meta_features`) or ``(tasks, time, learners)``
    (:func:`learning_curves`); ``scores`` ``(tasks, learners)`` is :func:`evaluate_pool`'s. The default
    ``module`` is ``MLP((64, learners))`` for the first and ``LearningCurveLSTM003(learners)`` for the
    second. ``objective``:

    * ``"accuracy"``: regression of each learner's accuracy minus the task's mean accuracy over learners
      (mean squared error; the outputs are centred the same way), so that the network models which
      learner is better on a task rather than how hard the task is;
    * ``"regret"``: cost-sensitive classification, the expected regret ``sum_k softmax(outputs)_k *
      (best score - score_k)`` of choosing at random by the softmax of the outputs;
    * ``"best"``: plain classification, cross-entropy against the uniform distribution over each task's
      best learners.

    ``ensemble`` members are trained from different initial weights at once (``vmap``), each for
    ``steps`` AdamW steps (``learning_rate``, ``weight_decay``) on ``batch`` tasks drawn at random per step
    (all tasks when ``None``), on standardised inputs; :func:`select` averages their centred outputs.

    Example::

        >>> import jax, numpy as np
        >>> inputs, scores = np.array([[-1.0], [1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> selector = fit_selector(inputs, scores, jax.random.key(0), steps=100)
        >>> select(selector, inputs).tolist()
        [0, 1]
    """
    inputs, scores = np.asarray(inputs, np.float32), np.asarray(scores, np.float32)
    if scores.ndim != 2 or inputs.ndim not in (2, 3) or len(inputs) != len(scores) or len(scores) == 0:
        raise ValueError(
            "inputs must have shape (tasks, meta_features) or (tasks, time, learners) and scores (tasks, "
            f"learners), with the same number of tasks (at least 1); got {inputs.shape} and {scores.shape}."
        )
    one_of("objective", objective, OBJECTIVES)
    steps, ensemble = positive_int("steps", steps), positive_int("ensemble", ensemble)
    batch = len(scores) if batch is None else min(positive_int("batch", batch), len(scores))
    learning_rate = positive_float("learning_rate", learning_rate)
    if not 0 <= weight_decay < float("inf"):
        raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay!r}.")
    learners = scores.shape[1]
    if module is None:
        module = MLP((64, learners)) if inputs.ndim == 2 else LearningCurveLSTM003(learners)
    mean, std = _standardiser(inputs)
    keys = jax.random.split(key, ensemble)
    params = _train_ensemble(module, objective, steps, batch, keys, (inputs - mean) / std, scores, learning_rate,
                             weight_decay)
    return Selector(module, params, mean, std)


def _objective(name: str, outputs: jax.Array, scores: jax.Array) -> jax.Array:
    """The per-task loss of ``outputs`` ``(tasks, learners)`` for ``scores`` of the same shape."""
    if name == "accuracy":
        centred = outputs - outputs.mean(-1, keepdims=True)
        return jnp.mean((centred - (scores - scores.mean(-1, keepdims=True))) ** 2, -1)
    if name == "regret":
        return jnp.sum(jax.nn.softmax(outputs) * (scores.max(-1, keepdims=True) - scores), -1)
    best = scores >= scores.max(-1, keepdims=True) - 1e-9
    return optax.softmax_cross_entropy(outputs, best / best.sum(-1, keepdims=True))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _train_ensemble(
    module: linen.Module, objective: str, steps: int, batch: int, keys: jax.Array, x: jax.Array, scores: jax.Array,
    learning_rate: jax.Array, weight_decay: jax.Array,
) -> PyTree:
    """One member per key (``vmap``); compiled once per module, objective, step count, batch and shapes."""
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
    train = functools.partial(_train, module, objective, optimizer, steps, batch)
    return jax.vmap(train, in_axes=(0, None, None))(keys, x, scores)


def _train(
    module: linen.Module, objective: str, optimizer: optax.GradientTransformation, steps: int, batch: int,
    key: jax.Array, x: jax.Array, scores: jax.Array,
) -> PyTree:
    init_key, batch_key = jax.random.split(key)

    def loss(params: PyTree, rows: jax.Array) -> jax.Array:
        return jnp.mean(_objective(objective, module.apply({"params": params}, x[rows]), scores[rows]))

    def step(carry: tuple[PyTree, optax.OptState], i: jax.Array) -> tuple[tuple[PyTree, optax.OptState], None]:
        params, opt_state = carry
        rows = jax.random.choice(jax.random.fold_in(batch_key, i), len(x), (batch,), replace=False)
        updates, opt_state = optimizer.update(jax.grad(loss)(params, rows), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    params = module.init(init_key, x[:1])["params"]
    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jnp.arange(steps))
    return params


def select(selector: Selector, inputs: np.ndarray) -> np.ndarray:
    """The index of the learner the meta-model picks for each task: the argmax of its members' outputs,
    each centred over learners, averaged.

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
    outputs = jax.vmap(lambda p: module.apply({"params": p}, x))(params)
    return jnp.argmax(jnp.mean(outputs - outputs.mean(-1, keepdims=True), 0), axis=-1)


def dataset_folds(groups: Sequence[str] | np.ndarray) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Leave-one-data-set-out folds: for each data set named in ``groups`` (one name per task), in order of
    first appearance, ``(name, training task indices, test task indices)``: the tasks of every other data
    set, and its own.

    Example::

        >>> [(name, train.tolist(), test.tolist()) for name, train, test in dataset_folds(["a", "b", "a"])]
        [('a', [1], [0, 2]), ('b', [0, 2], [1])]
    """
    groups = np.asarray(groups)
    names = list(dict.fromkeys(groups.tolist()))
    if groups.ndim != 1 or len(names) < 2:
        raise ValueError(f"groups must name each task's data set, with at least 2 data sets; got {names}.")
    for name in names:
        yield name, np.flatnonzero(groups != name), np.flatnonzero(groups == name)


class Choices(NamedTuple):
    """Per test task: the learner the selector ``chosen`` and the ``single_best`` learner of the training
    tasks of its fold; and ``single_best_by_fold``, ``{held-out data set: single best index}``."""

    chosen: np.ndarray
    single_best: np.ndarray
    single_best_by_fold: dict[str, int]


def leave_one_dataset_out(
    inputs: np.ndarray, scores: np.ndarray, groups: Sequence[str] | np.ndarray, key: jax.Array, **options: Any
) -> Choices:
    """For each data set of ``groups`` (:func:`dataset_folds`), trains a selector (:func:`fit_selector` with
    ``options``, key folded with the fold's number) and finds the single best learner on the other data
    sets' tasks, and applies both to its own tasks. ``inputs`` and ``scores`` as for :func:`fit_selector`.

    Example::

        >>> import jax, numpy as np
        >>> inputs, scores = np.array([[-1.0], [1.0], [-0.9], [0.8]]), np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
        >>> leave_one_dataset_out(inputs, scores, ["a", "a", "b", "b"], jax.random.key(0)).chosen.tolist()
        [0, 1, 0, 1]
    """
    inputs, scores = np.asarray(inputs), _scores_matrix(scores)
    if len(inputs) != len(scores) or len(np.asarray(groups)) != len(scores):
        raise ValueError(
            f"inputs, scores and groups must have one entry per task; got {len(inputs)}, {len(scores)} and "
            f"{len(np.asarray(groups))}."
        )
    chosen, best = np.zeros(len(scores), int), np.zeros(len(scores), int)
    by_fold = {}
    for i, (name, train, test) in enumerate(dataset_folds(groups)):
        selector = fit_selector(inputs[train], scores[train], jax.random.fold_in(key, i), **options)
        chosen[test] = select(selector, inputs[test])
        best[test] = by_fold[name] = single_best(scores[train])
    return Choices(chosen, best, by_fold)


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


def compare(scores: np.ndarray, chosen: np.ndarray, single_best_index: int | np.ndarray) -> Comparison:
    """Compares the learners ``chosen`` per test task against the oracle and the single best learner
    (found on the *training* tasks with :func:`single_best`; one index, or one per task when the tasks
    come from several folds), given the test ``scores``.

    Example::

        >>> import numpy as np
        >>> compare(np.array([[1.0, 0.5], [0.0, 0.5]]), np.array([0, 1]), 1).gap_closed
        1.0
    """
    scores = _scores_matrix(scores)
    rows = np.arange(len(scores))
    chosen, best = (_indices(name, a, scores) for name, a in (("chosen", chosen), ("single_best_index",
                                                                                  single_best_index)))
    oracle = scores.max(1)
    selector_regret = regret(scores[rows, chosen], oracle)
    single_best_regret = regret(scores[rows, best], oracle)
    gap = (single_best_regret - selector_regret) / single_best_regret if single_best_regret > 0 else float("nan")
    return Comparison(
        float(scores[rows, chosen].mean()), float(scores[rows, best].mean()), float(oracle.mean()),
        selector_regret, single_best_regret, float(gap),
    )


def gap_closed_interval(
    selector: np.ndarray, single_best_scores: np.ndarray, oracle: np.ndarray, *, resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the gap closed, ``mean(selector - single best) / mean(oracle
    - single best)``: tasks are resampled with replacement ``resamples`` times (the three scores of a task
    stay together); resamples where the single best equals the oracle on every drawn task are skipped.

    Example::

        >>> import numpy as np
        >>> gap_closed_interval(np.ones(4), np.zeros(4), np.ones(4))
        (1.0, 1.0)
    """
    values = np.stack([np.asarray(a, np.float64) for a in (selector, single_best_scores, oracle)])
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"selector, single_best_scores and oracle must be 1-D of the same length >= 2; got "
                         f"{[np.shape(a) for a in (selector, single_best_scores, oracle)]}.")
    rng = np.random.default_rng(positive_int("seed", seed, allow_zero=True))
    draws = rng.integers(0, values.shape[1], (positive_int("resamples", resamples), values.shape[1]))
    means = values[:, draws].mean(-1)
    gap = means[2] - means[1]
    ratios = (means[0] - means[1])[gap > 0] / gap[gap > 0]
    if ratios.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def _indices(name: str, indices: int | np.ndarray, scores: np.ndarray) -> np.ndarray:
    indices = np.broadcast_to(np.asarray(indices), scores.shape[:1]) if np.ndim(indices) == 0 else np.asarray(indices)
    if (indices.shape != scores.shape[:1] or not np.issubdtype(indices.dtype, np.integer)
            or np.any((indices < 0) | (indices >= scores.shape[1]))):
        raise ValueError(
            f"{name} must hold one learner index in 0..{scores.shape[1] - 1} per task, shape ({len(scores)},); got "
            f"{np.asarray(indices).shape}."
        )
    return indices


@contextlib.contextmanager
def _quick_sklearn() -> Iterator[None]:
    """One BLAS thread and no input validation in scikit-learn: for many fits of tiny, finite arrays."""
    with threadpool_limits(1), config_context(assume_finite=True, skip_parameter_validation=True):
        yield


def _num_classes(y: np.ndarray) -> int:
    y = np.asarray(y)
    k = int(y.max()) + 1
    if not np.array_equal(np.unique(y), np.arange(k)):
        raise ValueError(f"labels must be 0..k-1 with every class present; got the labels {np.unique(y).tolist()}.")
    return k


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
    """Builds the meta-data set (``config.eval_tasks`` tasks from each of ``config.datasets``, drawn with
    :func:`derived_tasks`), scores the pool (:func:`base_learners`) on every task, and evaluates the selector
    (``config.selector``: an MLP ensemble on meta-features or the article's LSTM on learning curves,
    ``config.objective``, ``config.steps`` AdamW steps on ``config.meta_batch`` tasks per step) leave one
    data set out (:func:`leave_one_dataset_out`). Every task is a test task once, in the fold that holds
    its data set out; it is compared with that fold's single best learner and with its oracle. The
    meta-data set (``inputs``, ``scores``, ``datasets``, ``learners``) is saved to ``workdir/meta_data.npz``."""
    one_of("selector", config.selector, ("meta-features", "learning-curves"))
    names = tuple(config.datasets)
    data = sklearn_datasets(names)
    pool = base_learners(
        mlp_steps=config.mlp_steps, mlp_lr=config.mlp_lr, seed=config.seed, max_classes=config.max_classes,
        max_features=(config.noise_ratio + 1) * config.max_features,
        max_points=max(config.max_classes * config.max_shots, config.max_queries),
    )
    splits = positive_int("splits", config.splits)
    if config.selector == "learning-curves" and (min(config.curve_sizes) < 1 or max(config.curve_sizes) > 2):
        raise ValueError(f"curve_sizes must be sizes per class in 1..2 (tasks have 3 training points per class at "
                         f"least, one held out); got {config.curve_sizes}.")
    tasks, groups = [], []
    for i, name in enumerate(names):
        tasks += derived_tasks(
            *data[name], positive_int("eval_tasks", config.eval_tasks), max_classes=config.max_classes,
            max_features=config.max_features, min_shots=config.min_shots, max_shots=config.max_shots,
            max_queries=config.max_queries,
            noise_probability=config.noise_probability, noise_ratio=config.noise_ratio, splits=splits,
            seed=config.seed * 1000 + i,
        )
        groups += [name] * config.eval_tasks
    first = tasks[::splits]  # the selector reads the training examples of each problem's first split
    if config.selector == "meta-features":
        inputs = np.stack([meta_features(t.support_x, t.support_y, seed=config.seed) for t in first])
    else:
        inputs = np.stack([learning_curves(pool, t.support_x, t.support_y, sizes=config.curve_sizes,
                                           seed=config.seed) for t in first])
    scores = evaluate_pool(pool, tasks).reshape(len(first), splits, len(pool)).mean(1)
    np.savez(Path(workdir) / "meta_data.npz", inputs=inputs, scores=scores, datasets=np.asarray(groups),
             learners=np.asarray(list(pool)))
    choices = leave_one_dataset_out(
        inputs, scores, groups, jax.random.key(config.seed), objective=config.objective, steps=config.steps,
        batch=config.meta_batch, ensemble=config.ensemble, learning_rate=config.selector_lr,
        weight_decay=config.weight_decay,
    )
    rows_index = np.arange(len(first))
    per_task = {
        "selector": scores[rows_index, choices.chosen],
        "single best": scores[rows_index, choices.single_best],
        "oracle": scores.max(1),
    }
    rows = {
        name: {
            "accuracy": estimate(values),
            "regret_vs_oracle": estimate(per_task["oracle"] - values),
            "gain_vs_single_best": estimate(values - per_task["single best"]),
        }
        for name, values in per_task.items()
    }
    result = compare(scores, choices.chosen, choices.single_best)
    low, high = gap_closed_interval(*per_task.values(), resamples=config.resamples, seed=config.seed)
    groups = np.asarray(groups)
    learners = list(pool)
    by_dataset = {
        name: {
            "single_best_of_other_datasets": learners[choices.single_best_by_fold[name]],
            "gain_vs_single_best": estimate(per_task["selector"][groups == name]
                                            - per_task["single best"][groups == name])._asdict(),
            "oracle_gap": float(np.mean(per_task["oracle"][groups == name] - per_task["single best"][groups == name])),
            "learner_accuracy": dict(zip(learners, scores[groups == name].mean(0).round(4).tolist(), strict=True)),
            "times_best": dict(zip(learners, _times_best(scores[groups == name]).round(2).tolist(), strict=True)),
            "times_chosen": dict(zip(learners, np.bincount(choices.chosen[groups == name],
                                                           minlength=len(learners)).tolist(), strict=True)),
        }
        for name in names
    }
    protocol = {
        "tasks": len(first),
        "shots": f"{config.min_shots}-{config.max_shots} training examples per class (log-uniform; class proportions "
                 f"kept, 5 left for testing)",
        "queries_per_task": f"up to {config.max_queries} held-out examples of the task's classes",
        "inner_lr": "-",
        "checkpoint": (f"selector ({config.selector}, objective {config.objective}) after {config.steps} AdamW "
                       f"steps, ensemble of {config.ensemble}, leave one data set out over {', '.join(names)}"),
        "pool": learners,
        "datasets": {name: config.eval_tasks for name in names},
    }
    return report(
        config, rows, protocol,
        comparison=comparison("selector", "single best", paired_gain(per_task["selector"], per_task["single best"])),
        oracle_gain_vs_single_best=rows["oracle"]["gain_vs_single_best"]._asdict(),
        gap_closed={"mean": result.gap_closed, "ci95": [low, high], "tasks": len(first),
                    "ci_method": f"percentile bootstrap over tasks, {config.resamples} resamples"},
        by_dataset=by_dataset,
        per_task={"dataset": groups.tolist(), **{name: values.tolist() for name, values in per_task.items()}},
    )


def _times_best(scores: np.ndarray) -> np.ndarray:
    """How many tasks each learner wins, ties shared equally."""
    best = scores >= scores.max(1, keepdims=True) - 1e-12
    return (best / best.sum(1, keepdims=True)).sum(0)
