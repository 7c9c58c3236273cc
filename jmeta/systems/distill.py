"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"),
and a few-shot learner whose student is meta-trained to adapt like a teacher.

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

Example::

    >>> import jax.numpy as jnp
    >>> student = jnp.array([[1.0, 0.0]])
    >>> float(distillation_loss(student, student, jnp.array([0]), temperature=2.0, hard_weight=0.0))
    0.0
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jmeta import losses
from jmeta.evaluation import Estimate, evaluate
from jmeta.export import export_model, load_predictor
from jmeta.learners.base import Learner, LossFn, TaskOutput, call_apply
from jmeta.learners.maml import maml
from jmeta.meta_trainer import meta_trainer
from jmeta.models import Conv4
from jmeta.nn import Model, PyTree, from_linen
from jmeta.systems.common import few_shot_protocol, omniglot, report, train_steps
from jmeta.tasks.episodes import make_episode_sampler
from jmeta.tasks.task import Task
from jmeta.validation import positive_float


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
      teacher_params, teacher_state: the teacher's trained meta-parameters and model state (fixed).
      inner_lr, steps, first_order: the student's MAML inner loop (SGD learning rate, step count).
      temperature, hard_weight: those of :func:`distillation_loss`.
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
# The `distill` program of `jmeta train`: a MAML teacher distilled into a smaller student, exported


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Meta-trains a MAML Conv4 teacher (``config.hidden`` filters) on Omniglot for ``config.steps``
    meta-steps of ``config.meta_batch`` tasks, then a student (``config.student_hidden`` filters) as long on
    the teacher's adapted predictions (:func:`distill`); meta-tests both on the same
    ``config.eval_tasks`` tasks, exports the student adapted to one test task to ``workdir/student`` and
    checks that the reloaded predictor agrees with it."""
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


