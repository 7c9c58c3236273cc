"""MAML, Omniglot 20-way 1-shot (Finn et al. 2017, Table 1; settings from sec. 5.2 and the MAML code).

Five inner SGD steps of 0.1 during meta-training and at test; meta-batch 16; otherwise as omniglot_maml.py.

Inner-loss convention: jmeta's inner loss is the mean cross-entropy over the support set's N*K points;
MAML's reference code differentiates their sum divided by K, N times the mean, so its step of 0.1 on
20 ways equals inner_lr=2.0 here. This config keeps inner_lr=0.1 on the mean (a step twenty times smaller);
inner_lr=2.0 is the reference code's step (not measured on 20 ways; on 5 ways see omniglot_maml.py).

Run: jmeta train experiments/omniglot_maml_20w1s.py --workdir runs/omniglot_maml_20w1s
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "maml", ways=20, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.pool = "mean"  # MAML's code averages the last feature map over space for Omniglot
    config.inner_lr, config.inner_steps, config.eval_steps = 0.1, 5, (5,)
    config.meta_batch = 16
    config.published = {"5": 0.958}
    config.published_source = "Finn et al. 2017, Table 1 (MAML, Omniglot 20-way 1-shot: 95.8 ± 0.3%)"
    return config
