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

from jmeta import learners, losses
from jmeta.learners import Learner
from jmeta.learners.base import LossFn
from jmeta.models import MLP, Conv4
from jmeta.nn import Model, from_linen
from jmeta.tasks import SinusoidSampler, Task
from jmeta.validation import one_of, positive_float, positive_int

Sampler = Callable[[jax.Array, int], Task]
REQUIRED_KEYS = ("steps", "seed", "meta_batch", "eval_tasks")
# Keys every config has unless it sets them: devices per process for `jmeta train`/`eval` (0 = all).
RUN_DEFAULTS = {"devices": 0}


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
    apply_run_defaults(config)
    for override in overrides:
        apply_override(config, override)
    return config


def apply_run_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the keys of ``RUN_DEFAULTS`` that ``config`` lacks (in place); returns ``config``."""
    for key, value in RUN_DEFAULTS.items():
        if key not in config:
            config[key] = value
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
    if config.learner != "protonet" and config.get("eval_ways", config.get("ways")) != config.get("ways"):
        raise ValueError(
            f"eval_ways ({config.eval_ways}) must equal ways ({config.ways}) for {config.learner}: its classifier "
            "head has one output per way. Only protonet tests with other ways than it trains with."
        )
    family = TASK_FAMILIES[config.task](config)
    model = MODELS[config.model](config, family)
    learner, meta_optimizer = LEARNERS[config.learner](config, model, family)
    return Experiment(family, learner, meta_optimizer)


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
    val = make_episode_sampler(data["val"], config.eval_ways, config.eval_shots, config.eval_queries)
    test = make_episode_sampler(data["test"], config.eval_ways, config.eval_shots, config.eval_queries)
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
    config.ways, config.eval_ways, config.shots, config.queries = ways, ways, shots, shots
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
    """Conv-4 with one output per way, or without a head (an embedding) for ProtoNets."""
    classes = None if config.learner == "protonet" else config.ways
    module = Conv4(num_classes=classes, hidden=config.hidden, downsample=config.downsample, pool=config.pool)
    return from_linen(module, family.example_input)


LearnerBuild = tuple[Learner, optax.GradientTransformation]


def maml_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """MAML and first-order MAML (``learner`` maml/fomaml), from ``inner_lr`` and ``inner_steps``."""
    first_order = config.learner == "fomaml"
    learner = learners.maml(
        model, family.loss, config.inner_lr, config.inner_steps, first_order=first_order, metrics=family.metrics
    )
    return learner, optax.adam(config.meta_lr)


def metasgd_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """Meta-SGD: per-parameter inner learning rates, initialised to ``inner_lr`` and meta-learned."""
    learner = learners.metasgd(model, family.loss, config.inner_lr, config.inner_steps, metrics=family.metrics)
    return learner, optax.adam(config.meta_lr)


def anil_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """ANIL: only the parameters under the top-level name ``head`` (``config.head``) adapt."""
    learner = learners.anil(
        model,
        family.loss,
        lambda path: path[0] == config.head,
        config.inner_lr,
        config.inner_steps,
        metrics=family.metrics,
    )
    return learner, optax.adam(config.meta_lr)


def reptile_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """Reptile: inner Adam (beta1 = 0) with ``inner_lr``; meta step ``meta_lr`` annealed linearly to 0."""
    learner = learners.reptile(
        model,
        family.loss,
        config.inner_lr,
        config.inner_steps,
        transductive=config.transductive,
        metrics=family.metrics,
    )
    return learner, learners.reptile_meta_optimizer(config.meta_lr, config.steps)


def protonet_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """Prototypical Networks; ``ways`` (training) may exceed ``eval_ways``."""
    ways = max(config.ways, config.eval_ways)
    return learners.protonet(model, ways, family.loss, metrics=family.metrics), optax.adam(config.meta_lr)


def imaml_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """iMAML: proximal inner loop (``lam``), implicit meta-gradient by ``cg_steps`` of conjugate gradient."""
    learner = learners.imaml(
        model,
        family.loss,
        config.inner_lr,
        config.inner_steps,
        lam=config.lam,
        cg_steps=config.cg_steps,
        metrics=family.metrics,
    )
    return learner, optax.adam(config.meta_lr)


def mamlpp_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """MAML++, each part from the config: ``msl_steps``, ``first_order_steps``, ``lslr``, ``bnwb``, ``bnrs``,
    ``cosine`` (cosine annealing of ``meta_lr`` over ``steps``)."""
    learner = learners.mamlpp(
        model,
        family.loss,
        config.inner_lr,
        config.inner_steps,
        msl_steps=config.msl_steps,
        first_order_steps=config.first_order_steps,
        lslr=config.lslr,
        bnwb=config.bnwb,
        bnrs=config.bnrs,
        metrics=family.metrics,
    )
    if config.cosine:
        return learner, learners.mamlpp_meta_optimizer(config.meta_lr, config.steps)
    return learner, optax.adam(config.meta_lr)


TASK_FAMILIES: dict[str, Callable[[ml_collections.ConfigDict], TaskFamily]] = {
    "sinusoid": sinusoid_family,
    **{
        name: episodic_family
        for name in ("omniglot", "mini-imagenet", "cifar-fs", "fc100", "mnist", "cifar10", "digits")
    },
}
MODELS: dict[str, Callable[[ml_collections.ConfigDict, TaskFamily], Model]] = {"mlp": mlp_model, "conv4": conv4_model}
LEARNERS: dict[str, Callable[[ml_collections.ConfigDict, Model, TaskFamily], LearnerBuild]] = {
    "maml": maml_learner,
    "fomaml": maml_learner,
    "mamlpp": mamlpp_learner,
    "metasgd": metasgd_learner,
    "anil": anil_learner,
    "reptile": reptile_learner,
    "protonet": protonet_learner,
    "imaml": imaml_learner,
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
