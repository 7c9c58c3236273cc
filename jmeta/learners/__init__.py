"""Meta-learners, each a ``jmeta.Learner`` of pure functions."""

from jmeta.learners import registered  # noqa: F401  (registers boil and metaoptnet-* with jmeta.registry)
from jmeta.learners.anil import anil
from jmeta.learners.base import Learner, TaskOutput
from jmeta.learners.baseline import BaselineParams, FittedHead, Head, baseline, chen_sgd, fit_head
from jmeta.learners.boil import boil
from jmeta.learners.cavia import CAVIAParams, cavia
from jmeta.learners.imaml import imaml
from jmeta.learners.maml import fomaml, maml
from jmeta.learners.mamlpp import (
    MAMLPPAdapted,
    MAMLPPParams,
    MAMLPPState,
    mamlpp,
    mamlpp_meta_optimizer,
    msl_weights,
)
from jmeta.learners.matching import FullContextEmbedding, MatchingParams, MatchingSupport, matchingnet
from jmeta.learners.metaoptnet import (
    LinearHead,
    MetaOptNetParams,
    crammer_singer_dual,
    metaoptnet_r2d2,
    metaoptnet_svm,
    ridge_weights,
)
from jmeta.learners.metasgd import MetaSGDParams, metasgd
from jmeta.learners.protonet import Prototypes, protonet
from jmeta.learners.relation import RelationModule, RelationParams, RelationState, RelationSupport, relationnet
from jmeta.learners.reptile import predict_non_transductive, reptile, reptile_meta_optimizer

__all__ = [
    "BaselineParams",
    "CAVIAParams",
    "FittedHead",
    "FullContextEmbedding",
    "Head",
    "Learner",
    "LinearHead",
    "MAMLPPAdapted",
    "MAMLPPParams",
    "MAMLPPState",
    "MatchingParams",
    "MatchingSupport",
    "MetaOptNetParams",
    "MetaSGDParams",
    "Prototypes",
    "RelationModule",
    "RelationParams",
    "RelationState",
    "RelationSupport",
    "TaskOutput",
    "anil",
    "baseline",
    "boil",
    "cavia",
    "chen_sgd",
    "crammer_singer_dual",
    "fit_head",
    "fomaml",
    "imaml",
    "maml",
    "mamlpp",
    "mamlpp_meta_optimizer",
    "matchingnet",
    "metaoptnet_r2d2",
    "metaoptnet_svm",
    "metasgd",
    "msl_weights",
    "predict_non_transductive",
    "protonet",
    "relationnet",
    "reptile",
    "reptile_meta_optimizer",
    "ridge_weights",
]
