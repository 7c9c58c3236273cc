"""Relation Networks, Omniglot 5-way 1-shot (Sung et al. 2018, sec. 4.1): embedding module of four
3x3-convolution blocks with 64 filters, BatchNorm and ReLU; relation module of two such blocks with 2x2
max-pools, a ReLU layer of 8 units and a sigmoid output; MSE between relation scores and one-hot labels;
class feature map = sum of its shots' maps; training episodes of 5 classes with 1 support and 19 query images
each; characters rotated by 90, 180 and 270 degrees as new classes; Adam 1e-3.

Deviations: the embedding is jmeta's Conv-4 with a 2x2 max-pool in every block, so 28x28 characters end as
1x1x64 maps (the paper pools in the first two blocks only and keeps 5x5 maps; its relation module then pools
them to 1x1); the learning rate is not annealed; one episode per meta-step and 20,000 of them (not the paper's
schedule).

Run: jmeta train experiments/omniglot_relationnet.py --workdir runs/omniglot_relationnet
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
5-way 5-shot: add shots=5 eval_shots=5 queries=15 eval_queries=15 (15 query images per class at 5-shot,
Sung et al. 2018, sec. 4.1; an Omniglot class has 20 examples, so 5 + 19 do not fit; eval_shots sets the
test's shots: shots=5 alone trains on 5-shot episodes and still tests 1-shot).
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "relationnet", ways=5, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.queries, config.eval_queries = 19, 19
    config.downsample = "maxpool"
    config.eval_steps = (0,)  # a learned comparison, no gradient steps
    config.meta_batch, config.steps = 1, 20_000
    config.published = {"0": 0.996}
    config.published_source = "Sung et al. 2018, Table 1 (Relation Net, Omniglot 5-way 1-shot: 99.6 ± 0.2%)"
    return config
