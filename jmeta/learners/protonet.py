"""Prototypical Networks (Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017).

The model is an embedding ``f`` (its output, flattened, is the embedding). A class's prototype is the mean
embedding of its support points, and a point's logits are minus its squared Euclidean distances to the
prototypes, ``-||f(x) - c_k||^2``: a linear classifier on ``f(x)`` with weights ``2 c_k`` and biases
``-||c_k||^2``, up to the per-point constant ``-||f(x)||^2``. There is no inner gradient step, so
``steps`` is accepted (for a common interface) and ignored.

Representation: ``adapt`` returns ``Prototypes(params, prototypes, present)``: the embedding parameters,
the ``(ways, dim)`` prototypes and a ``(ways,)`` bool mask of the classes that have support points;
``predict(Prototypes, state, x)`` returns ``(ways,)`` logits per point.

Ways. ``ways`` is a static int given at construction: the largest number of classes of any task. Support
labels are integers in ``[0, ways)``. A task may have fewer classes (e.g. 20-way training, 5-way testing):
classes without support points get the logit ``-inf`` (probability 0), so the logits keep the static
shape ``(points, ways)`` under ``jit``. Labels outside ``[0, ways)`` are refused (``ValueError``) by ``adapt``
called on concrete arrays, ``trainer.step`` and ``jmeta.evaluate``; traced ones (under your own ``jit``) are
ignored when forming prototypes, and give a NaN query loss.

Support and query embeddings are computed in separate passes (``adapt`` sees the support set,
``predict`` the query set), so BatchNorm with batch statistics normalises each set by its own.

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((32, 16)), jnp.zeros((1, 4)))
    >>> learner = jmeta.learners.protonet(model, ways=5, metrics={"accuracy": jmeta.losses.accuracy})
    >>> params, state = learner.init(jax.random.key(0))
    >>> x, y = jnp.ones((10, 4)), jnp.arange(10) % 5
    >>> logits, _ = learner.predict(learner.adapt(params, state, x, y), state, jnp.ones((3, 4)))
    >>> logits.shape
    (3, 5)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta import losses
from jmeta.learners.base import Learner, LossFn, TaskOutput, call_apply, steps_or_default
from jmeta.learners.common import query_pass
from jmeta.losses import check_labels
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


class Prototypes(NamedTuple):
    """ProtoNet's adapted parameters: embedding ``params``, ``(ways, dim)`` ``prototypes``, ``(ways,)`` bool
    ``present`` (the classes with at least one support point)."""

    params: PyTree
    prototypes: jax.Array
    present: jax.Array


def embed(model: Model, params: PyTree, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
    """The model's outputs on ``x``, flattened to ``(points, dim)`` embeddings, and the new model state.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((3,)), jnp.zeros((1, 2)))
        >>> params, state = model.init(jax.random.key(0))
        >>> embed(model, params, state, jnp.ones((4, 2)))[0].shape
        (4, 3)
    """
    out, new_state = call_apply(model.apply, params, state, x)
    return out.reshape(out.shape[0], -1), new_state


def check_support_labels(y: jax.Array, ways: int, steps: int | None, learner: str) -> None:
    """The checks of ``adapt``'s arguments for a learner that classifies embeddings without inner steps:
    ``steps`` must be None or an integer >= 0 (it is ignored), ``y`` integers in ``[0, ways)`` of shape
    ``(points,)`` (values are checked when concrete; ``jmeta.losses.check_labels``). Raises ValueError
    naming ``learner``.

    Example::

        >>> import jax.numpy as jnp
        >>> check_support_labels(jnp.zeros((4, 1)), 5, None, "protonet")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: protonet's support labels must be integers in [0, ways) of shape (points,); got dtype float32 ...
    """
    steps_or_default(steps, 0)
    if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(
            f"{learner}'s support labels must be integers in [0, ways) of shape (points,); got dtype {y.dtype} "
            f"and shape {y.shape}."
        )
    check_labels((1, ways), y, f"{learner}'s support labels y")


def class_prototypes(embeddings: jax.Array, labels: jax.Array, ways: int) -> tuple[jax.Array, jax.Array]:
    """The mean embedding of each class ``0..ways-1`` (zeros for an absent class) and the mask of present ones.

    Example::

        >>> import jax.numpy as jnp
        >>> protos, present = class_prototypes(jnp.array([[0.0], [2.0], [5.0]]), jnp.array([0, 0, 1]), 3)
        >>> protos[:, 0], present
        (Array([1., 5., 0.], dtype=float32), Array([ True,  True, False], dtype=bool))
    """
    one_hot = jax.nn.one_hot(labels, ways, dtype=embeddings.dtype)
    counts = one_hot.sum(axis=0)
    prototypes = (one_hot.T @ embeddings) / jnp.maximum(counts, 1)[:, None]
    return prototypes, counts > 0


def prototype_logits(embeddings: jax.Array, prototypes: jax.Array, present: jax.Array) -> jax.Array:
    """Minus the squared Euclidean distance of each embedding to each prototype; ``-inf`` for absent classes.

    Example::

        >>> import jax.numpy as jnp
        >>> prototype_logits(jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([True, True]))
        Array([[-0., -2.]], dtype=float32)
    """
    distances = jnp.sum(jnp.square(embeddings[:, None, :] - prototypes[None, :, :]), axis=-1)
    return jnp.where(present[None, :], -distances, -jnp.inf)


def protonet(
    model: Model,
    ways: int,
    loss_fn: LossFn = losses.cross_entropy,
    *,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Prototypical Networks over the embedding ``model``.

    Args:
      model: a ``jmeta.Model`` mapping inputs to embeddings (its output is flattened per point).
      ways: the largest number of classes of a task (static); tasks with fewer are fine (module docstring).
      loss_fn: ``loss_fn(logits, labels) -> scalar`` on the query set; softmax cross-entropy by default.
      metrics: extra ``name -> fn(logits, labels)`` reported on the query set (e.g. accuracy).
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner``: meta-parameters are the embedding parameters; ``adapt`` returns ``Prototypes``.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((64, 64)), jnp.zeros((1, 4)))
        >>> learner = jmeta.learners.protonet(model, ways=20)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    ways = positive_int("ways", ways)
    metrics = dict(metrics or {})

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> Prototypes:
        check_support_labels(y, ways, steps, "protonet")
        embeddings, _ = embed(model, params, state, x)
        prototypes, present = class_prototypes(embeddings, y, ways)
        return Prototypes(params, prototypes, present)

    def predict(task_params: Prototypes, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        embeddings, new_state = embed(model, task_params.params, state, x)
        return prototype_logits(embeddings, task_params.prototypes, task_params.present), new_state

    def task_loss(params: PyTree, state: PyTree, task: Task, steps: int | None = None) -> tuple[jax.Array, TaskOutput]:
        prototypes = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(predict, loss_fn, metrics, prototypes, state, task)

    return Learner(init=model.init, adapt=adapt, predict=predict, task_loss=task_loss)
