"""Baseline++, Omniglot 5-way 1-shot (Chen et al. 2019, "A Closer Look at Few-shot Classification", sec. 3.2
and 4.1): Conv-4 pre-trained with a cosine classifier over all training classes (1028 characters of the
Vinyals split in four rotations: 4112 classes) on minibatches of 16 images, Adam 1e-3; at test, a new cosine
classifier fitted to each support set's frozen features for 100 epochs in batches of 4 (SGD 0.01, momentum
0.9, dampening 0.9, weight decay 0.001, the authors' code), 16 queries per class.

Pre-training through jmeta's trainer: task="all-classes" draws minibatches of `batch_points` examples with
one-hot labels over every training class (jmeta.pretraining); validation and test are 5-way 1-shot
episodes of `dataset`. Deviations: minibatches are drawn with replacement rather than by epochs, and 20,000
of them (Chen et al. train 400 epochs).

published is empty: I could not confirm a table and row of Chen et al. 2019 with an Omniglot 5-way 1-shot
accuracy of Baseline++ in this setting (their Omniglot experiments are the cross-domain Omniglot -> EMNIST ones).

Run: jmeta train experiments/omniglot_baselinepp.py --workdir runs/omniglot_baselinepp
(reads Omniglot's official zips from $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot; data_dir=PATH
for another folder, data_dir=None for TFDS)
5-way 5-shot: add eval_shots=5 eval_queries=15 (pre-training draws no episodes, and an Omniglot class has
20 examples: 5 + 16 do not fit; `jmeta eval --workdir D eval_shots=5 eval_queries=15` re-tests a run
5-shot). Baseline and fine-tuning: add learner=baseline or learner=finetune.
"""

from jmeta.data import default_data_dir
from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "baseline++", ways=5, shots=1)
    config.task, config.dataset = "all-classes", "omniglot"
    config.data_dir = str(default_data_dir("omniglot"))  # $JMETA_DATA_DIR/omniglot, else ~/jmeta_data/omniglot
    config.batch_points = 16  # Chen et al.'s pre-training batch size
    config.num_classes = 4112  # 1028 training characters x 4 rotations (split "vinyals", rotate ("train",))
    config.queries, config.eval_queries = 16, 16
    config.downsample = "maxpool"
    config.inner_steps, config.eval_steps = 100, (100,)  # epochs of head fitting over the support set
    config.meta_batch, config.steps = 1, 20_000
    config.published, config.published_source = {}, ""
    return config
