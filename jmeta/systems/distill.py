"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"):
the loss, students trained on a teacher's soft targets beside the same students trained on labels alone,
a few-shot learner whose student is meta-trained to adapt like a teacher, and the ``distill`` program.

:func:`distillation_loss` is Hinton et al.'s objective: the KL divergence from the teacher's softened
distribution to the student's at temperature ``T``, scaled by ``T**2`` so that its gradients keep their
size as ``T`` changes (sec. 2 of the paper), mixed with the ordinary cross-entropy on the true labels.

:func:`distill` builds a ``jmeta.Learner`` for few-shot tasks, on the following design. The teacher is
any learner with fixed, already (meta-)trained parameters, e.g. a large Conv4 meta-trained with
``jmeta.maml``. For every task:

1. the teacher adapts on the support set with its own ``adapt`` and predicts the query set; those
   logits, with gradients stopped, are the soft targets;
2. the student adapts on the support set by MAML's inner loop (cross-entropy on the support labels);
3. the task loss is ``distillation_loss`` of the adapted student's query logits against the teacher's.

Meta-training the student with ``jmeta.meta_trainer`` therefore teaches it to reach, after its own
few inner steps, the predictions the teacher reaches after adaptation. At test and deployment time
the student works alone: ``adapt`` and ``predict`` are MAML's and never call the teacher. The
source article (``001_92a8b050ae67d16b.txt``) chains the two networks and scores the output against
the input with a BCE loss; that is an auto-encoder, not distillation, and is not reproduced.

The teacher's parameters are closed over, so they are constants of every compiled program.

:func:`fit_students` trains one small student per *task*, a small labelled training set, on the teacher's
soft targets or (``teacher_logits=None``) on the labels alone, from the same initialisations: the
comparison Hinton et al. make (sec. 3 and 6: soft targets carry most of the teacher's knowledge to a
student that sees few examples). :func:`program` runs it on digit images (``jmeta train
experiments/seed001_distillation.py``) and reports the paired gain of the distilled students.

Example::

    >>> import jax.numpy as jnp
    >>> student = jnp.array([[1.0, 0.0]])
    >>> float(distillation_loss(student, student, jnp.array([0]), temperature=2.0, hard_weight=0.0))
    0.0
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jmeta import losses
from jmeta.evaluation import estimate
from jmeta.export import export_model, load_predictor
from jmeta.learners.base import Learner, LossFn, TaskOutput, call_apply
from jmeta.learners.maml import maml
from jmeta.models import MLP
from jmeta.models.ports import ImageMLP000
from jmeta.nn import Model, PyTree, from_linen
from jmeta.systems.common import comparison, paired_gain, report
from jmeta.systems.supervised import fit_classifier, supervised_split
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int


def distillation_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array,
    temperature: float = 4.0,
    hard_weight: float = 0.1,
) -> jax.Array:
    """``(1 - hard_weight) * T**2 * KL(softmax(teacher / T) || softmax(student / T)) + hard_weight *
    CE(student, labels)``, each averaged over the points.

    ``student_logits`` and ``teacher_logits`` have shape ``(points, classes)``, ``labels`` ``(points,)``
    integers. No gradient flows into the teacher's logits.

    Example::

        >>> import jax.numpy as jnp
        >>> s, t = jnp.array([[2.0, 0.0]]), jnp.array([[0.0, 2.0]])
        >>> round(float(distillation_loss(s, t, jnp.array([1]), temperature=1.0, hard_weight=0.0)), 4)
        1.5232
    """
    temperature = positive_float("temperature", temperature)
    hard_weight = unit_interval("hard_weight", hard_weight)
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must both have shape (points, classes); got "
            f"{student_logits.shape} and {teacher_logits.shape}."
        )
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"labels must have shape ({student_logits.shape[0]},), one integer per point; got {labels.shape}."
        )
    teacher_log_p = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits) / temperature)
    student_log_p = jax.nn.log_softmax(student_logits / temperature)
    kl = jnp.mean(jnp.sum(jnp.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1))
    return (1.0 - hard_weight) * temperature**2 * kl + hard_weight * losses.cross_entropy(student_logits, labels)


def unit_interval(name: str, value: Any) -> float:
    """Returns ``value`` as a float, or raises naming ``name`` if it is not a number in [0, 1].

    Example::

        >>> unit_interval("hard_weight", 1.5)
        Traceback (most recent call last):
        ValueError: hard_weight must be a number in [0, 1]; got 1.5.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}.")
    return float(value)


def agreement(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
    """The fraction of points on which student and teacher predict the same class.

    Example::

        >>> import jax.numpy as jnp
        >>> float(agreement(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[1.0, 0.0], [1.0, 0.0]])))
        0.5
    """
    return jnp.mean(jnp.argmax(student_logits, -1) == jnp.argmax(teacher_logits, -1))


def distill(
    student: Model,
    teacher: Learner,
    teacher_params: PyTree,
    teacher_state: PyTree,
    *,
    inner_lr: float,
    steps: int = 1,
    temperature: float = 4.0,
    hard_weight: float = 0.1,
    teacher_steps: int | None = None,
    first_order: bool = False,
    metrics: Mapping[str, LossFn] | None = None,
) -> Learner:
    """A learner whose student (MAML with cross-entropy) is meta-trained on a teacher's adapted query
    predictions (see the module docstring for the design).

    Args:
      student: the student ``jmeta.Model``, returning logits.
      teacher: the teacher's ``jmeta.Learner``; only its ``adapt`` and ``predict`` are used.
      teacher_params: the teacher's trained meta-parameters (fixed).
      teacher_state: the teacher's model state (fixed).
      inner_lr: the SGD learning rate of the student's MAML inner loop.
      steps: the inner loop's step count.
      temperature: that of :func:`distillation_loss`.
      hard_weight: that of :func:`distillation_loss`.
      first_order: whether the student's MAML drops second-order terms.
      teacher_steps: inner steps of the teacher (``None``: its default).
      metrics: extra query metrics of the student; ``accuracy`` and ``agreement`` (with the teacher's
        adapted predictions) are always reported.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 2)), jnp.zeros((1, 2)))
        >>> teacher = jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.1)
        >>> t_params, t_state = teacher.init(jax.random.key(0))
        >>> learner = distill(model, teacher, t_params, t_state, inner_lr=0.1, temperature=2.0)
    """
    if not isinstance(teacher, Learner):
        raise TypeError(f"teacher must be a jmeta.Learner (e.g. jmeta.maml(...)); got {type(teacher).__name__}.")
    temperature = positive_float("temperature", temperature)
    hard_weight = unit_interval("hard_weight", hard_weight)
    student_learner = maml(student, losses.cross_entropy, inner_lr, steps, first_order=first_order)
    metrics = {"accuracy": losses.accuracy, **dict(metrics or {})}

    def task_loss(
        params: PyTree, state: PyTree, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        teacher_adapted = teacher.adapt(teacher_params, teacher_state, task.support_x, task.support_y, teacher_steps)
        teacher_logits, _ = call_apply(teacher.predict, teacher_adapted, teacher_state, task.query_x)
        teacher_logits = jax.lax.stop_gradient(teacher_logits)
        adapted = student_learner.adapt(params, state, task.support_x, task.support_y, steps)
        logits, new_state = call_apply(student_learner.predict, adapted, state, task.query_x)
        loss = distillation_loss(logits, teacher_logits, task.query_y, temperature, hard_weight)
        values = {name: fn(logits, task.query_y) for name, fn in metrics.items()}
        values = {**values, "loss": loss, "agreement": agreement(logits, teacher_logits)}
        return loss, TaskOutput(values, new_state)

    return student_learner._replace(task_loss=task_loss)


# ---------------------------------------------------------------------------------------------------------
# Students trained with and without a teacher, and the `distill` program of `jmeta train`


def fit_students(
    student: Model,
    keys: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    steps: int,
    lr: float,
    teacher_logits: jax.Array | None = None,
    temperature: float = 4.0,
    hard_weight: float = 0.1,
) -> tuple[PyTree, PyTree]:
    """Trains one ``student`` per task, all at once (``vmap``): task ``t`` starts from
    ``student.init(keys[t])`` and takes ``steps`` full-batch Adam steps at ``lr`` on its examples ``x[t]``
    ``(tasks, n, *input_shape)`` with labels ``y[t]`` ``(tasks, n)``, minimising :func:`distillation_loss`
    against ``teacher_logits`` ``(tasks, n, classes)`` at ``temperature`` and ``hard_weight``, or, with
    ``teacher_logits=None``, the cross-entropy on the labels alone (the baseline: the same student, data,
    initialisation and steps without the teacher). Returns the students' parameters and model states,
    each leaf with a leading task axis. ValueError for mismatched shapes or bad settings.

    Example::

        >>> import jmeta
        >>> student = jmeta.from_linen(jmeta.models.MLP((8, 2)), jnp.zeros((1, 3)))
        >>> x, y = jnp.ones((4, 6, 3)), jnp.zeros((4, 6), jnp.int32)
        >>> params, _ = fit_students(student, jax.random.split(jax.random.key(0), 4), x, y, steps=2, lr=0.01)
        >>> params["Dense_0"]["kernel"].shape
        (4, 3, 8)
    """
    steps = positive_int("steps", steps)
    lr = positive_float("lr", lr)
    temperature = positive_float("temperature", temperature)
    hard_weight = unit_interval("hard_weight", hard_weight)
    tasks = jnp.shape(keys)[0]
    if jnp.ndim(y) != 2 or jnp.shape(x)[:2] != jnp.shape(y) or jnp.shape(y)[0] != tasks:
        raise ValueError(
            f"x must be (tasks, n, *input_shape) and y (tasks, n) with tasks = len(keys) = {tasks}; got x "
            f"{jnp.shape(x)} and y {jnp.shape(y)}."
        )
    if teacher_logits is not None and (jnp.ndim(teacher_logits) != 3 or jnp.shape(teacher_logits)[:2] != jnp.shape(y)):
        raise ValueError(
            f"teacher_logits must have shape (tasks, n, classes) = ({tasks}, {jnp.shape(y)[1]}, classes); got "
            f"{jnp.shape(teacher_logits)}."
        )
    optimizer = optax.adam(lr)

    def loss(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, soft: jax.Array | None) -> jax.Array:
        logits, _ = student.apply(params, state, x)
        if soft is None:
            return losses.cross_entropy(logits, y)
        return distillation_loss(logits, soft, y, temperature, hard_weight)

    def one(key: jax.Array, x: jax.Array, y: jax.Array, soft: jax.Array | None) -> tuple[PyTree, PyTree]:
        params, state = student.init(key)

        def step(carry: tuple[PyTree, optax.OptState], _: None) -> tuple[tuple[PyTree, optax.OptState], None]:
            params, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss)(params, state, x, y, soft), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
        return params, state

    return jax.jit(jax.vmap(one))(keys, jnp.asarray(x), jnp.asarray(y), teacher_logits)


def scarce_subsets(labels: np.ndarray, shots: int, tasks: int, seed: int) -> np.ndarray:
    """Indices ``(tasks, classes * shots)`` of ``tasks`` small training sets: each holds ``shots`` distinct
    examples of every class of ``labels``, drawn at random (``seed``), sorted by class.

    Example::

        >>> scarce_subsets(np.array([0, 0, 1, 1, 1]), shots=1, tasks=2, seed=0).shape
        (2, 2)
    """
    shots, tasks = positive_int("shots", shots), positive_int("eval_tasks", tasks)
    classes, counts = np.unique(labels, return_counts=True)
    if shots > counts.min():
        raise ValueError(f"shots must be at most the smallest class's examples ({counts.min()}); got {shots}.")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in classes]
    return np.stack([np.concatenate([rng.choice(m, shots, replace=False) for m in members]) for _ in range(tasks)])


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Hinton et al.'s comparison on ``config.task``'s ten classes (digit images; see
    :func:`jmeta.systems.supervised.supervised_split`): the teacher, ``ImageMLP000`` (784-512-256-10), is
    trained on all training examples (``config.teacher_steps`` SGD steps at ``config.lr``, momentum 0.9,
    mini-batches of ``config.meta_batch``). Then, on each of ``config.eval_tasks`` *tasks*, a scarce training
    set of ``config.shots`` examples per class, a small student ``MLP((*config.student_hidden, 10))`` is
    trained (:func:`fit_students`, ``config.steps`` full-batch Adam steps at ``config.student_lr``) twice
    from the same initialisation: on the teacher's soft targets (``config.temperature``,
    ``config.hard_weight``) and on the labels alone. Both are scored on every test example.

    ``results.json``: rows ``teacher`` (95% CI over test examples) and the two students (95% CI over
    tasks); ``comparison``, the paired per-task gain of the distilled student over the labels-only one;
    ``student_teacher_agreement``; ``sweep``, the same comparison for each ``(temperature, hard_weight)``
    pair of ``config.sweep``; ``export``, the distilled student of the first task exported to
    ``workdir/student`` and reloaded with ``jmeta.export.load_predictor``."""
    sweep = [tuple(pair) for pair in config.sweep]
    for pair in sweep:
        if len(pair) != 2:
            raise ValueError(f"sweep must hold (temperature, hard_weight) pairs; got {pair!r} in {config.sweep!r}.")
        positive_float("sweep temperature", pair[0])
        unit_interval("sweep hard_weight", pair[1])
    (train_x, train_y), (test_x, test_y) = supervised_split(config.task, config.data_dir, config.seed)
    teacher_key, batch_key, student_key = jax.random.split(jax.random.key(config.seed), 3)
    teacher = from_linen(ImageMLP000(num_classes=10), jnp.asarray(train_x[:1]))
    teacher_params, teacher_state = teacher.init(teacher_key)
    teacher_params, teacher_loss = fit_classifier(
        teacher,
        teacher_params,
        teacher_state,
        train_x,
        train_y,
        batch_key,
        steps=config.teacher_steps,
        batch=positive_int("meta_batch", config.meta_batch),
        lr=config.lr,
    )
    subsets = scarce_subsets(train_y, config.shots, config.eval_tasks, config.seed)
    x, y = jnp.asarray(train_x[subsets]), jnp.asarray(train_y[subsets])
    teacher_apply = jax.jit(lambda x: teacher.apply(teacher_params, teacher_state, x)[0])
    soft = jax.vmap(teacher_apply)(x)
    teacher_test = np.asarray(jnp.argmax(teacher_apply(jnp.asarray(test_x)), -1))
    hidden = tuple(positive_int("student_hidden", width) for width in config.student_hidden)
    student_kwargs = {"features": [*hidden, 10]}
    student = from_linen(MLP(**student_kwargs), jnp.asarray(train_x[:1]))
    keys = jax.random.split(student_key, config.eval_tasks)
    fit = functools.partial(fit_students, student, keys, x, y, steps=config.steps, lr=config.student_lr)

    @jax.jit
    def predictions(params: PyTree, state: PyTree) -> jax.Array:
        return jax.vmap(lambda p, s: jnp.argmax(student.apply(p, s, jnp.asarray(test_x))[0], -1))(params, state)

    def scores(students: tuple[PyTree, PyTree]) -> tuple[np.ndarray, np.ndarray]:
        predicted = np.asarray(predictions(*students))
        return (predicted == test_y).mean(1), (predicted == teacher_test).mean(1)

    labels_only = scores(fit())
    distilled_students = fit(teacher_logits=soft, temperature=config.temperature, hard_weight=config.hard_weight)
    distilled = scores(distilled_students)
    distilled_name = f"student, distilled (T={config.temperature:g}, hard_weight={config.hard_weight:g})"
    baseline_name = "student, labels only"
    rows = {
        "teacher": {"accuracy": estimate((teacher_test == test_y).astype(np.float64))},
        distilled_name: {"accuracy": estimate(distilled[0])},
        baseline_name: {"accuracy": estimate(labels_only[0])},
    }
    swept = []
    for temperature, hard_weight in sweep:
        accuracy, _ = scores(fit(teacher_logits=soft, temperature=temperature, hard_weight=hard_weight))
        swept.append(
            {
                "temperature": temperature,
                "hard_weight": hard_weight,
                "accuracy": estimate(accuracy)._asdict(),
                "gain": paired_gain(accuracy, labels_only[0])._asdict(),
            }
        )
    protocol = {
        "tasks": config.eval_tasks,
        "shots": config.shots,
        "queries_per_task": len(test_y),
        "training_examples": f"{config.shots} per class per task; the teacher: all {len(train_y)}",
        "inner_lr": config.student_lr,
        "checkpoint": (
            f"teacher: ImageMLP000 after {config.teacher_steps} SGD steps (final training loss {teacher_loss:.4g}); "
            f"students: MLP {student_kwargs['features']} after {config.steps} full-batch Adam steps"
        ),
        "ci": "students: 95% over tasks, 1.96 * std / sqrt(tasks); teacher: over test examples",
    }
    return report(
        config,
        rows,
        protocol,
        comparison=comparison(distilled_name, baseline_name, paired_gain(distilled[0], labels_only[0])),
        student_teacher_agreement={distilled_name: estimate(distilled[1])._asdict(),
                                   baseline_name: estimate(labels_only[1])._asdict()},
        sweep=swept,
        export=export_student(distilled_students, student_kwargs, test_x, test_y, workdir),
    )


def export_student(
    students: tuple[PyTree, PyTree], kwargs: dict[str, Any], test_x: np.ndarray, test_y: np.ndarray, workdir: Path
) -> dict[str, Any]:
    """Exports the first of ``students`` (an ``MLP(**kwargs)``) to ``workdir/student`` with ``export_model``,
    reloads it with ``load_predictor`` and compares the two on the test examples."""
    params, state = jax.tree.map(lambda a: a[0], students)
    model = from_linen(MLP(**kwargs), jnp.asarray(test_x[:1]))
    logits = np.asarray(model.apply(params, state, jnp.asarray(test_x))[0])
    path = export_model(
        workdir / "student", "mlp", kwargs, params, state, input_shape=test_x.shape[1:], overwrite=True
    )
    reloaded = load_predictor(path)(test_x)
    return {
        "path": str(path),
        "predictions_agree": float(np.mean(np.argmax(reloaded, -1) == np.argmax(logits, -1))),
        "max_abs_logit_difference": float(np.max(np.abs(reloaded - logits))),
        "test_accuracy": float(np.mean(np.argmax(reloaded, -1) == test_y)),
    }
