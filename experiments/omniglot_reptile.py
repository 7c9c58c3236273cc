"""Reptile, Omniglot 5-way 1-shot, non-transductive (Nichol et al. 2018, settings of their Omniglot 1-shot
run): 5 inner Adam steps (beta1 = 0) of 0.001 on 10 shots per class during meta-training; meta step 1.0
annealed linearly to 0; meta-batch 5; 100,000 iterations; 50 inner steps on the 1-shot support set at test.
Deviation: the inner steps use the whole support set, not mini-batches of 10.

Run: jmeta train experiments/omniglot_reptile.py --workdir runs/omniglot_reptile
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "reptile", ways=5, shots=10)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.queries, config.eval_shots, config.eval_queries = 1, 1, 1
    config.inner_lr, config.inner_steps, config.eval_steps = 0.001, 5, (50,)
    config.transductive = False
    config.meta_lr, config.meta_batch, config.steps = 1.0, 5, 100_000
    config.published = {"50": 0.9539}
    config.published_source = "Nichol et al. 2018 (Reptile, non-transductive, 5-way 1-shot: 95.39 ± 0.09%)"
    return config
