"""Source 003, second part: EM for Gaussian mixtures. A 3-component full-covariance mixture is fitted to
the 150 Iris flowers by ``jmeta.systems.gmm`` and by scikit-learn's ``GaussianMixture`` from the same k-means++
initialisations; clusters are scored against the species (adjusted Rand index, purity).

``steps``: at most this many EM iterations (``tol`` stops earlier); ``eval_tasks``: initialisations;
``meta_batch``: unused (EM fits the whole data set), kept because every config has it.

Run: jmeta train experiments/seed003_gmm.py --workdir runs/seed003_gmm
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.program, config.task = "gmm", "iris"
    config.components, config.covariance, config.tol = 3, "full", 1e-6
    config.steps, config.seed, config.meta_batch, config.eval_tasks = 200, 0, 1, 20
    config.published, config.published_source = {}, "none: the article reports no figures"
    return config
