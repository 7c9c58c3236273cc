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
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta.learners.base import Learner, LossFn, TaskOutput, call_apply
from jmeta.learners.maml import maml
from jmeta.nn import Model, PyTree
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
