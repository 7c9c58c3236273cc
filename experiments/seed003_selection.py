"""Source 003, first part: algorithm selection. A pool of base learners (nearest centroid, 1-NN,
logistic regression and the article's Dense(64)-Dense(3) network) is scored on tasks drawn from Iris
(random classes, features and support sizes); a selector trained on the training tasks names a learner
for each test task. ``selector``: ``meta-features`` (an MLP on task meta-features) or ``learning-curves``
(the article's LSTM(64) over the learners' learning curves; needs ``shots=(4, 5)``).

``steps``: Adam steps of the selector; ``meta_batch``: training tasks; ``eval_tasks``: test tasks.

Run: jmeta train experiments/seed003_selection.py --workdir runs/seed003_selection
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.program, config.task, config.selector = "selection", "iris", "meta-features"
    config.shots, config.queries, config.curve_sizes = (2, 5), 10, (1, 2, 3)
    config.mlp_steps, config.mlp_lr = 100, 0.01
    config.steps, config.seed, config.meta_batch, config.eval_tasks = 300, 0, 200, 100
    config.published, config.published_source = {}, "none: the article reports no figures"
    return config
