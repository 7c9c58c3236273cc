"""Meta-SGD, Omniglot 5-way 1-shot (Li et al. 2017): per-parameter inner learning rates learned with the
initialisation, one inner step; rates start at 0.4, the other settings as omniglot_maml.py (1 step at test).

Run: jmeta train experiments/omniglot_metasgd.py --workdir runs/omniglot_metasgd
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "metasgd", ways=5, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.pool = "mean"  # MAML's code averages the last feature map over space for Omniglot
    config.eval_steps = (1,)
    config.published = {"1": 0.9953}
    config.published_source = "Li et al. 2017 (Meta-SGD, Omniglot 5-way 1-shot: 99.53 ± 0.26%)"
    return config
