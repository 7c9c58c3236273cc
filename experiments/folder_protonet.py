"""Prototypical Networks (Snell et al. 2017) on a folder of your own images: one sub-folder per class, or
group/class sub-folders (see docs/your-own-data.md). 5-way 1-shot with 5 queries per class, Conv-4 embedding
(64 filters, 2x2 max-pool per block), Adam 1e-3, 4 episodes per step. These settings are ours, a starting
point: nothing is published for your data.

Images are converted to `channels` (1 grey, 3 RGB) and resized to `image_size`; classes are split by
`fractions` (train, val, test) drawn with `split_seed`, or by `split_file` (a CSV 'class,split'). Every class
needs at least shots + queries images (6 here). `augment` (e.g. "crop4+flip") augments training episodes.

Run: jmeta train experiments/folder_protonet.py --workdir runs/my_protonet data_dir=PATH
See the data first: jmeta data folder --data-dir PATH
"""

from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("folder", "protonet", ways=5, shots=1)
    config.data_dir = ""  # required: data_dir=PATH
    config.split, config.split_file = "", ""
    config.image_size, config.channels, config.fractions = 28, 1, (0.7, 0.15, 0.15)
    config.queries, config.eval_queries = 5, 5
    config.downsample = "maxpool"
    config.eval_steps = (0,)  # prototypes, no gradient steps
    config.meta_batch, config.steps = 4, 10_000
    return config
