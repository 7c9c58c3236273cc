"""Meta-learners, each a ``jmeta.Learner`` of pure functions."""

from jmeta.learners.anil import anil
from jmeta.learners.base import Learner, TaskOutput
from jmeta.learners.baseline import BaselineParams, FittedHead, Head, baseline, chen_sgd, fit_head
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
from jmeta.learners.metasgd import MetaSGDParams, metasgd
from jmeta.learners.protonet import Prototypes, protonet
from jmeta.learners.relation import RelationModule, RelationParams, RelationState, RelationSupport, relationnet
from jmeta.learners.reptile import predict_non_transductive, reptile, reptile_meta_optimizer

__all__ = [
    "BaselineParams",
    "FittedHead",
    "FullContextEmbedding",
    "Head",
    "Learner",
    "MAMLPPAdapted",
    "MAMLPPParams",
    "MAMLPPState",
    "MatchingParams",
    "MatchingSupport",
    "MetaSGDParams",
    "Prototypes",
    "RelationModule",
    "RelationParams",
    "RelationState",
    "RelationSupport",
    "TaskOutput",
    "anil",
    "baseline",
    "chen_sgd",
    "fit_head",
    "fomaml",
    "imaml",
    "maml",
    "matchingnet",
    "mamlpp",
    "mamlpp_meta_optimizer",
    "metasgd",
    "msl_weights",
    "predict_non_transductive",
    "protonet",
    "relationnet",
    "reptile",
    "reptile_meta_optimizer",
]
