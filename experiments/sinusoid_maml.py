"""MAML on sinusoid regression, as in Finn et al. 2017, sec. 5.1 and App. C (Table 2).

Run: jmeta train experiments/sinusoid_maml.py --workdir runs/sinusoid_maml [steps=1000 ...]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "sinusoid"
    config.learner = "maml"
    config.model = "mlp"
    config.hidden = (40, 40)  # MLP 1-40-40-1, ReLU
    config.outputs = 1
    config.init_std = 0.01  # truncated-normal weights, as MAML's reference code
    config.inner_lr = 0.01
    config.inner_steps = 1
    config.shots = 10  # K=10 during meta-training
    config.queries = 10
    config.meta_batch = 25
    config.meta_lr = 1e-3  # Adam
    config.steps = 70_000
    config.seed = 0
    config.batching = "auto"
    config.compute_dtype = "float32"  # or "bfloat16": the model's forward and backward passes
    config.log_every = 1000
    config.val_every = 10_000  # validation and checkpoint
    config.val_tasks = 1000  # selects the checkpoint to test: MSE over 100 tasks is too noisy for that
    config.val_metric = "loss"
    # Meta-test: K=5, MSE on 100 query points per task, after 1, 5 and 10 steps of SGD(inner_lr).
    config.eval_tasks = 600
    config.eval_shots = 5
    config.eval_queries = 100
    config.eval_steps = (0, 1, 5, 10)
    config.published = {"1": 0.67, "5": 0.38, "10": 0.35}
    config.published_source = "Finn et al. 2017, App. C, Table 2 (MAML, K=5)"
    return config
