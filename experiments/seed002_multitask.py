"""Source 002: multi-task "shared knowledge". The article's Dense(64)+ReLU trunk (``SharedTrunk002``) is
trained on Omniglot with one softmax head per fixed group of 5 training characters (Adam, cross-entropy);
a new 5-way 1-shot task gets a fresh head fitted on the frozen trunk's features of its support set
(``head_steps`` gradient steps at ``head_lr``), as ``jmeta.systems.multitask``.

``steps``: Adam steps; ``meta_batch``: groups per step; ``eval_tasks``: test tasks.

Run: jmeta train experiments/seed002_multitask.py --workdir runs/seed002_multitask
"""

from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "maml", ways=5, shots=1)
    config.program = "multitask"
    config.data_dir = "../shared/data/omniglot"
    config.features, config.examples = 64, 5
    config.head_steps, config.head_lr = 100, 0.1
    config.meta_batch, config.steps, config.eval_tasks = 16, 5000, 600
    config.published_source = "none: the article reports no figures"
    return config
