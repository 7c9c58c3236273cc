"""Source 003, first part: algorithm selection, leave one data set out. Tasks are derived from the four
classification data sets that ship with scikit-learn (iris, wine, breast cancer, digits) by subsampling
classes, features and training examples, half of them with irrelevant noise features added; a pool of
seven learners of different kinds (5-NN, logistic regression, Gaussian naive Bayes, decision tree, linear
and RBF SVMs, the article's Dense(64) network) is scored on each task's held-out examples. For each data
set, a selector trained on the other three data sets' tasks picks a learner for each of its tasks; it is
compared with the single best learner of those three data sets and with the per-task oracle.

``selector``: ``meta-features`` (an MLP ensemble on meta-features and landmarkers) or ``learning-curves``
(the article's LSTM(64) over the learners' learning curves); ``objective``: ``accuracy`` (regression of
each learner's relative accuracy), ``regret`` (cost-sensitive) or ``best`` (plain classification).

``eval_tasks``: tasks drawn from each data set (each is a test task once, when its data set is held out);
``steps``: AdamW steps of the selector; ``meta_batch``: training tasks per step.

Run: jmeta train experiments/seed003_selection.py --workdir runs/seed003_selection
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.program, config.task, config.selector = "selection", "sklearn-derived", "meta-features"
    config.datasets = ("iris", "wine", "breast cancer", "digits")
    config.max_classes, config.max_features, config.max_queries = 3, 16, 300
    config.min_shots, config.max_shots = 10, 150
    config.noise_probability, config.noise_ratio, config.splits, config.curve_sizes = 0.5, 4, 3, (1, 2)
    config.mlp_steps, config.mlp_lr = 200, 0.01
    config.objective, config.ensemble, config.selector_lr, config.weight_decay = "regret", 5, 3e-3, 1e-2
    config.steps, config.seed, config.meta_batch, config.eval_tasks = 1000, 0, 128, 150
    config.resamples = 2000
    config.published, config.published_source = {}, "none: the article reports no figures"
    return config
