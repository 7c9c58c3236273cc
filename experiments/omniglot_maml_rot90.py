"""MAML, Omniglot 5-way 1-shot, with the augmentation of MAML's reference code (Finn et al. 2017): each
class of a meta-training episode is turned by its own random multiple of 90 degrees (following Santoro et
al. 2016), instead of jmeta's default of adding the rotated characters as new classes (rotate=()).
MAML's code also rotates the classes of test episodes; here test episodes are not rotated. Otherwise as
omniglot_maml.py.

Run: jmeta train experiments/omniglot_maml_rot90.py --workdir runs/omniglot_maml_rot90
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "maml", ways=5, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.pool = "mean"  # MAML's code averages the last feature map over space for Omniglot
    config.rotate, config.augment = (), "rot90"  # rotations per episode, not as new classes: never both
    config.published = {"3": 0.987}
    config.published_source = "Finn et al. 2017, Table 1 (MAML, Omniglot 5-way 1-shot: 98.7 ± 0.4%)"
    return config
