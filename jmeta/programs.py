"""Programs: the source systems (docs/source-systems.md) that are not one meta-learner trained episode by
episode, run by ``jmeta train`` when a config sets ``program``.

=================  ==========================================================================================
program            what it runs (source article)
=================  ==========================================================================================
``supervised``     SGD with momentum 0.9 on a class data set, test accuracy over test examples (000)
``distill``        a MAML Conv4 teacher on Omniglot, distilled into a smaller student, exported and reloaded (001)
``multitask``      a shared trunk with one head per training group, heads fitted on new tasks' support sets (002)
``selection``      a meta-model choosing among base learners on Iris-derived tasks (003)
``gmm``            EM for a Gaussian mixture on the Iris features, checked against scikit-learn (003)
``maml-mlp``       MAML, MAML++ or Reptile with the article's MLP on few-shot digit tasks (004)
=================  ==========================================================================================

Every program returns what ``jmeta.train.meta_test`` returns (``protocol``, ``results`` as
``{row: {metric: {mean, ci95, tasks}}}``, ``published``, ``published_source``), so that
``jmeta.train.format_results`` prints it, and writes ``config.json`` and ``results.json`` to the workdir.
The required config keys ``steps``, ``seed``, ``meta_batch`` and ``eval_tasks`` keep their roles where a
program has them (optimiser steps, seed, batch size, test tasks); each program's docstring says which.

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/seed003_selection.py", ["steps=3"])  # doctest: +SKIP
    >>> run_program(config, Path("runs/selection"))["results"]["selector"]     # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jmeta.evaluation import Estimate, estimate, evaluate
from jmeta.nn import Model, PyTree, from_linen
from jmeta.validation import one_of, positive_int

Program = Callable[[ml_collections.ConfigDict, Path], dict[str, Any]]
CI_OVER_TASKS = "95%, 1.96 * std / sqrt(tasks)"


def run_program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Runs the program ``config.program`` (one of :data:`PROGRAMS`), writes ``workdir/config.json`` and
    ``workdir/results.json``, and returns the results.

    Example::

        >>> from jmeta.experiment import load_config
        >>> config = load_config("experiments/seed003_gmm.py", ["steps=3"])  # doctest: +SKIP
        >>> run_program(config, Path("runs/gmm"))["protocol"]["task"]         # doctest: +SKIP
        'iris'
    """
    from jmeta.train import prepare_workdir, write_atomically

    program = PROGRAMS[one_of("program", config.program, tuple(PROGRAMS))]
    workdir = prepare_workdir(workdir, config)
    results = program(config, workdir)
    write_atomically(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def report(
    config: ml_collections.ConfigDict,
    rows: Mapping[str, Mapping[str, Estimate]],
    protocol: Mapping[str, Any],
    **details: Any,
) -> dict[str, Any]:
    """Results shaped like ``jmeta.train.meta_test``'s: ``protocol`` (``task``, ``seed`` and ``ci`` added
    to the given entries, which need ``tasks``, ``shots``, ``queries_per_task``, ``inner_lr`` and
    ``checkpoint`` for ``format_results``), ``results`` (one row per name), the published figures, and any
    ``details`` as further top-level entries.

    Every row must have the same metrics, the columns of ``format_results``'s table.

    Example::

        >>> import ml_collections
        >>> config = ml_collections.ConfigDict({"task": "iris", "seed": 0, "published": {}, "published_source": ""})
        >>> report(config, {"a": {"accuracy": estimate([0.0, 1.0])}}, {"tasks": 2})["results"]["a"]["accuracy"]["mean"]
        0.5
    """
    metrics = {name: sorted(by_metric) for name, by_metric in rows.items()}
    if len({tuple(names) for names in metrics.values()}) > 1:
        raise ValueError(f"every row must report the same metrics; got {metrics}.")
    return {
        "protocol": {"task": config.task, **protocol, "ci": protocol.get("ci", CI_OVER_TASKS), "seed": config.seed},
        "results": {name: {m: e._asdict() for m, e in by_metric.items()} for name, by_metric in rows.items()},
        "published": dict(config.published),
        "published_source": config.published_source,
        **details,
    }


# ---------------------------------------------------------------------------------------------------------
# Data shared by the programs


def scaled(images: np.ndarray) -> np.ndarray:
    """Images as float32, uint8 grey levels scaled to [0, 1].

    Example::

        >>> scaled(np.array([0, 255], np.uint8)).tolist()
        [0.0, 1.0]
    """
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def supervised_split(task: str, data_dir: str, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``((train_x, train_y), (test_x, test_y))`` over all ten classes of ``task``.

    MNIST and CIFAR-10 use TFDS's official train and test examples (``split="official"``). scikit-learn's
    digits has no such split, so its two class halves (0-4 and 5-9) are pooled back into ten classes and
    split 80/20 within each class, at random with ``seed``.

    Example::

        >>> (train_x, train_y), (test_x, test_y) = supervised_split("digits", "", seed=0)
        >>> len(train_x) + len(test_x), sorted(set(test_y.tolist())) == list(range(10))
        (1797, True)
    """
    from jmeta.data import load

    one_of("task", task, ("mnist", "cifar10", "digits"))
    if task != "digits":
        data = load(task, data_dir or None, split="official")
        return tuple((scaled(data[s].images), np.asarray(data[s].labels)) for s in ("train", "test"))
    data = load("digits")
    images = np.concatenate([data["train"].images, data["test"].images])
    labels = np.concatenate([data["train"].labels, data["test"].labels + data["train"].num_classes])
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: round(0.2 * len(members))]] = True
    return (scaled(images[~test]), labels[~test]), (scaled(images[test]), labels[test])


def omniglot(config: ml_collections.ConfigDict) -> Any:
    """The Omniglot splits of ``config.data_dir`` (``config.split``)."""
    from jmeta.data import load

    return load("omniglot", config.data_dir or None, split=config.split)


def few_shot_protocol(config: ml_collections.ConfigDict, checkpoint: str) -> dict[str, Any]:
    """The protocol entries of a few-shot meta-test with ``config``'s settings."""
    return {
        "ways": config.ways,
        "tasks": config.eval_tasks,
        "shots": config.eval_shots,
        "queries_per_task": config.eval_queries * config.ways,
        "inner_steps": list(config.eval_steps),
        "inner_lr": config.inner_lr,
        "checkpoint": checkpoint,
    }


def train_steps(
    trainer_update: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]],
    state: Any,
    sample: Callable[[jax.Array, int], Any],
    key: jax.Array,
    *,
    steps: int,
    batch: int,
) -> tuple[Any, dict[str, float]]:
    """Runs ``steps`` updates ``state, metrics = trainer_update(state, sample(fold_in(key, i), batch))`` in
    one compiled scan; returns the state and the metrics of the last step. ``sample`` is passed to the
    compiled function as an argument, so it must be a pytree (an ``EpisodeSampler``, a
    ``jax.tree_util.Partial`` holding the data) and its data are not baked into the program.

    Example::

        >>> update = lambda s, x: (s + x.sum(), {"x": x.sum()})
        >>> ones = jax.tree_util.Partial(lambda k, n: jnp.ones(n))
        >>> train_steps(update, jnp.zeros(()), ones, jax.random.key(0), steps=3, batch=2)[0]
        Array(6., dtype=float32)
    """

    @jax.jit
    def run(state: Any, sample: Any) -> tuple[Any, dict[str, jax.Array]]:
        def one(state: Any, i: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
            return trainer_update(state, sample(jax.random.fold_in(key, i), batch))

        return jax.lax.scan(one, state, jnp.arange(steps))

    state, metrics = run(state, sample)
    return state, {name: float(values[-1]) for name, values in metrics.items()}


# ---------------------------------------------------------------------------------------------------------
# 000: supervised image classification


def supervised(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Trains ``config.model`` (``image_mlp_000`` or ``source_mlp_004``) on ``config.task``'s training
    examples by ``config.steps`` steps of SGD (``config.lr``, momentum 0.9) on mini-batches of
    ``config.meta_batch``; reports accuracy on ``config.eval_tasks`` test examples (all, or a random subset) with a 95%
    CI over examples (``1.96 * std / sqrt(n)`` of the per-example correctness)."""
    from jmeta.losses import cross_entropy
    from jmeta.models.ports import ImageMLP000, SourceMLP004

    modules = {"image_mlp_000": ImageMLP000, "source_mlp_004": SourceMLP004}
    module = modules[one_of("model", config.model, tuple(modules))](num_classes=10)
    (train_x, train_y), (test_x, test_y) = supervised_split(config.task, config.data_dir, config.seed)
    model = from_linen(module, jnp.asarray(train_x[:1]))
    init_key, batch_key = jax.random.split(jax.random.key(config.seed))
    params, model_state = model.init(init_key)
    optimizer = optax.sgd(config.lr, momentum=0.9)

    def draw(x: jax.Array, y: jax.Array, key: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
        picks = jax.random.randint(key, (size,), 0, len(y))
        return x[picks], y[picks]

    sample = jax.tree_util.Partial(draw, jnp.asarray(train_x), jnp.asarray(train_y))

    def update(carry: tuple[PyTree, optax.OptState], batch: tuple[jax.Array, jax.Array]) -> tuple[Any, dict]:
        params, opt_state = carry
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(model.apply(p, model_state, batch[0])[0], batch[1]))(
            params
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss}

    steps, batch = positive_int("steps", config.steps), positive_int("meta_batch", config.meta_batch)
    (params, _), last = train_steps(
        update, (params, optimizer.init(params)), sample, batch_key, steps=steps, batch=batch
    )
    count = min(positive_int("eval_tasks", config.eval_tasks), len(test_y))
    scored = np.random.default_rng(config.seed).permutation(len(test_y))[:count]
    logits, _ = jax.jit(model.apply)(params, model_state, jnp.asarray(test_x[scored]))
    correct = np.asarray(jnp.argmax(logits, -1) == jnp.asarray(test_y[scored]), np.float64)
    protocol = {
        "model": config.model,
        "tasks": count,
        "shots": "all training examples",
        "queries_per_task": 1,
        "inner_lr": config.lr,
        "checkpoint": f"last, step {steps} (SGD momentum 0.9, batch {batch}; final training loss {last['loss']:.4g})",
        "ci": "95% over test examples, 1.96 * std / sqrt(examples)",
    }
    return report(config, {"test": {"accuracy": estimate(correct)}}, protocol)


# ---------------------------------------------------------------------------------------------------------
# 001: distillation, and export of the distilled student


def distillation(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Meta-trains a MAML Conv4 teacher (``config.hidden`` filters) on Omniglot for ``config.steps``
    meta-steps of ``config.meta_batch`` tasks, then a student (``config.student_hidden`` filters) as long on
    the teacher's adapted predictions (:func:`jmeta.distill.distill`); meta-tests both on the same
    ``config.eval_tasks`` tasks, exports the student adapted to one test task to ``workdir/student`` and
    checks that the reloaded predictor agrees with it."""
    from jmeta import losses
    from jmeta.distill import distill
    from jmeta.learners import maml
    from jmeta.meta_trainer import meta_trainer
    from jmeta.models import Conv4
    from jmeta.tasks.episodes import make_episode_sampler

    data = omniglot(config)
    train = make_episode_sampler(data["train"], config.ways, config.shots, config.queries)
    test = make_episode_sampler(data["test"], config.ways, config.eval_shots, config.eval_queries)
    example = jnp.zeros((1, *data["train"].input_shape))
    teacher_key, student_key, train_key, test_key = jax.random.split(jax.random.key(config.seed), 4)
    metrics = {"accuracy": losses.accuracy}

    def conv4(hidden: int) -> tuple[dict[str, Any], Model]:
        kwargs = {"num_classes": config.ways, "hidden": hidden, "downsample": config.downsample, "pool": config.pool}
        return kwargs, from_linen(Conv4(**kwargs), example)

    def meta_train(learner: Any, key: jax.Array) -> Any:
        trainer = meta_trainer(learner, optax.adam(config.meta_lr), batching=config.batching)
        state, _ = train_steps(
            trainer.update, trainer.init(key), train, train_key, steps=config.steps, batch=config.meta_batch
        )
        return state

    _, teacher_model = conv4(config.hidden)
    teacher = maml(teacher_model, losses.cross_entropy, config.inner_lr, config.inner_steps, metrics=metrics)
    teacher_state = meta_train(teacher, teacher_key)
    student_kwargs, student_model = conv4(config.student_hidden)
    student = distill(
        student_model,
        teacher,
        teacher_state.params,
        teacher_state.model_state,
        inner_lr=config.inner_lr,
        steps=config.inner_steps,
        temperature=config.temperature,
        hard_weight=config.hard_weight,
        teacher_steps=max(config.eval_steps),
    )
    student_state = meta_train(student, student_key)

    def meta_test(learner: Any, state: Any) -> dict[int, dict[str, Estimate]]:
        return evaluate(
            learner,
            state.params,
            state.model_state,
            test,
            test_key,
            num_tasks=config.eval_tasks,
            steps=config.eval_steps,
            batching_strategy=config.batching,
        )

    teacher_results, student_results = meta_test(teacher, teacher_state), meta_test(student, student_state)
    rows = {}
    for steps in config.eval_steps:
        rows[f"teacher, {steps} steps"] = {"accuracy": teacher_results[steps]["accuracy"]}
        rows[f"student, {steps} steps"] = {"accuracy": student_results[steps]["accuracy"]}
    export = export_student(config, student, student_state, student_kwargs, test, test_key, workdir)
    protocol = few_shot_protocol(config, f"last, step {config.steps} (teacher and student each)")
    agreement = {str(k): by_metric["agreement"]._asdict() for k, by_metric in student_results.items()}
    return report(config, rows, protocol, student_teacher_agreement=agreement, export=export)


def export_student(
    config: ml_collections.ConfigDict,
    student: Any,
    state: Any,
    kwargs: dict[str, Any],
    test: Callable[[jax.Array, int], Any],
    key: jax.Array,
    workdir: Path,
) -> dict[str, Any]:
    """Adapts the student to one test task, exports it to ``workdir/student`` with ``export_model``,
    reloads it with ``load_predictor`` and compares the two on the task's query set."""
    from jmeta.export import export_model, load_predictor

    task = jax.tree.map(lambda a: a[0], test(key, 1))
    steps = max(config.eval_steps)
    adapted = student.adapt(state.params, state.model_state, task.support_x, task.support_y, steps)
    logits, _ = student.predict(adapted, state.model_state, task.query_x)
    path = export_model(
        workdir / "student",
        "conv4",
        kwargs,
        adapted,
        state.model_state,
        input_shape=task.query_x.shape[1:],
        overwrite=True,
    )
    reloaded = load_predictor(path)(task.query_x)
    return {
        "path": str(path),
        "inner_steps": steps,
        "predictions_agree": float(np.mean(np.argmax(reloaded, -1) == np.asarray(jnp.argmax(logits, -1)))),
        "max_abs_logit_difference": float(np.max(np.abs(reloaded - np.asarray(logits)))),
        "query_accuracy": float(np.mean(np.argmax(reloaded, -1) == np.asarray(task.query_y))),
    }


# ---------------------------------------------------------------------------------------------------------
# 002: multi-task shared trunk


def multitask_program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Trains ``SharedTrunk002`` (``config.features`` ReLU features) with one head per fixed group of
    ``config.ways`` Omniglot training classes, ``config.steps`` Adam steps (``config.meta_lr``) on batches of
    ``config.meta_batch`` groups with ``config.examples`` examples per class; then fits a fresh head by
    ``config.head_steps`` gradient steps on each of ``config.eval_tasks`` test tasks' support sets."""
    from jmeta.models.ports import SharedTrunk002
    from jmeta.multitask import make_group_sampler, multitask
    from jmeta.tasks.episodes import make_episode_sampler

    data = omniglot(config)
    example = jnp.zeros((1, *data["train"].input_shape))
    groups = make_group_sampler(data["train"], config.ways, config.examples, seed=config.seed)
    mt = multitask(
        from_linen(SharedTrunk002(features=config.features), example),
        example,
        num_heads=groups.num_groups,
        num_classes=config.ways,
        optimizer=optax.adam(config.meta_lr),
        head_steps=config.head_steps,
        head_lr=config.head_lr,
    )
    init_key, train_key, test_key = jax.random.split(jax.random.key(config.seed), 3)
    state = mt.init(init_key)
    for step in range(positive_int("steps", config.steps)):
        state, metrics = mt.step(state, groups(jax.random.fold_in(train_key, step), config.meta_batch))
    test = make_episode_sampler(data["test"], config.ways, config.eval_shots, config.eval_queries)
    results = evaluate(
        mt.learner,
        state.params.trunk,
        state.model_state,
        test,
        test_key,
        num_tasks=config.eval_tasks,
        steps=(0, config.head_steps),
    )
    protocol = {
        **few_shot_protocol(config, f"last, step {config.steps} (final training loss {float(metrics['loss']):.4g})"),
        "inner_steps": [0, config.head_steps],
        "inner_lr": config.head_lr,
        "training_groups": groups.num_groups,
    }
    rows = {f"head steps {k}": {"accuracy": by_metric["accuracy"]} for k, by_metric in results.items()}
    return report(config, rows, protocol)


# ---------------------------------------------------------------------------------------------------------
# 003: algorithm selection and EM for Gaussian mixtures


def selection_program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Scores a pool of base learners on ``config.meta_batch`` training and ``config.eval_tasks`` test tasks
    drawn from Iris (:func:`jmeta.selection.tabular_tasks`, training tasks from the training flowers, test
    tasks from the held-out ones), trains the selector (``config.selector``: an MLP on meta-features or the
    article's LSTM on learning curves) for ``config.steps`` Adam steps, and compares its choices on the test
    tasks with the single best learner (best on the training tasks) and the per-task oracle."""
    from jmeta import selection
    from jmeta.data import load

    one_of("selector", config.selector, ("meta-features", "learning-curves"))
    data = load("iris", seed=config.seed)
    pool = {
        "nearest centroid": selection.nearest_centroid,
        "1-nn": selection.nearest_neighbour,
        "logistic regression": selection.logistic_regression(),
        "mlp (article)": selection.mlp_classifier(
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
        tasks = selection.tabular_tasks(
            data[split], positive_int(f"{split} tasks", count), shots=shots, queries=config.queries, seed=seed
        )
        if config.selector == "meta-features":
            inputs = [selection.meta_features(t.support_x, t.support_y) for t in tasks]
        else:
            inputs = [
                selection.learning_curves(pool, t.support_x, t.support_y, sizes=config.curve_sizes) for t in tasks
            ]
        return selection.evaluate_pool(pool, tasks), np.stack(inputs)

    train_scores, train_inputs = tasks_and_inputs("train", config.meta_batch, config.seed)
    test_scores, test_inputs = tasks_and_inputs("test", config.eval_tasks, config.seed + 1)
    selector = selection.fit_selector(train_inputs, train_scores, jax.random.key(config.seed), steps=config.steps)
    chosen = selection.select(selector, test_inputs)
    best = selection.single_best(train_scores)
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
    comparison = selection.compare(test_scores, chosen, best)
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


def gmm_program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Fits a ``config.components``-component Gaussian mixture (``config.covariance``) to the 150 Iris
    flowers' four features with :mod:`jmeta.gmm` (at most ``config.steps`` EM iterations, ``config.tol``)
    from ``config.eval_tasks`` k-means++ initialisations, and scikit-learn's ``GaussianMixture`` from each
    same initialisation; reports the mean log-likelihood per flower and the adjusted Rand index and
    purity of the clusters against the species, mean ± 95% CI over initialisations."""
    import warnings

    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    from jmeta import gmm
    from jmeta.data import load

    data = load("iris")
    x = np.concatenate([data["train"].images, data["test"].images]).astype(np.float64)
    species = np.concatenate([data["train"].labels, data["test"].labels])
    k, steps = positive_int("components", config.components), positive_int("steps", config.steps)

    def purity(clusters: np.ndarray) -> float:
        return float(sum(np.bincount(species[clusters == c]).max() for c in np.unique(clusters)) / len(species))

    fits: dict[str, list[tuple[float, float, float]]] = {"jmeta.gmm": [], "sklearn GaussianMixture": []}
    with jax.enable_x64(True):
        for restart in range(positive_int("eval_tasks", config.eval_tasks)):
            start = gmm.gmm_init(jax.random.key(config.seed + restart), jnp.asarray(x), k, config.covariance)
            result = gmm.fit(start, jnp.asarray(x), steps=steps, tol=config.tol)
            clusters = np.asarray(gmm.predict(result.params, jnp.asarray(x)))
            fits["jmeta.gmm"].append(
                (
                    float(gmm.e_step(result.params, jnp.asarray(x))[1]),
                    adjusted_rand_score(species, clusters),
                    purity(clusters),
                )
            )
            covariances = np.asarray(start.covariances)
            reference = GaussianMixture(
                k,
                covariance_type=config.covariance,
                tol=config.tol,
                reg_covar=1e-6,
                max_iter=steps,
                weights_init=np.asarray(start.weights),
                means_init=np.asarray(start.means),
                precisions_init=np.linalg.inv(covariances) if config.covariance == "full" else 1.0 / covariances,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning when a short run stops before tol is met
                clusters = reference.fit(x).predict(x)
            fits["sklearn GaussianMixture"].append(
                (float(reference.score(x)), adjusted_rand_score(species, clusters), purity(clusters))
            )
    rows = {
        name: dict(zip(("log_likelihood", "adjusted_rand", "purity"), map(estimate, np.array(values).T), strict=True))
        for name, values in fits.items()
    }
    difference = np.abs(np.array(fits["jmeta.gmm"])[:, 0] - np.array(fits["sklearn GaussianMixture"])[:, 0])
    protocol = {
        "tasks": config.eval_tasks,
        "shots": "150 flowers, 4 features",
        "queries_per_task": 150,
        "inner_lr": "-",
        "checkpoint": f"EM, {k} {config.covariance}-covariance components, <= {steps} iterations, tol {config.tol}",
        "ci": "95% over k-means++ initialisations, 1.96 * std / sqrt(initialisations)",
    }
    return report(config, rows, protocol, max_abs_log_likelihood_difference=float(difference.max()))


# ---------------------------------------------------------------------------------------------------------
# 004: MAML, MAML++ and Reptile with the article's MLP


def maml_mlp(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Meta-trains ``config.learner`` (maml, mamlpp, reptile, ... as in ``jmeta.experiment.LEARNERS``) with
    ``SourceMLP004`` (784-1000-``ways``; 64 inputs for 8x8 digits) on ``ways``-way tasks from ``config.task``'s
    training digits (0-4), through ``jmeta.train``'s loop (metrics, checkpoints, resumption), and meta-tests
    the last parameters on the test digits (5-9). The digit sets have no validation classes, so validation
    tasks come from the training digits and only monitor training; no checkpoint is chosen by them."""
    from jmeta import losses
    from jmeta.data import load
    from jmeta.experiment import LEARNERS, Experiment, TaskFamily
    from jmeta.models.ports import SourceMLP004
    from jmeta.tasks.episodes import make_episode_sampler
    from jmeta.train import meta_test, meta_train_workdir

    one_of("task", config.task, ("mnist", "digits"))
    data = load(config.task, config.data_dir or None)
    train = make_episode_sampler(data["train"], config.ways, config.shots, config.queries)
    val = make_episode_sampler(data["train"], config.eval_ways, config.eval_shots, config.eval_queries)
    test = make_episode_sampler(data["test"], config.eval_ways, config.eval_shots, config.eval_queries)
    example = jnp.zeros((1, *data["train"].input_shape))
    family = TaskFamily(train, val, test, example, losses.cross_entropy, {"accuracy": losses.accuracy})
    model = from_linen(SourceMLP004(num_classes=config.ways), example)
    experiment = Experiment(
        family, *LEARNERS[one_of("learner", config.learner, tuple(LEARNERS))](config, model, family)
    )
    state, _, keys = meta_train_workdir(config, experiment, workdir)
    results = meta_test(config, experiment, state, keys.test)
    results["protocol"]["checkpoint"] = f"last, step {int(state.step)} (validation tasks from the training digits)"
    return results


PROGRAMS: dict[str, Program] = {
    "supervised": supervised,
    "distill": distillation,
    "multitask": multitask_program,
    "selection": selection_program,
    "gmm": gmm_program,
    "maml-mlp": maml_mlp,
}


def maml_mlp_config(learner: str) -> ml_collections.ConfigDict:
    """The ``maml-mlp`` program's config for ``learner`` (``maml``, ``mamlpp`` or ``reptile``): 5-way 1-shot
    tasks of scikit-learn's digits (``task=mnist`` with TFDS data), the article's MLP, meta-batch 16.

    Example::

        >>> maml_mlp_config("reptile").eval_steps
        (50,)
    """
    from jmeta.experiment import few_shot_config

    config = few_shot_config("digits", one_of("learner", learner, ("maml", "mamlpp", "reptile")), ways=5, shots=1)
    del config.split, config.hidden, config.downsample, config.pool, config.batch_norm
    config.program = "maml-mlp"
    config.inner_lr, config.inner_steps, config.eval_steps = 0.4, 1, (1, 5)
    config.meta_batch, config.steps, config.log_every, config.val_every = 16, 2000, 100, 500
    config.published_source = "none: the article reports no figures"
    if learner == "mamlpp":
        config.inner_lr, config.inner_steps, config.eval_steps = 0.1, 5, (5,)
        config.msl_steps, config.first_order_steps = 500, 1000
        config.lslr, config.bnwb, config.bnrs, config.cosine = True, False, False, True
    if learner == "reptile":
        config.shots, config.queries = 10, 1
        config.inner_lr, config.inner_steps, config.eval_steps = 0.001, 5, (50,)
        config.meta_lr, config.meta_batch, config.transductive = 1.0, 5, False
    return config
