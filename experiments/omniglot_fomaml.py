"""First-order MAML, Omniglot 5-way 1-shot; otherwise as omniglot_maml.py.

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
