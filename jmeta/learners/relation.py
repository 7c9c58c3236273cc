"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, "Learning to Compare: Relation Network for
Few-Shot Learning", CVPR 2018).

An embedding module ``f`` (the ``model``) maps each image to a feature map ``(height, width, channels)``; a
model that returns flat ``(points, dim)`` features is read as ``1 x 1 x dim`` maps. A class's feature map is
the **sum** of its support points' maps (sec. 3.3, K-shot). Each (class, query) pair is concatenated along
the channels, ``[f(class), f(query)]``, and a learned relation module ``g`` (:class:`RelationModule`) scores
it with a sigmoid relation score in (0, 1) (eq. 1). Training regresses the scores on the one-hot labels with
the mean squared error (eq. 3, :func:`relation_mse`). The relation module's parameters are meta-parameters
beside the embedding's (:class:`RelationParams`); there is no inner gradient step (``steps`` is ignored).

The relation module for Omniglot / Conv-4 embeddings (sec. 3.4, Fig. 2): two blocks of [3x3 convolution
with 64 filters and padding 1, batch normalisation, ReLU, 2x2 max-pool], then a fully connected ReLU layer
of 8 units and one sigmoid output. A max-pool is skipped where the map is already smaller than 2x2 (jmeta's
Conv-4 pools its 28x28 Omniglot inputs down to 1x1, where the paper's embedding keeps 5x5 maps; from 5x5
the blocks give the paper's 2x2 and 1x1).

Representation: ``adapt`` returns :class:`RelationSupport` (the meta-parameters, the ``(ways, height, width,
channels)`` class maps and the ``(ways,)`` mask of classes present); ``predict`` returns relation scores
``(points, ways)``, ``-inf`` for classes without support points (so arg-max accuracy and
:func:`relation_mse` ignore them, and a learner for ``ways`` classes tests tasks with fewer). The model
state is a :class:`RelationState` of both modules' states (BatchNorm statistics).

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((32, 16)), jnp.zeros((1, 4)))
    >>> learner = jmeta.learners.relationnet(model, jnp.zeros((1, 4)), ways=5)
    >>> params, state = learner.init(jax.random.key(0))
    >>> x, y = jax.random.normal(jax.random.key(1), (10, 4)), jnp.arange(10) % 5
    >>> scores, _ = learner.predict(learner.adapt(params, state, x, y), state, x[:3])
    >>> scores.shape, bool(((scores > 0) & (scores < 1)).all())
    ((3, 5), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jmeta.learners.base import Learner, LossFn, TaskOutput, call_apply, steps_or_default
from jmeta.learners.common import query_pass
from jmeta.losses import check_labels
from jmeta.models.conv4 import check_batch_norm
from jmeta.nn import Model, PyTree, check_model, from_linen, with_compute_dtype
from jmeta.registry import register_learner
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


class RelationModule(nn.Module):
    """The relation module ``g``: ``blocks`` x [3x3 convolution with ``hidden`` filters and padding 1,
    BatchNorm, ReLU, 2x2 max-pool (skipped on maps smaller than 2x2)], flatten, a ReLU layer of ``units``,
    one output, sigmoid. Input: concatenated pairs ``(pairs, height, width, 2 * channels)`` float; output:
    scores ``(pairs,)`` in (0, 1). The defaults are Sung et al.'s for Omniglot (sec. 3.4). BatchNorm uses
    batch statistics (``use_running_average=False``), as the embedding's does during meta-training.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> module = RelationModule()
        >>> variables = module.init(jax.random.key(0), jnp.zeros((2, 5, 5, 128)))
        >>> module.apply(variables, jnp.ones((3, 5, 5, 128)), mutable=["batch_stats"])[0].shape
        (3,)
    """

    hidden: int = 64
    units: int = 8
    blocks: int = 2
    use_running_average: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("hidden", "units", "blocks"):
            positive_int(name, getattr(self, name))
        check_batch_norm(self.use_running_average, self.bn_momentum, self.bn_epsilon)
        super().__post_init__()

    @nn.compact
    def __call__(self, pairs: jax.Array) -> jax.Array:
        if pairs.ndim != 4:
            raise ValueError(f"pairs must have shape (pairs, height, width, channels); got shape {pairs.shape}.")
        x = pairs
        for block in range(self.blocks):
            x = nn.Conv(self.hidden, (3, 3), padding=1, name=f"conv{block}")(x)
            x = nn.BatchNorm(
                use_running_average=self.use_running_average,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                name=f"bn{block}",
            )(x)
            x = nn.relu(x)
            if min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = nn.relu(nn.Dense(self.units, name="fc0")(x.reshape(x.shape[0], -1)))
        return nn.sigmoid(nn.Dense(1, name="fc1")(x))[:, 0]


class RelationParams(NamedTuple):
    """Relation Networks' meta-parameters: the ``embedding`` module's and the ``relation`` module's."""

    embedding: PyTree
    relation: PyTree


class RelationState(NamedTuple):
    """The model states (e.g. BatchNorm statistics) of the ``embedding`` and ``relation`` modules."""

    embedding: PyTree
    relation: PyTree


class RelationSupport(NamedTuple):
    """Relation Networks' adapted parameters: the meta-``params``, the ``(ways, height, width, channels)``
    class feature maps (sums over each class's support points) and the ``(ways,)`` bool mask ``present``."""

    params: RelationParams
    classes: jax.Array
    present: jax.Array


def relation_mse(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Sung et al.'s loss (eq. 3): the mean squared error between relation ``scores`` ``(points, ways)`` and
    the one-hot ``labels`` ``(points,)``, over every point and every class present (scores ``-inf`` mark
    absent classes and are left out).

    Example::

        >>> import jax.numpy as jnp
        >>> float(relation_mse(jnp.array([[0.5, 0.0, -jnp.inf]]), jnp.array([0])))  # (0.25 + 0) / 2
        0.125
    """
    check_labels(scores, labels, "relation_mse's labels")
    present = scores > -jnp.inf
    errors = jnp.where(present, scores - jax.nn.one_hot(labels, scores.shape[-1], dtype=scores.dtype), 0.0)
    return jnp.sum(errors**2) / jnp.maximum(jnp.sum(present), 1)


def feature_maps(model: Model, params: PyTree, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
    """The embedding ``model``'s outputs on ``x`` as feature maps ``(points, height, width, channels)``
    (flat ``(points, dim)`` outputs become ``(points, 1, 1, dim)``) and the new model state.

    Raises ValueError for outputs of another rank.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((3,)), jnp.zeros((1, 2)))
        >>> params, state = model.init(jax.random.key(0))
        >>> feature_maps(model, params, state, jnp.ones((4, 2)))[0].shape
        (4, 1, 1, 3)
    """
    out, new_state = call_apply(model.apply, params, state, x)
    if out.ndim == 2:
        return out[:, None, None, :], new_state
    if out.ndim != 4:
        raise ValueError(
            "relationnet's embedding model must return feature maps (points, height, width, channels) or flat "
            f"features (points, dim); got shape {out.shape}."
        )
    return out, new_state


def relation_scores(
    relation: Model, params: PyTree, state: PyTree, query: jax.Array, classes: jax.Array
) -> tuple[jax.Array, PyTree]:
    """Scores ``(queries, ways)`` of the ``relation`` module on every pair ``[classes[k], query[i]]``
    (concatenated along the channels), and the relation module's new state. ``query`` is ``(queries, h, w,
    c)`` and ``classes`` ``(ways, h, w, c)``.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> relation = jmeta.from_linen(RelationModule(hidden=4, units=2), jnp.zeros((1, 1, 1, 6)))
        >>> params, state = relation.init(jax.random.key(0))
        >>> relation_scores(relation, params, state, jnp.ones((3, 1, 1, 3)), jnp.ones((2, 1, 1, 3)))[0].shape
        (3, 2)
    """
    queries, ways = query.shape[0], classes.shape[0]
    pairs = jnp.concatenate(
        [
            jnp.broadcast_to(classes[None], (queries, *classes.shape)),
            jnp.broadcast_to(query[:, None], (queries, ways, *query.shape[1:])),
        ],
        axis=-1,
    )
    scores, new_state = call_apply(relation.apply, params, state, pairs.reshape(queries * ways, *pairs.shape[2:]))
    return scores.reshape(queries, ways), new_state


def relationnet(
    model: Model,
    example_x: jax.Array,
    ways: int,
    loss_fn: LossFn = relation_mse,
    *,
    relation: RelationModule | None = None,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Relation Networks over the embedding ``model`` with a learned ``relation`` module (see the module
    docstring).

    Args:
      model: a ``jmeta.Model`` mapping inputs to feature maps ``(points, h, w, c)`` or flat features.
      example_x: a batch of one input ``(1, *input_shape)``, to find the feature maps' shape.
      ways: the largest number of classes of a task (static); tasks with fewer are fine.
      loss_fn: ``loss_fn(scores, labels) -> scalar`` on the query set; :func:`relation_mse` (the paper's).
      relation: the Flax relation module; default ``RelationModule()`` (Sung et al.'s for Omniglot).
      metrics: extra ``name -> fn(scores, labels)`` reported on the query set (e.g. accuracy).
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of both modules' passes.

    Returns:
      A ``jmeta.Learner``: ``init(key) -> (RelationParams, RelationState)``; ``adapt`` returns
      :class:`RelationSupport`; ``predict`` returns scores ``(points, ways)`` float32.

    Raises ValueError or TypeError naming the argument for a bad argument or an embedding of another
    rank; ``adapt`` raises ValueError for support labels that are not integers of shape ``(points,)`` (or,
    concrete, outside ``0..ways-1``).

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.Conv4(None, downsample="maxpool"), jnp.zeros((1, 28, 28, 1)))
        >>> learner = jmeta.learners.relationnet(model, jnp.zeros((1, 28, 28, 1)), ways=5)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    ways = positive_int("ways", ways)
    relation = RelationModule() if relation is None else relation
    if not isinstance(relation, nn.Module):
        raise TypeError(f"relation must be a flax.linen.Module; got {type(relation).__name__}.")
    metrics = dict(metrics or {})
    params_shape = jax.eval_shape(model.init, jax.random.key(0))
    maps = jax.eval_shape(lambda p, s: feature_maps(model, p, s, jnp.asarray(example_x))[0], *params_shape)
    pair = jnp.zeros((1, *maps.shape[1:3], 2 * maps.shape[3]))
    relation_model = with_compute_dtype(from_linen(relation, pair), compute_dtype)

    def init(key: jax.Array) -> tuple[RelationParams, RelationState]:
        embedding_key, relation_key = jax.random.split(key)
        embedding, embedding_state = model.init(embedding_key)
        relation_params, relation_state = relation_model.init(relation_key)
        return RelationParams(embedding, relation_params), RelationState(embedding_state, relation_state)

    def adapt(
        params: RelationParams, state: RelationState, x: jax.Array, y: jax.Array, steps: int | None = None
    ) -> RelationSupport:
        steps_or_default(steps, 0)
        if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(
                f"relationnet's support labels must be integers in [0, ways) of shape (points,); got dtype "
                f"{y.dtype} and shape {y.shape}."
            )
        check_labels((1, ways), y, "relationnet's support labels y")
        support, _ = feature_maps(model, params.embedding, state.embedding, x)
        one_hot = jax.nn.one_hot(y, ways, dtype=support.dtype)
        classes = (one_hot.T @ support.reshape(support.shape[0], -1)).reshape(ways, *support.shape[1:])
        return RelationSupport(params, classes, one_hot.sum(axis=0) > 0)

    def predict(support: RelationSupport, state: RelationState, x: jax.Array) -> tuple[jax.Array, RelationState]:
        query, embedding_state = feature_maps(model, support.params.embedding, state.embedding, x)
        scores, relation_state = relation_scores(
            relation_model, support.params.relation, state.relation, query, support.classes
        )
        scores = jnp.where(support.present[None], scores.astype(jnp.float32), -jnp.inf)
        return scores, RelationState(embedding_state, relation_state)

    def task_loss(
        params: RelationParams, state: RelationState, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        support = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(predict, loss_fn, metrics, support, state, task)

    return Learner(init=init, adapt=adapt, predict=predict, task_loss=task_loss)


@register_learner("relationnet", embedding=True, any_ways=True)
def relationnet_learner(config: Any, model: Model, family: Any) -> tuple[Learner, optax.GradientTransformation]:
    """Relation Networks for configs (``learner="relationnet"``): the paper's relation module and MSE loss
    (not the family's loss; its metrics are reported), ``ways`` (training) may exceed ``eval_ways``, Adam
    ``meta_lr`` (Sung et al. 2018, sec. 4: Adam 1e-3)."""
    ways = max(config.ways, config.eval_ways)
    learner = relationnet(model, family.example_input, ways, metrics=family.metrics)
    return learner, optax.adam(config.meta_lr)
