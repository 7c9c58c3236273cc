"""Config builders of BOIL and MetaOptNet, registered with ``jmeta.registry.register_learner`` on import
(``jmeta.learners`` imports this module), so that configs can say ``learner="boil"``,
``"metaoptnet-r2d2"`` or ``"metaoptnet-svm"``.

Each builder is ``builder(config, model, family) -> (learner, meta_optimizer)``: ``config`` an
``ml_collections.ConfigDict`` with the keys the registration declares (``keys``) and the run's keys
(``meta_lr``, ``ways``, ``eval_ways``, ...), ``model`` a ``jmeta.Model`` (an embedding, without a classifier
head, for the ``embedding=True`` learners), ``family`` anything with ``.loss`` and ``.metrics``. The
meta-optimiser is Adam with ``meta_lr``.

Example::

    >>> import types, jax.numpy as jnp, ml_collections, jmeta
    >>> from jmeta.registry import LEARNERS
    >>> config = ml_collections.ConfigDict({"ways": 5, "eval_ways": 5, "ridge_lam": 1.0, "meta_lr": 1e-3})
    >>> family = types.SimpleNamespace(loss=jmeta.losses.cross_entropy, metrics={})
    >>> model = jmeta.from_linen(jmeta.models.MLP((8,)), jnp.zeros((1, 4)))
    >>> learner, meta_optimizer = LEARNERS["metaoptnet-r2d2"].builder(config, model, family)
    >>> LEARNERS["metaoptnet-r2d2"].properties["any_ways"]
    True
"""

from __future__ import annotations

from typing import Any

import ml_collections
import optax

from jmeta.learners.base import Learner
from jmeta.learners.boil import boil
from jmeta.learners.metaoptnet import metaoptnet_r2d2, metaoptnet_svm
from jmeta.nn import Model
from jmeta.registry import register_learner

LearnerBuild = tuple[Learner, optax.GradientTransformation]


def boil_learner(config: ml_collections.ConfigDict, model: Model, family: Any) -> LearnerBuild:
    """BOIL: the parameters under the top-level name ``config.head`` are frozen in the inner loop, the rest
    adapts by ``inner_steps`` SGD steps of ``inner_lr``; ``first_order`` drops second-order terms."""
    learner = boil(
        model,
        family.loss,
        lambda path: path[0] == config.head,
        config.inner_lr,
        config.inner_steps,
        first_order=config.first_order,
        metrics=family.metrics,
    )
    return learner, optax.adam(config.meta_lr)


def r2d2_learner(config: ml_collections.ConfigDict, model: Model, family: Any) -> LearnerBuild:
    """MetaOptNet's ridge-regression head (R2D2) with penalty ``ridge_lam``, over ``max(ways, eval_ways)``."""
    ways = max(config.ways, config.eval_ways)
    learner = metaoptnet_r2d2(model, ways, family.loss, lam=config.ridge_lam, metrics=family.metrics)
    return learner, optax.adam(config.meta_lr)


def svm_learner(config: ml_collections.ConfigDict, model: Model, family: Any) -> LearnerBuild:
    """MetaOptNet's Crammer-Singer SVM head with ``svm_c``, at most ``svm_iterations`` solver steps, over
    ``max(ways, eval_ways)``."""
    ways = max(config.ways, config.eval_ways)
    learner = metaoptnet_svm(
        model, ways, family.loss, c=config.svm_c, iterations=config.svm_iterations, metrics=family.metrics
    )
    return learner, optax.adam(config.meta_lr)


register_learner("boil", boil_learner, keys=("head", "inner_lr", "inner_steps", "first_order"), inner_lr=True)
register_learner("metaoptnet-r2d2", r2d2_learner, keys=("ridge_lam",), embedding=True, any_ways=True)
register_learner(
    "metaoptnet-svm", svm_learner, keys=("svm_c", "svm_iterations"), embedding=True, any_ways=True
)
