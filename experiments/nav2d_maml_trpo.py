"""MAML-TRPO on 2D navigation (Finn et al. 2017, sec. 5.3, Figure 4): a 2 x 100 ReLU Gaussian policy, 20 tasks of
20 episodes per meta-iteration, one inner policy-gradient step of 0.1, TRPO outer steps with KL bound 0.01;
beside a policy pretrained on all tasks and a random initialisation, tested on 40 new goals before and after 1,
2, 3 inner steps. ``steps``: meta-iterations (the paper trains for 100 on this task in MAML's code's settings);
``seconds``: a wall-clock budget per training (0: none). Needs ``pip install 'jmeta[rl]'``.

Run: jmeta train experiments/nav2d_maml_trpo.py --workdir runs/nav2d_maml_trpo
(again to resume after a kill), then jmeta eval --workdir runs/nav2d_maml_trpo [eval_tasks=100]
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.imports = ("jmeta.systems.maml_rl",)  # registers the program "maml-rl" (needs jmeta[rl])
    config.program, config.task, config.env, config.horizon = "maml-rl", "nav2d", "nav2d", 100
    config.algorithm, config.outer, config.baselines = "maml", "trpo", True
    config.steps, config.seconds, config.seed, config.meta_batch, config.eval_tasks = 100, 0.0, 0, 20, 40
    config.trajectories, config.inner_lr, config.max_kl, config.hidden, config.eval_steps = 20, 0.1, 0.01, (100, 100), 3
    config.checkpoint_every = 10  # meta-iterations; `jmeta train` on the same workdir resumes from the latest
    config.published = {}
    config.published_source = "Finn et al. 2017, Figure 4 (a plot; its values are not quoted: see docs/meta-rl.md)"
    return config
