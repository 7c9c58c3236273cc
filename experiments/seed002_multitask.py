"""Source 002: multi-task "shared knowledge" lets new tasks be learnt faster. A Conv-4 trunk (MAML's, 64 filters,
mean over space) is trained with one softmax over all 4112 Omniglot training classes (the 1028 characters of
the Vinyals split, each also rotated by 90, 180 and 270 degrees; ``rotate=()``: 1028 classes), on features
L2-normalised to norm 10 (a cosine softmax), Adam 3e-3 cosine-decayed to 0, 5000 steps of 128; a new 5-way
1-shot task gets an L2-regularised logistic-regression head fitted on the frozen trunk's unit-norm features of
its support set (``jmeta.systems.multitask``). Baseline: the same network (trunk and head) trained from
scratch on each support set, on the same test tasks; ``results.json``'s ``comparison`` is the paired gain.

The article's own network, ``model=dense64`` (``SharedTrunk002``, Dense(64)+ReLU), and its multi-task form,
``training=groups`` (one head per fixed group of 5 training characters, ``meta_batch`` groups of ``examples``
examples per class per step), are options.

``steps``: Adam steps; ``meta_batch``: training examples per step; ``eval_tasks``: test tasks.

Tian et al. 2020's recipe, off by default (docs/source-systems.md, 600 test tasks): ``augment=crop2`` shifts each
training image by up to 2 pixels (random crops after padding): 96.1 ± 0.4% at 5,000 steps, 96.6 ± 0.4% with
``steps=10000``, against 93.4 ± 0.5% without; ``distill_generations=1`` trains a Born-again student of the same
network on the previous generation's outputs softened at ``distill_temperature`` plus the labels (weight
``distill_hard_weight``): 96.2 ± 0.4% from the 96.1% teacher, a paired gain of +0.1 ± 0.2 points.

Run: jmeta train experiments/seed002_multitask.py --workdir runs/seed002_multitask
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder)
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "maml", ways=5, shots=1)
    config.program = "multitask"
    config.data_dir = str(default_data_dir("omniglot"))
    config.model, config.training, config.pool, config.rotate = "conv4", "all-classes", "mean", ("train",)
    config.features, config.examples = 64, 5  # model=dense64; training=groups
    config.meta_batch, config.meta_lr, config.steps = 128, 3e-3, 5000  # 640,000 example passes
    config.feature_scale, config.test_feature_scale = 10.0, 1.0  # cosine softmax in training
    config.head_steps, config.head_lr, config.head_l2 = 100, 1.0, 0.2  # = sklearn LogisticRegression(C=1)
    config.scratch_steps, config.scratch_lr = 25, 1e-2
    config.augment = ""  # training batches: "cropP" (random shifts of up to P pixels), "flip", joined by "+"
    config.distill_generations, config.distill_temperature, config.distill_hard_weight = 0, 4.0, 0.5
    config.eval_queries, config.eval_tasks = 15, 600
    config.published_source = "none: the article reports no figures"
    return config
