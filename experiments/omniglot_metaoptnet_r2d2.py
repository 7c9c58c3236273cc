"""MetaOptNet with R2D2's ridge-regression head (Lee et al. 2019; Bertinetto et al. 2019), Omniglot 5-way
1-shot at test, trained on 20-way 1-shot episodes with 5 queries per class: Conv-4 embedding (64 filters,
2x2 max-pool per block, 64-d output, as omniglot_protonet.py), ridge penalty 50, meta-learned logit scale
and bias, Adam 1e-3, meta-batch 4.

Published numbers: none given here; R2D2 reports Omniglot results, but not with this embedding and
protocol, and I do not quote its table from memory, so `published` is left empty.

Run: jmeta train experiments/omniglot_metaoptnet_r2d2.py --workdir runs/omniglot_metaoptnet_r2d2
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
5-way 5-shot: add shots=5 eval_shots=5 (eval_shots sets the test's shots: shots=5 alone trains on
5-shot episodes and still tests 1-shot; `jmeta eval --workdir D eval_shots=5` re-tests a run 5-shot).
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "metaoptnet-r2d2", ways=20, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.eval_ways, config.queries, config.eval_queries = 5, 5, 5
    config.downsample = "maxpool"
    config.eval_steps = (0,)  # a closed-form head, no gradient steps
    config.ridge_lam = 50.0
    config.meta_batch, config.steps = 4, 20_000
    return config
