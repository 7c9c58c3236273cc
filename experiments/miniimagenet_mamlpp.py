"""MAML++, mini-ImageNet 5-way 1-shot (Antoniou et al., ICLR 2019): Conv-4 with 48 filters and 2x2 max-pool,
five inner steps with learned per-layer, per-step rates starting at 0.01 (LSLR), multi-step loss (MSL),
first order for the first 50 epochs (DA), per-step BatchNorm statistics and weights (BNRS, BNWB),
cosine-annealed Adam 1e-3 (CA); 15 queries per class; meta-batch 2; 150 epochs of 500 iterations.
The paper's number averages 3 seeds and ensembles the top-5 validation checkpoints; jmeta reports one.

Needs the data: data_dir=DIR holding mini-imagenet-cache-{train,val,test}.pkl, or images/ with the Ravi &
Larochelle train.csv/val.csv/test.csv.

Run: jmeta train experiments/miniimagenet_mamlpp.py --workdir runs/miniimagenet_mamlpp data_dir=DIR
"""

from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("mini-imagenet", "mamlpp", ways=5, shots=1)
    config.split = ""  # mini-ImageNet has one split: train/val/test classes
    config.hidden, config.downsample = 48, "maxpool"
    config.queries = config.eval_queries = 15
    config.inner_lr, config.inner_steps, config.eval_steps = 0.01, 5, (5,)
    config.meta_batch, config.steps = 2, 75_000
    config.msl_steps, config.first_order_steps = 5_000, 25_000
    config.lslr, config.bnrs, config.bnwb, config.cosine = True, True, True, True
    config.published = {"5": 0.5215}
    config.published_source = "Antoniou et al. 2019 (MAML++, mini-ImageNet 5-way 1-shot: 52.15 ± 0.26%)"
    return config
