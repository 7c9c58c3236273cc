"""Per-task losses and metrics: ``fn(predictions, targets) -> scalar``, averaged over a task's points.

Example::

    >>> import jax.numpy as jnp
    >>> float(mse(jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [1.0]])))
    2.5
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean squared error over all points and output dimensions; the two shapes must be equal."""
    if predictions.shape != targets.shape:
        raise ValueError(
            f"mse needs predictions and targets of the same shape; got {predictions.shape} and {targets.shape} "
            "(a (points, 1) prediction against (points,) targets would broadcast to (points, points))."
        )
    return jnp.mean(jnp.square(predictions - targets))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits`` (points, classes) against integer ``labels`` (points,)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of points whose arg-max logit is the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
