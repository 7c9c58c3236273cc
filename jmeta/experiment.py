"""Turns an experiment config (``experiments/*.py``) into the pieces a run needs.

A config is a ``ml_collections.ConfigDict`` returned by ``get_config()`` in a Python file. Overrides
are ``key=value`` strings; unknown keys and wrongly typed values are errors. ``build(config)`` validates
the config and assembles the task family, the model and the learner; nothing is traced or compiled.

Example::

    >>> config = load_config("experiments/sinusoid_maml.py", ["steps=100", "seed=3"])  # doctest: +SKIP
    >>> experiment = build(config)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jmeta import losses
from jmeta.learners import Learner, fomaml, maml
from jmeta.learners.base import LossFn
from jmeta.models import MLP, Conv4
from jmeta.nn import Model, from_linen
from jmeta.tasks import SinusoidSampler, Task
from jmeta.validation import one_of, positive_float, positive_int

Sampler = Callable[[jax.Array, int], Task]
REQUIRED_KEYS = ("steps", "seed", "meta_batch", "eval_tasks")


class TaskFamily(NamedTuple):
    """Where tasks come from: samplers for meta-training, validation and test, and how they are scored.

    A sampler is a pytree callable ``sampler(key, num_tasks) -> Task`` (e.g. ``SinusoidSampler``,
    ``jmeta.tasks.episodes.EpisodeSampler``); it is passed into jitted functions as an argument, so a
    data set on the device is never baked into a compiled program."""

    sample_train: Sampler
    sample_val: Sampler
    sample_test: Sampler
    example_input: jax.Array
    loss: LossFn
    metrics: Mapping[str, LossFn]


class Experiment(NamedTuple):
    """What a run is made of."""

    family: TaskFamily
    learner: Learner
    meta_optimizer: optax.GradientTransformation


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
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"config file {str(path)!r} lacks the keys {missing}; every config must have {REQUIRED_KEYS}.")
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
    if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
        value = type(old)(value)
    if old is not None and type(value) is not type(old):
        raise ValueError(
            f"config key {key!r} expects a {type(old).__name__} (like {old!r}); got {value!r} in {override!r}."
        )
    config[key] = value


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Validates ``config`` and builds the experiment it describes (nothing is traced or compiled)."""
    for name in ("steps", "meta_batch", "eval_tasks", "log_every", "val_every", "val_tasks"):
        positive_int(name, config[name])
    if config.val_every % config.log_every:
        raise ValueError(
            f"val_every ({config.val_every}) must be a multiple of log_every ({config.log_every}): validation "
            "and checkpoints happen between compiled blocks of log_every steps."
        )
    positive_float("meta_lr", config.meta_lr)
    one_of("task", config.task, tuple(TASK_FAMILIES))
    one_of("model", config.model, tuple(MODELS))
    one_of("learner", config.learner, tuple(LEARNERS))
    family = TASK_FAMILIES[config.task](config)
    model = MODELS[config.model](config, family)
    learner = LEARNERS[config.learner](config, model, family)
    return Experiment(family, learner, optax.adam(config.meta_lr))


def sinusoid_family(config: ml_collections.ConfigDict) -> TaskFamily:
    """Sinusoid regression (Finn et al. 2017, sec. 5.1); validation and test draw fresh functions."""
    train = SinusoidSampler(config.shots, config.queries)
    test = SinusoidSampler(config.eval_shots, config.eval_queries)
    return TaskFamily(train, test, test, jnp.zeros((1, 1)), losses.mse, {})


def episodic_family(config: ml_collections.ConfigDict) -> TaskFamily:
    """N-way K-shot classification episodes from a few-shot data set's train, val and test classes."""
    from jmeta.data import load
    from jmeta.tasks.episodes import make_episode_sampler

    options = {"split": config.split} if config.get("split") else {}
    data = load(config.task, config.data_dir or None, **options)
    if "val" not in data.splits:
        raise ValueError(
            f"{config.task} split {config.get('split')!r} has no validation classes ({sorted(data.splits)}); "
            "choose a split with one (for Omniglot: split=vinyals or split=maml)."
        )
    train = make_episode_sampler(data["train"], config.ways, config.shots, config.queries)
    val = make_episode_sampler(data["val"], config.ways, config.eval_shots, config.eval_queries)
    test = make_episode_sampler(data["test"], config.ways, config.eval_shots, config.eval_queries)
    example = jnp.zeros((1, *data["train"].input_shape))
    return TaskFamily(train, val, test, example, losses.cross_entropy, {"accuracy": losses.accuracy})


def few_shot_config(task: str, learner: str, *, ways: int, shots: int) -> ml_collections.ConfigDict:
    """Defaults shared by the few-shot image configs in ``experiments/`` (each sets its paper's values).

    Example::

        >>> config = few_shot_config("omniglot", "maml", ways=5, shots=1)
        >>> config.val_metric
        'accuracy'
    """
    config = ml_collections.ConfigDict()
    config.task, config.learner, config.split = task, learner, "vinyals"
    config.data_dir = ""  # a folder holding the data set; "" = TFDS where the data set has a TFDS builder
    config.model, config.hidden, config.downsample, config.pool = "conv4", 64, "stride", "flatten"
    config.batch_norm = "batch statistics in every pass, also at test (transductive), as MAML's code"
    config.ways, config.shots, config.queries = ways, shots, shots
    config.eval_shots, config.eval_queries = shots, shots
    config.inner_lr, config.inner_steps, config.eval_steps = 0.4, 1, (3,)
    config.meta_batch, config.meta_lr, config.steps, config.seed = 32, 1e-3, 60_000, 0
    config.batching = "auto"
    config.log_every, config.val_every, config.val_tasks, config.val_metric = 100, 1000, 100, "accuracy"
    config.eval_tasks = 600
    config.published, config.published_source = {}, ""
    return config


def mlp_model(config: ml_collections.ConfigDict, family: TaskFamily) -> Model:
    return from_linen(MLP((*config.hidden, config.outputs), init_std=config.get("init_std")), family.example_input)


def conv4_model(config: ml_collections.ConfigDict, family: TaskFamily) -> Model:
    module = Conv4(num_classes=config.ways, hidden=config.hidden, downsample=config.downsample, pool=config.pool)
    return from_linen(module, family.example_input)


def gradient_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> Learner:
    """MAML and first-order MAML, from ``inner_lr`` and ``inner_steps``."""
    build_learner = {"maml": maml, "fomaml": fomaml}[config.learner]
    return build_learner(model, family.loss, inner_lr=config.inner_lr, steps=config.inner_steps, metrics=family.metrics)


TASK_FAMILIES: dict[str, Callable[[ml_collections.ConfigDict], TaskFamily]] = {
    "sinusoid": sinusoid_family,
    **{
        name: episodic_family
        for name in ("omniglot", "mini-imagenet", "cifar-fs", "fc100", "mnist", "cifar10", "digits")
    },
}
MODELS: dict[str, Callable[[ml_collections.ConfigDict, TaskFamily], Model]] = {"mlp": mlp_model, "conv4": conv4_model}
LEARNERS: dict[str, Callable[[ml_collections.ConfigDict, Model, TaskFamily], Learner]] = {
    "maml": gradient_learner,
    "fomaml": gradient_learner,
}


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON-able values (saved with a run, compared on resume)."""
    return json_safe(config.to_dict())


def json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
