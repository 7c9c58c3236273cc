"""Class labels checked against the number of model outputs, on concrete arrays, before anything compiles.

Targets are *class indices* when they are integers with one dimension fewer than the predictions
(``(points,)`` labels for ``(points, classes)`` logits); they must then lie in ``0..classes-1``.
``trainer.step``, ``jmeta.evaluate`` and a learner's ``adapt``/``task_loss`` called outside ``jit`` check
this and raise a ``ValueError`` naming the argument, the allowed range and the offending values. Inside
your own ``jit`` the labels are traced and cannot be checked: ``jmeta.losses.cross_entropy`` and
``jmeta.losses.accuracy`` then return NaN (and the cross-entropy a NaN gradient) for a task with a label
out of range, so the fault shows as a NaN loss rather than a silently dropped target (optax's
cross-entropy) or a wrapped-around class (``-1`` as the last class).

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((8, 5)), jnp.zeros((1, 2)))
    >>> learner = jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.1)
    >>> params, state = learner.init(jax.random.key(0))
    >>> try:
    ...     learner.adapt(params, state, jnp.ones((5, 2)), jnp.arange(1, 6))
    ... except ValueError as error:
    ...     print(str(error).splitlines()[0])
    the support labels must hold class labels in 0..4 (the model has 5 outputs); got values outside: [5].
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.losses import check_labels
from jmeta.nn import PyTree
from jmeta.tasks.task import Task

_CLASSES: dict[tuple[Any, ...], int | None] = {}


def output_classes(learner: Any, params: PyTree, model_state: PyTree, tasks: Task) -> int | None:
    """The number of outputs ``learner`` predicts per query point for ``tasks`` (a batch with a leading task
    axis) when their labels are class indices, else ``None``. Found by ``jax.eval_shape`` (no computation),
    once per learner and shapes.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 3)), jnp.zeros((1, 2)))
        >>> learner = jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.1)
        >>> params, state = learner.init(jax.random.key(0))
        >>> tasks = jmeta.Task(jnp.ones((4, 3, 2)), jnp.zeros((4, 3), int), jnp.ones((4, 6, 2)), jnp.zeros((4, 6), int))
        >>> output_classes(learner, params, state, tasks)
        3
    """
    integer = [jnp.issubdtype(jnp.result_type(y), jnp.integer) for y in (tasks.support_y, tasks.query_y)]
    if not any(integer):
        return None
    one_task = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a)[1:], jnp.result_type(a)), tasks)
    signature = jax.tree.map(lambda a: (jnp.shape(a), jnp.result_type(a)), (params, model_state, one_task))
    key = (learner, jax.tree.structure(signature), tuple(jax.tree.leaves(signature)))
    if key not in _CLASSES:

        def query_predictions(p: PyTree, s: PyTree, task: Task) -> jax.Array:
            return learner.predict(learner.adapt(p, s, task.support_x, task.support_y), s, task.query_x)[0]

        shape = jax.eval_shape(query_predictions, params, model_state, one_task).shape
        _CLASSES[key] = shape[-1] if len(shape) == jnp.ndim(one_task.query_y) + 1 and shape else None
    return _CLASSES[key]


def check_task_labels(learner: Any, params: PyTree, model_state: PyTree, tasks: Task, argument: str) -> None:
    """Raises a ``ValueError`` naming ``argument`` if a concrete task batch's class labels (support or
    query) lie outside ``0..classes-1`` for ``learner``'s predictions; does nothing for other targets.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 3)), jnp.zeros((1, 2)))
        >>> learner = jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.1)
        >>> params, state = learner.init(jax.random.key(0))
        >>> tasks = jmeta.Task(jnp.ones((4, 3, 2)), jnp.full((4, 3), -1), jnp.ones((4, 6, 2)), jnp.zeros((4, 6), int))
        >>> check_task_labels(learner, params, state, tasks, "tasks")
        Traceback (most recent call last):
        ValueError: tasks.support_y must hold class labels in 0..2 (the model has 3 outputs); got values outside: [-1].
    """
    classes = output_classes(learner, params, model_state, tasks)
    if classes is None:
        return
    for field in ("support_y", "query_y"):
        labels = getattr(tasks, field)
        if jnp.issubdtype(jnp.result_type(labels), jnp.integer):
            check_labels((1, classes), np.asarray(labels).reshape(-1), f"{argument}.{field}")
