"""Meta-learners, each a ``jmeta.Learner`` of pure functions."""

from jmeta.learners.base import Learner, TaskOutput
from jmeta.learners.maml import fomaml, maml

__all__ = ["Learner", "TaskOutput", "fomaml", "maml"]
