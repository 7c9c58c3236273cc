"""MAML-TRPO on the half-cheetah goal-velocity tasks (Finn et al. 2017, sec. 5.3, Figure 5): Brax's HalfCheetah
(MJX pipeline), a goal velocity uniform in [0, 2] per task, reward ``-|v - goal| - 0.05 |a|^2``, horizon 200; the
paper's locomotion settings (App. A.2): a 2 x 100 ReLU Gaussian policy, 40 tasks of 20 episodes per
meta-iteration, one inner policy-gradient step of 0.1, TRPO outer steps with KL bound 0.01; beside a policy
pretrained on all tasks and a random initialisation, tested on 40 new goal velocities before and after 1, 2, 3
inner steps. Needs ``pip install 'jmeta[rl]'`` (Brax).

Brax simulates a few thousand steps/s on a CPU (docs/meta-rl.md), and a meta-iteration of these settings is
320,000 steps: the run is meant for an accelerator. A short run that goes through every part on a CPU:

    jmeta train experiments/halfcheetah_vel_maml_trpo.py --workdir runs/cheetah_short steps=2 meta_batch=2 \\
        trajectories=2 horizon=20 "hidden=(32, 32)" eval_tasks=3 eval_steps=1

Run: jmeta train experiments/halfcheetah_vel_maml_trpo.py --workdir runs/halfcheetah_vel_maml_trpo
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.imports = ("jmeta.systems.maml_rl",)  # registers the program "maml-rl" (needs jmeta[rl])
    config.program, config.task = "maml-rl", "half-cheetah-velocity"
    config.env, config.horizon = "half-cheetah-velocity", 200
    config.algorithm, config.outer, config.baselines = "maml", "trpo", True
    config.steps, config.seconds, config.seed, config.meta_batch, config.eval_tasks = 500, 0.0, 0, 40, 40
    config.trajectories, config.inner_lr, config.max_kl, config.hidden, config.eval_steps = 20, 0.1, 0.01, (100, 100), 3
    config.checkpoint_every = 5  # meta-iterations; `jmeta train` on the same workdir resumes from the latest
    config.published = {}
    config.published_source = "Finn et al. 2017, Figure 5 (a plot; its values are not quoted: see docs/meta-rl.md)"
    return config
