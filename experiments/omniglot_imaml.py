"""iMAML, Omniglot 5-way 1-shot (Rajeswaran et al. 2019): ten inner SGD steps of 0.1 on the support loss
plus the proximal term (lam / 2) ||phi - theta||^2 with lam = 2, implicit meta-gradient by 5 steps of
conjugate gradient; meta-batch 32, Adam 1e-3. These settings are ours; see the paper for its own.

Run: jmeta train experiments/omniglot_imaml.py --workdir runs/omniglot_imaml
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "imaml", ways=5, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.inner_lr, config.inner_steps, config.eval_steps = 0.1, 10, (10,)
    config.lam, config.cg_steps = 2.0, 5
    return config
