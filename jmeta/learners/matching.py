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

``adapt`` returns :class:`MatchingSupport` (the meta-parameters, the support embeddings and their labels);
there is no inner gradient step, so ``steps`` is accepted and ignored. Support and query are embedded in
separate passes (BatchNorm with batch statistics normalises each set by its own).

Full context embeddings (``fce=True``; sec. 2.1.2 and appendix A.1-A.2): the support embeddings
``g'(x_i)`` are read by a bidirectional LSTM in the support set's order, ``g(x_i, S) = h_fwd_i + h_bwd_i +
g'(x_i)``, and each query embedding ``f'(x)`` by an attention LSTM of ``processing_steps`` (the paper's
``K``) steps, ``r = sum_i softmax_i(h . g(x_i, S)) g(x_i, S)``, ``h_hat, c = LSTM([f'(x), r], (h, c))``, ``h
= h_hat + f'(x)``, from ``h = f'(x)``, ``c = 0``; ``f(x, S)`` is the last ``h``. (The appendix writes the
read-out ``r`` beside ``h`` in the LSTM's state; here it joins the LSTM's input, so that its state keeps the
embedding's width.) The LSTM parameters (:class:`FullContextEmbedding`, Flax ``OptimizedLSTMCell`` s with as
many units as the embedding has dimensions) are meta-parameters beside the embedding's
(:class:`MatchingParams`); the query embeddings do not depend on one another. Without FCE the
meta-parameters are the embedding's parameters alone.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.learners.base import Learner, LossFn, TaskOutput, steps_or_default
from jmeta.learners.baseline import normalize
from jmeta.learners.common import check_bool, query_pass
from jmeta.learners.protonet import embed
from jmeta.losses import check_labels
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.registry import register_learner
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int


class MatchingParams(NamedTuple):
    """Matching Networks' meta-parameters with full context embeddings: the ``embedding`` model's and the
    ``context`` LSTMs' (:class:`FullContextEmbedding`)."""

    embedding: PyTree
    context: PyTree


class MatchingSupport(NamedTuple):
    """Matching Networks' adapted parameters: the meta-``params``, the support embeddings ``(support, dim)``
    (``g(x_i, S)`` with full context embeddings) and the support labels ``(support,)`` int."""

    params: PyTree
    support: jax.Array
    labels: jax.Array


class FullContextEmbedding(nn.Module):
    """The full context embeddings of Matching Networks (module docstring) for embeddings of ``width``
    dimensions: :meth:`support` reads the support embeddings ``(support, width)`` with a bidirectional LSTM;
    :meth:`query` reads query embeddings ``(queries, width)`` with ``processing_steps`` steps of the attention
    LSTM over the support's; ``__call__(g_prime, f_prime)`` does both (it initialises every parameter).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> module = FullContextEmbedding(width=4, processing_steps=2)
        >>> variables = module.init(jax.random.key(0), jnp.ones((5, 4)), jnp.ones((3, 4)))
        >>> [x.shape for x in module.apply(variables, jnp.ones((5, 4)), jnp.ones((3, 4)))]
        [(5, 4), (3, 4)]
    """

    width: int
    processing_steps: int = 5

    def __post_init__(self) -> None:
        positive_int("width", self.width)
        positive_int("processing_steps", self.processing_steps)
        super().__post_init__()

    def setup(self) -> None:
        self.forward = nn.RNN(nn.OptimizedLSTMCell(self.width))
        self.backward = nn.RNN(nn.OptimizedLSTMCell(self.width), reverse=True, keep_order=True)
        self.attention = nn.OptimizedLSTMCell(self.width)

    def support(self, g_prime: jax.Array) -> jax.Array:
        """``g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)`` ``(support, width)``, in the support set's order."""
        return g_prime + self.forward(g_prime[None])[0] + self.backward(g_prime[None])[0]

    def query(self, f_prime: jax.Array, g: jax.Array) -> jax.Array:
        """``f(x, S)`` ``(queries, width)``: the attention LSTM's last ``h`` over the support embeddings ``g``."""
        h, c = f_prime, jnp.zeros_like(f_prime)
        for _ in range(self.processing_steps):
            r = jax.nn.softmax(h @ g.T, axis=-1) @ g
            (c, h_hat), _ = self.attention((c, h), jnp.concatenate([f_prime, r], axis=-1))
            h = h_hat + f_prime
        return h

    def __call__(self, g_prime: jax.Array, f_prime: jax.Array) -> tuple[jax.Array, jax.Array]:
        g = self.support(g_prime)
        return g, self.query(f_prime, g)


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
    fce: bool = False,
    example_x: jax.Array | None = None,
    processing_steps: int = 5,
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
      fce: full context embeddings (module docstring); needs ``example_x``.
      example_x: a batch of one input ``(1, *input_shape)``, to find the embedding's width (``fce=True``).
      processing_steps: the attention LSTM's steps ``K`` (``fce=True``; the paper does not state its value).
      metrics: extra ``name -> fn(log_probs, labels)`` reported on the query set (e.g. accuracy).
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's passes.

    Returns:
      A ``jmeta.Learner``: meta-parameters are the embedding parameters (:class:`MatchingParams` with
      ``fce=True``); ``adapt`` returns :class:`MatchingSupport`; ``predict`` returns log class
      probabilities ``(points, ways)`` float32.

    Raises ValueError or TypeError naming the argument for a bad ``ways``, ``scale``, ``fce``,
    ``processing_steps``, or ``fce=True`` without ``example_x``; ``adapt`` raises ValueError for support
    labels that are not integers of shape ``(points,)`` (or, concrete, outside ``0..ways-1``).

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((64, 64)), jnp.zeros((1, 4)))
        >>> learner = jmeta.learners.matchingnet(model, ways=20, metrics={"accuracy": jmeta.losses.accuracy})
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    ways = positive_int("ways", ways)
    scale = positive_float("scale", scale)
    fce = check_bool("fce", fce)
    processing_steps = positive_int("processing_steps", processing_steps)
    metrics = dict(metrics or {})
    if fce and example_x is None:
        raise ValueError("matchingnet with fce=True needs example_x, a batch of one input, for the LSTMs' width.")
    if fce:
        shapes = jax.eval_shape(model.init, jax.random.key(0))
        width = jax.eval_shape(lambda p, s: embed(model, p, s, jnp.asarray(example_x))[0], *shapes).shape[-1]
        context = FullContextEmbedding(width, processing_steps)

    def init(key: jax.Array) -> tuple[PyTree, PyTree]:
        model_key, context_key = jax.random.split(key)
        params, state = model.init(model_key)
        if not fce:
            return params, state
        features = jnp.zeros((1, context.width))
        return MatchingParams(params, context.init(context_key, features, features)["params"]), state

    def embedding_params(params: PyTree) -> PyTree:
        return params.embedding if fce else params

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> MatchingSupport:
        steps_or_default(steps, 0)
        if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(
                f"matchingnet's support labels must be integers in [0, ways) of shape (points,); got dtype "
                f"{y.dtype} and shape {y.shape}."
            )
        check_labels((1, ways), y, "matchingnet's support labels y")
        embeddings, _ = embed(model, embedding_params(params), state, x)
        if fce:
            embeddings = context.apply({"params": params.context}, embeddings, method=FullContextEmbedding.support)
        return MatchingSupport(params, embeddings, y)

    def predict(support: MatchingSupport, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        embeddings, new_state = embed(model, embedding_params(support.params), state, x)
        if fce:
            embeddings = context.apply(
                {"params": support.params.context}, embeddings, support.support, method=FullContextEmbedding.query
            )
        log_probs = matching_log_probs(normalize(embeddings), normalize(support.support), support.labels, ways, scale)
        return log_probs, new_state

    def task_loss(params: PyTree, state: PyTree, task: Task, steps: int | None = None) -> tuple[jax.Array, TaskOutput]:
        support = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(predict, loss_fn, metrics, support, state, task)

    return Learner(init=init, adapt=adapt, predict=predict, task_loss=task_loss)


@register_learner("matchingnet", keys=("fce",), embedding=True, any_ways=True)
def matchingnet_learner(config: Any, model: Model, family: Any) -> tuple[Learner, optax.GradientTransformation]:
    """Matching Networks for configs (``learner="matchingnet"``): ``fce`` (full context embeddings, 5
    processing steps); ``ways`` (training) may exceed ``eval_ways``; cosine similarities unscaled (the
    paper's); Adam ``meta_lr``."""
    ways = max(config.ways, config.eval_ways)
    learner = matchingnet(
        model, ways, family.loss, fce=config.fce, example_x=family.example_input, metrics=family.metrics
    )
    return learner, optax.adam(config.meta_lr)
