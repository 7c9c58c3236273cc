"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, "Matching Networks for One Shot
Learning", NeurIPS 2016).

The model is an embedding ``f`` (its output, flattened, is the embedding; the paper's ``f`` and ``g`` are the
same network unless full context embeddings are used). A query point ``x`` attends to every support point
``x_i`` with the softmax over the support set of their cosine similarities, ``a(x, x_i) = exp(c_i) / sum_j
exp(c_j)``, ``c_i = scale * cos(f(x), f(x_i))`` (eq. 1-2; ``scale = 1`` is the paper's), and its prediction is
the attention summed per class, ``P(k | x) = sum_{i: y_i = k} a(x, x_i)`` (eq. 1 with one-hot ``y_i``).
Training minimises the cross-entropy of these probabilities on the query set (sec. 2.2).

Representation: ``predict`` returns the *log* class probabilities ``log P(k | x)`` ``(points, ways)``,
computed stably as ``logsumexp_{i in k} c_i - logsumexp_i c_i``. They are logits whose softmax is ``P``, so
the softmax cross-entropy of the task family (``jmeta.losses.cross_entropy``) is the paper's loss and
``accuracy`` its arg-max. Classes without support points get ``-inf`` (probability 0), so a learner built
for ``ways`` classes evaluates tasks with fewer (e.g. 20-way training, 5-way testing), as ProtoNets do.

``adapt`` returns :class:`MatchingSupport` (the embedding parameters, the normalised support embeddings and
their labels); there is no inner gradient step, so ``steps`` is accepted and ignored. Support and query are
embedded in separate passes (BatchNorm with batch statistics normalises each set by its own).

Full context embeddings (the paper's bidirectional LSTM over the support set and attention LSTM over the
query, sec. 2.1.2 and appendix) are not implemented here.

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((32, 16)), jnp.zeros((1, 4)))
    >>> learner = jmeta.learners.matchingnet(model, ways=5)
    >>> params, state = learner.init(jax.random.key(0))
    >>> x, y = jax.random.normal(jax.random.key(1), (10, 4)), jnp.arange(10) % 5
    >>> log_probs, _ = learner.predict(learner.adapt(params, state, x, y), state, x[:3])
    >>> log_probs.shape, bool(jnp.allclose(jnp.exp(log_probs).sum(-1), 1.0))
    ((3, 5), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.learners.base import Learner, LossFn, TaskOutput, steps_or_default
from jmeta.learners.baseline import normalize
from jmeta.learners.common import query_pass
from jmeta.learners.protonet import embed
from jmeta.losses import check_labels
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.registry import register_learner
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int


class MatchingSupport(NamedTuple):
    """Matching Networks' adapted parameters: embedding ``params``, the L2-normalised support embeddings
    ``(support, dim)`` and the support labels ``(support,)`` int."""

    params: PyTree
    support: jax.Array
    labels: jax.Array


def matching_log_probs(
    query: jax.Array, support: jax.Array, labels: jax.Array, ways: int, scale: float = 1.0
) -> jax.Array:
    """``log P(k | x)`` ``(queries, ways)`` of Matching Networks' attention: the softmax over the support
    points of ``scale`` times the dot products of L2-normalised ``query`` ``(queries, dim)`` and ``support``
    ``(support, dim)`` embeddings (their cosine similarities), summed over each class's support points.
    Classes without support points get ``-inf``. Labels outside ``0..ways-1`` belong to no class.

    Example::

        >>> import jax.numpy as jnp
        >>> support, labels = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([0, 1])
        >>> probs = jnp.exp(matching_log_probs(jnp.array([[1.0, 0.0]]), support, labels, 3))
        >>> [round(float(p), 4) for p in probs[0]]  # e^1 / (e^1 + e^0), e^0 / (e^1 + e^0), absent
        [0.7311, 0.2689, 0.0]
    """
    similarities = scale * query @ support.T  # (queries, support)
    member = jax.nn.one_hot(labels, ways, dtype=bool).T  # (ways, support)
    present = member.any(axis=1)
    # classes without support points read zeros (finite values and gradients), then get -inf
    per_class = jnp.where(member[None] | ~present[None, :, None], similarities[:, None, :], -jnp.inf)
    by_class = jnp.where(present[None], jax.nn.logsumexp(per_class, axis=-1), -jnp.inf)
    return by_class - jax.nn.logsumexp(similarities, axis=-1, keepdims=True)


def matchingnet(
    model: Model,
    ways: int,
    loss_fn: LossFn = losses.cross_entropy,
    *,
    scale: float = 1.0,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Matching Networks over the embedding ``model`` (see the module docstring).

    Args:
      model: a ``jmeta.Model`` mapping inputs to embeddings (its output is flattened per point).
      ways: the largest number of classes of a task (static); tasks with fewer are fine.
      loss_fn: ``loss_fn(log_probs, labels) -> scalar`` on the query set; softmax cross-entropy (the
        paper's log-likelihood loss) by default.
      scale: multiplies the cosine similarities before the softmax (1, the paper's; larger sharpens the
        attention).
      metrics: extra ``name -> fn(log_probs, labels)`` reported on the query set (e.g. accuracy).
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's passes.

    Returns:
      A ``jmeta.Learner``: meta-parameters are the embedding parameters; ``adapt`` returns
      :class:`MatchingSupport`; ``predict`` returns log class probabilities ``(points, ways)`` float32.

    Raises ValueError naming the argument for a bad ``ways`` or ``scale``; ``adapt`` raises ValueError for
    support labels that are not integers of shape ``(points,)`` (or, concrete, outside ``0..ways-1``).

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((64, 64)), jnp.zeros((1, 4)))
        >>> learner = jmeta.learners.matchingnet(model, ways=20, metrics={"accuracy": jmeta.losses.accuracy})
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    ways = positive_int("ways", ways)
    scale = positive_float("scale", scale)
    metrics = dict(metrics or {})

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> MatchingSupport:
        steps_or_default(steps, 0)
        if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(
                f"matchingnet's support labels must be integers in [0, ways) of shape (points,); got dtype "
                f"{y.dtype} and shape {y.shape}."
            )
        check_labels((1, ways), y, "matchingnet's support labels y")
        embeddings, _ = embed(model, params, state, x)
        return MatchingSupport(params, normalize(embeddings), y)

    def predict(support: MatchingSupport, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        embeddings, new_state = embed(model, support.params, state, x)
        return matching_log_probs(normalize(embeddings), support.support, support.labels, ways, scale), new_state

    def task_loss(params: PyTree, state: PyTree, task: Task, steps: int | None = None) -> tuple[jax.Array, TaskOutput]:
        support = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(predict, loss_fn, metrics, support, state, task)

    return Learner(init=model.init, adapt=adapt, predict=predict, task_loss=task_loss)


@register_learner("matchingnet", embedding=True, any_ways=True)
def matchingnet_learner(config: Any, model: Model, family: Any) -> tuple[Learner, optax.GradientTransformation]:
    """Matching Networks for configs (``learner="matchingnet"``): ``ways`` (training) may exceed
    ``eval_ways``; cosine similarities unscaled (the paper's); Adam ``meta_lr``."""
    ways = max(config.ways, config.eval_ways)
    learner = matchingnet(model, ways, family.loss, metrics=family.metrics)
    return learner, optax.adam(config.meta_lr)
