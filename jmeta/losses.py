"""Per-task losses and metrics: ``fn(predictions, targets) -> scalar``, averaged over a task's points.

Example::

    >>> import jax.numpy as jnp
    >>> float(mse(jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [1.0]])))
    2.5

Class labels must lie in ``0..classes-1``; see ``jmeta.learners.labels`` for where jmeta checks them and
what happens under your own ``jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def are_class_labels(predictions_shape: tuple[int, ...], targets: Any) -> bool:
    """Whether ``targets`` are class indices for predictions of ``predictions_shape``: integers with one
    dimension fewer (``(points,)`` labels for ``(points, classes)`` logits).

    Example::

        >>> import jax.numpy as jnp
        >>> are_class_labels((4, 5), jnp.zeros(4, jnp.int32)), are_class_labels((4, 1), jnp.zeros((4, 1)))
        (True, False)
    """
    return jnp.issubdtype(jnp.result_type(targets), jnp.integer) and jnp.ndim(targets) == len(predictions_shape) - 1


def check_labels(predictions: Any, targets: Any, argument: str) -> None:
    """Raises a ``ValueError`` naming ``argument`` if ``targets`` are class labels (``are_class_labels``)
    outside ``0..classes-1``, ``classes`` the last axis of ``predictions`` (an array or a shape tuple).
    Traced targets are not checked (their values are unknown while tracing).

    Example::

        >>> import jax.numpy as jnp
        >>> check_labels((2, 5), jnp.array([0, 4]), "labels")  # fine: returns None
    """
    shape = tuple(predictions) if isinstance(predictions, tuple) else jnp.shape(predictions)
    if isinstance(targets, jax.core.Tracer) or not are_class_labels(shape, targets):
        return
    classes = shape[-1]
    values = np.asarray(targets)
    outside = np.unique(values[(values < 0) | (values >= classes)])
    if outside.size:
        raise ValueError(
            f"{argument} must hold class labels in 0..{classes - 1} (the model has {classes} outputs); got values "
            f"outside: {outside.tolist()[:10]}."
        )


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error over all points and output dimensions; the two shapes must be equal."""
    if predictions.shape != targets.shape:
        raise ValueError(
            f"mse needs predictions and targets of the same shape; got {predictions.shape} and {targets.shape} "
            "(a (points, 1) prediction against (points,) targets would broadcast to (points, points))."
        )
    return jnp.mean(jnp.square(predictions - targets))


def _label_validity(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Checks concrete labels (raising a ValueError naming ``labels``); for traced ones returns a factor
    that is 1 where a label is in ``0..classes-1`` and NaN elsewhere."""
    check_labels(logits, labels, "labels")
    classes = logits.shape[-1]
    return jnp.where((labels >= 0) & (labels < classes), 1.0, jnp.nan).astype(logits.dtype)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits`` (points, classes) against integer ``labels`` (points,).

    Labels must lie in ``0..classes-1``. Concrete labels outside are refused with a ``ValueError``; traced
    ones (inside ``jit``) give a NaN loss and NaN gradients, so the fault cannot pass unseen (optax alone
    would drop the target term from the gradient, or read ``-1`` as the last class).

    Example::

        >>> import jax.numpy as jnp
        >>> round(float(cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]))), 4)
        1.3863
    """
    validity = _label_validity(logits, labels)
    safe_labels = jnp.clip(labels, 0, logits.shape[-1] - 1)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, safe_labels) * validity)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of points whose arg-max logit is the label; labels outside ``0..classes-1`` are treated as by
    ``cross_entropy`` (a ``ValueError`` when concrete, NaN under ``jit``).

    Example::

        >>> import jax.numpy as jnp
        >>> float(accuracy(jnp.array([[0.0, 1.0], [1.0, 0.0]]), jnp.array([1, 1])))
        0.5
    """
    validity = _label_validity(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
    return jnp.mean(jnp.where(jnp.isnan(validity), validity, correct))
