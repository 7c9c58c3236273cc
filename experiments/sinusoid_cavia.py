"""CAVIA on sinusoid regression (Zintgraf et al. 2019, sec. 5.1): the MAML sinusoid setting with a context
vector appended to the input, adapted by one inner SGD step of 1.0 (the paper's context learning rate); the
network 1+4-40-40-1 is meta-learned. Everything else as experiments/sinusoid_maml.py, so the two compare at
the same budget and seed.

Run: jmeta train experiments/sinusoid_cavia.py --workdir runs/sinusoid_cavia [steps=...]
"""

from pathlib import Path

from jmeta.experiment import load_config


def get_config():
    config = load_config(Path(__file__).with_name("sinusoid_maml.py"))
    config.learner = "cavia"
    config.context_size = 4  # context parameters appended to the input
    config.inner_lr = 1.0
    config.published = {}
    config.published_source = "Zintgraf et al. 2019, Table 1 (sine regression): not quoted, see docs/results.md"
    return config
