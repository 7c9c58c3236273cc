"""Turns an experiment config (``experiments/*.py``) into the pieces a run needs.

A config is a ``ml_collections.ConfigDict`` returned by ``get_config()`` in a Python file. Overrides
are ``key=value`` strings; unknown keys and wrongly typed values are errors.

Example::

    >>> config = load_config("experiments/sinusoid_maml.py", ["steps=100", "seed=3"])  # doctest: +SKIP
    >>> experiment = build(config)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax.numpy as jnp
import ml_collections
import optax

from jmeta import losses
from jmeta.learners import Learner, fomaml, maml
from jmeta.models import MLP
from jmeta.nn import from_linen
from jmeta.tasks import Task, sinusoid_tasks
from jmeta.validation import one_of, positive_float, positive_int

LEARNERS = {"maml": maml, "fomaml": fomaml}
TASKS = ("sinusoid",)


class Experiment(NamedTuple):
    """What a run is made of: the learner, the meta-optimiser and the task samplers."""

    learner: Learner
    meta_optimizer: optax.GradientTransformation
    sample_train: Callable[[Any, int], Task]
    sample_eval: Callable[[Any, int], Task]


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``get_config()`` from a config file and applies ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist; configs live in experiments/.")
    spec = importlib.util.spec_from_file_location(f"jmeta_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"config file {str(path)!r} could not be read: {error!r}") from error
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {str(path)!r} must define get_config() returning a ConfigDict.")
    config = module.get_config()
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Sets ``key=value`` on ``config``; the value is parsed as a Python literal, else kept as a string."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ValueError(f"overrides must look like key=value (e.g. steps=1000); got {override!r}.")
    if key not in config:
        raise ValueError(
            f"unknown config key {key!r} in override {override!r}; known keys: {', '.join(sorted(config))}."
        )
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    old = config[key]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    if old is not None and type(value) is not type(old):
        raise ValueError(
            f"config key {key!r} expects a {type(old).__name__} (like {old!r}); got {value!r} in {override!r}."
        )
    config[key] = value


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Validates ``config`` and builds the experiment it describes (nothing is traced or compiled)."""
    one_of("task", config.task, TASKS)
    one_of("learner", config.learner, tuple(LEARNERS))
    for name in (
        "steps",
        "meta_batch",
        "inner_steps",
        "shots",
        "queries",
        "eval_tasks",
        "eval_shots",
        "eval_queries",
        "log_every",
    ):
        positive_int(name, config[name])
    positive_float("meta_lr", config.meta_lr)
    model = from_linen(MLP((*config.hidden, 1)), jnp.zeros((1, 1)))
    learner = LEARNERS[config.learner](model, losses.mse, inner_lr=config.inner_lr, steps=config.inner_steps)
    return Experiment(
        learner=learner,
        meta_optimizer=optax.adam(config.meta_lr),
        sample_train=functools.partial(sinusoid_tasks, shots=config.shots, queries=config.queries),
        sample_eval=functools.partial(sinusoid_tasks, shots=config.eval_shots, queries=config.eval_queries),
    )
