"""First-order MAML, Omniglot 5-way 1-shot; otherwise as omniglot_maml.py.

Inner-loss convention: jmeta's inner loss is the mean cross-entropy over the support set's N*K points;
MAML's reference code differentiates their sum divided by K, N times the mean, so its step of 0.4 equals
inner_lr=2.0 here. This config keeps inner_lr=0.4 on the mean (a step five times smaller), as
omniglot_maml.py, where the two steps are compared for MAML.

Run: jmeta train experiments/omniglot_fomaml.py --workdir runs/omniglot_fomaml
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "fomaml", ways=5, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.pool = "mean"  # MAML's code averages the last feature map over space for Omniglot
    config.published = {"3": 0.983}
    config.published_source = (
        "Nichol et al. 2018 (first-order MAML with transduction, 5-way 1-shot: 98.3 ± 0.5%)"
    )
    return config
