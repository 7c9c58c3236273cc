"""Matching Networks, Omniglot 5-way 1-shot (Vinyals et al. 2016, sec. 4.1.1): Conv-4 embedding (64 filters,
3x3 convolutions, BatchNorm, ReLU, 2x2 max-pool per block: a 64-d embedding of 28x28 characters), cosine
attention over the support set, no full context embeddings (fce=True turns them on); trained on
episodes of the test's form, 5-way 1-shot ("test and train conditions must match", sec. 2.2), rotated
characters as new classes. Adam 1e-3.

Not from the paper (it does not state them): 5 queries per class, 32 episodes per meta-step, 20,000
meta-steps.

Run: jmeta train experiments/omniglot_matchingnet.py --workdir runs/omniglot_matchingnet
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
5-way 5-shot: add shots=5 eval_shots=5 (eval_shots sets the test's shots: shots=5 alone trains on
5-shot episodes and still tests 1-shot; `jmeta eval --workdir D eval_shots=5` re-tests a run 5-shot).
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "matchingnet", ways=5, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.queries, config.eval_queries = 5, 5
    config.downsample = "maxpool"
    config.fce = False  # full context embeddings
    config.eval_steps = (0,)  # attention over the support set, no gradient steps
    config.meta_batch, config.steps = 32, 20_000
    config.published = {"0": 0.981}
    config.published_source = (
        "Vinyals et al. 2016, Table 1"
        " (Matching Nets without fine-tuning, Omniglot 5-way 1-shot: 98.1%)"
    )
    return config
