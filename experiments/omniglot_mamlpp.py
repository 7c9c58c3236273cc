"""MAML++, Omniglot 20-way 1-shot (Antoniou et al., ICLR 2019): five inner steps with learned per-layer,
per-step rates starting at 0.1 (LSLR), multi-step loss annealed over the first 10 epochs of 500 iterations
(MSL), first order for the first 50 epochs (DA), per-step BatchNorm statistics (BNRS) and weights and
biases (BNWB), cosine-annealed Adam 1e-3 (CA); 150 epochs of 500 iterations, meta-batch 16. The paper's
number averages 3 seeds and ensembles the top-5 validation checkpoints; jmeta reports one seed, one model.

Ablation, one part off at a time (same command, one override each): msl_steps=0, first_order_steps=0,
lslr=False, bnrs=False, bnwb=False, cosine=False.

Run: jmeta train experiments/omniglot_mamlpp.py --workdir runs/omniglot_mamlpp
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "mamlpp", ways=20, shots=1)
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.inner_lr, config.inner_steps, config.eval_steps = 0.1, 5, (5,)
    config.meta_batch, config.steps = 16, 75_000
    config.msl_steps, config.first_order_steps = 5_000, 25_000
    config.lslr, config.bnrs, config.bnwb, config.cosine = True, True, True, True
    config.published = {"5": 0.9765}
    config.published_source = "Antoniou et al. 2019 (MAML++, Omniglot 20-way 1-shot: 97.65 ± 0.05%)"
    return config
