"""Prototypical Networks, Omniglot 5-way 1-shot at test, trained on 60-way 1-shot episodes with 5 queries
per class (Snell et al. 2017, sec. 3.1): Conv-4 embedding (64 filters, 2x2 max-pool per block, 64-d
output), Adam 1e-3, one episode per step. Deviation: the learning rate is not halved every 2000 episodes.

Run: jmeta train experiments/omniglot_protonet.py --workdir runs/omniglot_protonet
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "protonet", ways=60, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.eval_ways, config.queries, config.eval_queries = 5, 5, 5
    config.downsample = "maxpool"
    config.eval_steps = (0,)  # prototypes, no gradient steps
    config.meta_batch, config.steps = 1, 20_000
    config.published = {"0": 0.988}
    config.published_source = "Snell et al. 2017, Table 1 (Prototypical Networks, Omniglot 5-way 1-shot: 98.8%)"
    return config
