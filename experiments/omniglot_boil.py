"""BOIL, Omniglot 5-way 1-shot (Oh et al. 2021): MAML's Omniglot setting (omniglot_maml.py: Conv-4, mean over
space before the linear head, one inner SGD step of 0.4 in meta-training and three at test, meta-batch 32,
Adam 1e-3) with the linear head frozen in the inner loop and the convolutional body adapted.

Published numbers: none given here. The BOIL paper's tables that I could cite exactly are not at hand,
so `published` is left empty rather than quoting a number from memory.

Run: jmeta train experiments/omniglot_boil.py --workdir runs/omniglot_boil
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
5-way 5-shot: add shots=5 eval_shots=5 (eval_shots sets the test's shots: shots=5 alone trains on
5-shot episodes and still tests 1-shot; `jmeta eval --workdir D eval_shots=5` re-tests a run 5-shot).
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "boil", ways=5, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.pool = "mean"  # MAML's code averages the last feature map over space for Omniglot
    config.head = "head"  # the top-level parameter name of Conv4's linear head: frozen in the inner loop
    config.first_order = False
    return config
