"""jmeta: meta-learning in JAX, as pure functions.

Example::

    >>> import jax, jax.numpy as jnp, optax, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01, steps=1)
    >>> trainer = jmeta.meta_trainer(learner, optax.adam(1e-3))
    >>> state = trainer.init(jax.random.key(0))
"""

from jmeta import batching, experiment, losses, models, parallel, pretraining, tasks
from jmeta.data.registry import register_dataset, register_split
from jmeta.evaluation import Estimate, estimate, evaluate
from jmeta.learners import Learner, TaskOutput, fomaml, maml
from jmeta.meta_trainer import MetaTrainer, TrainState, meta_trainer
from jmeta.nn import Model, from_linen, from_nnx
from jmeta.registry import register_learner, register_model, register_program, register_task_family
from jmeta.tasks import Task, sampler

__version__ = "0.1.0"


def __getattr__(name: str):  # the runs layer is imported on first use, never by the core
    if name == "Run":
        from jmeta import runs

        return runs.Run
    if name == "load_run":  # a single run's, or a population member's (member=K)
        from jmeta import population

        return population.load_run
    raise AttributeError(f"module 'jmeta' has no attribute {name!r}")


__all__ = [
    "Estimate",
    "Learner",
    "MetaTrainer",
    "Model",
    "Run",
    "Task",
    "TaskOutput",
    "TrainState",
    "batching",
    "estimate",
    "evaluate",
    "experiment",
    "fomaml",
    "from_linen",
    "from_nnx",
    "load_run",
    "losses",
    "maml",
    "meta_trainer",
    "models",
    "parallel",
    "pretraining",
    "register_dataset",
    "register_learner",
    "register_model",
    "register_program",
    "register_split",
    "register_task_family",
    "sampler",
    "tasks",
]
