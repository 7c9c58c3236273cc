"""Meta-reinforcement learning: task-parameterised environments as pure functions (:mod:`jmeta.rl.envs`), Gaussian
MLP policies and advantages (:mod:`jmeta.rl.policy`), TRPO's step (:mod:`jmeta.rl.trpo`), MAML-RL and its
first-order, pretrained and Reptile variants with the whole meta-iteration one compiled function
(:mod:`jmeta.rl.maml`), and meta-test evaluation (:mod:`jmeta.rl.evaluation`). Finn et al. 2017, sec. 5.3.

Needs ``distrax`` and ``rlax`` (``pip install 'jmeta[rl]'``, which also brings Brax for the half-cheetah tasks).
"""

from jmeta.rl.envs import Env, half_cheetah, nav2d
from jmeta.rl.evaluation import compare, evaluate, format_comparison
from jmeta.rl.maml import ALGORITHMS, MetaRL, MetaRLState, maml_rl
from jmeta.rl.policy import Trajectories, advantages, policy_init, rollout
from jmeta.rl.trpo import conjugate_gradient, trpo_step

__all__ = [
    "ALGORITHMS",
    "Env",
    "MetaRL",
    "MetaRLState",
    "Trajectories",
    "advantages",
    "compare",
    "conjugate_gradient",
    "evaluate",
    "format_comparison",
    "half_cheetah",
    "maml_rl",
    "nav2d",
    "policy_init",
    "rollout",
    "trpo_step",
]
