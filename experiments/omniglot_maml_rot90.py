"""MAML, Omniglot 5-way 1-shot, with the augmentation of MAML's reference code (Finn et al. 2017): each
class of a meta-training episode is turned by its own random multiple of 90 degrees (following Santoro et
al. 2016), instead of jmeta's default of adding the rotated characters as new classes (rotate=()).
MAML's code also rotates the classes of test episodes; here test episodes are not rotated. Otherwise as
omniglot_maml.py.

Run: jmeta train experiments/omniglot_maml_rot90.py --workdir runs/omniglot_maml_rot90
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from pathlib import Path

from jmeta.experiment import load_config


def get_config():
    config = load_config(Path(__file__).with_name("omniglot_maml.py"))
    config.rotate, config.augment = (), "rot90"  # rotations per episode, not as new classes: never both
    return config
