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
from jmeta.evaluation import BATCH_NORM_MODES
from jmeta.learners import Learner
from jmeta.learners.base import LossFn
from jmeta.models import MLP, Conv4
from jmeta.nn import Model, from_linen, with_compute_dtype
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
    """Sets ``key=value`` on ``config``; the value is parsed as a Python literal, else kept as a string.

    ``key=None`` unsets a key of any type (e.g. ``data_dir=None``: the loader's default, TFDS for Omniglot);
    checks in :func:`build` reject it where a value is required."""
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
    if old is not None and value is not None and type(value) is not type(old):
        kind = type(old).__name__
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"config key {key!r} expects {article} {kind} (like {old!r}); got {value!r} in {override!r}.")
    config[key] = value


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Validates ``config`` and builds the experiment it describes (nothing is traced or compiled)."""
    check_config(config)
    family = TASK_FAMILIES[config.task](config)
    return Experiment(family, *build_learner(config, family))


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the key if ``config`` is not a valid experiment config.

    ``val_every=0`` turns validation off: the run then tests its last checkpoint."""
    for name in ("steps", "meta_batch", "eval_tasks", "log_every"):
        positive_int(name, config[name])
    if positive_int("val_every", config.val_every, allow_zero=True):
        positive_int("val_tasks", config.val_tasks)
    if config.val_every % config.log_every:
        raise ValueError(
            f"val_every ({config.val_every}) must be a multiple of log_every ({config.log_every}): validation "
            "and checkpoints happen between compiled blocks of log_every steps. (val_every=0: no validation.)"
        )
    if "eval_batch_norm" in config:
        one_of("eval_batch_norm", config.eval_batch_norm, BATCH_NORM_MODES)
    positive_float("meta_lr", config.meta_lr)
    one_of("task", config.task, tuple(TASK_FAMILIES))
    one_of("model", config.model, tuple(MODELS))
    one_of("learner", config.learner, tuple(LEARNERS))
    if config.learner != "protonet" and config.get("eval_ways", config.get("ways")) != config.get("ways"):
        raise ValueError(
            f"eval_ways ({config.eval_ways}) must equal ways ({config.ways}) for {config.learner}: its classifier "
            "head has one output per way. Only protonet tests with other ways than it trains with."
        )


def build_learner(config: ml_collections.ConfigDict, family: TaskFamily) -> LearnerBuild:
    """The model, learner and meta-optimiser of a checked ``config``; only ``family``'s loss, metrics and
    example input are used (see :func:`family_without_data`)."""
    # compute_dtype: the dtype of the model's passes (float32 or bfloat16); absent from older run configs.
    model = with_compute_dtype(MODELS[config.model](config, family), config.get("compute_dtype", "float32"))
    return LEARNERS[config.learner](config, model, family)


def family_without_data(config: ml_collections.ConfigDict, input_shape: Sequence[int]) -> TaskFamily:
    """``config``'s task family without samplers (``None``): its loss, metrics and an example input of
    ``input_shape``, enough to rebuild the learner of a trained run without loading any data set.

    Example::

        >>> family = family_without_data(load_config("experiments/sinusoid_maml.py"), (1,))  # doctest: +SKIP
        >>> family.example_input.shape                                                       # doctest: +SKIP
        (1, 1)
    """
    check_config(config)
    return TaskFamily(None, None, None, jnp.zeros((1, *input_shape)), *scoring(config.task))


def scoring(task: str) -> tuple[LossFn, dict[str, LossFn]]:
    """The loss and query metrics of a task: MSE for sinusoid regression, cross-entropy and accuracy for
    classification episodes."""
    if task == "sinusoid":
        return losses.mse, {}
    return losses.cross_entropy, {"accuracy": losses.accuracy}


def sinusoid_family(config: ml_collections.ConfigDict) -> TaskFamily:
    """Sinusoid regression (Finn et al. 2017, sec. 5.1); validation and test draw fresh functions."""
    train = SinusoidSampler(config.shots, config.queries)
    test = SinusoidSampler(config.eval_shots, config.eval_queries)
    return TaskFamily(train, test, test, jnp.zeros((1, 1)), *scoring("sinusoid"))


def episodic_family(config: ml_collections.ConfigDict) -> TaskFamily:
    """N-way K-shot classification episodes from a few-shot data set's train, val and test classes.

    ``config.task`` is any data set registered in :mod:`jmeta.data` (jmeta's own or one added with
    ``jmeta.data.register_dataset``); the loader gets ``config.data_dir`` ("" or None: the loader's
    default, e.g. TFDS) and :func:`data_options`. Meta-training episodes are augmented as
    ``config.augment`` says (:class:`jmeta.tasks.episodes.Augment`; "" none). Without val classes in the
    data, ``val_fraction`` carves them from the train classes; with ``val_every=0`` (no validation)
    ``sample_val`` is ``None``; otherwise a ValueError says both ways out.
    """
    from jmeta.data import load
    from jmeta.tasks.episodes import make_episode_sampler

    options = data_options(config)
    data = load(config.task, config.get("data_dir") or None, **options)
    split = f"split={options['split']!r}" if options.get("split") else "its default split"
    if "train" not in data.splits or "test" not in data.splits:
        raise ValueError(f"{config.task} ({split}) must have train and test splits; it has {sorted(data.splits)}.")
    if "val" not in data.splits and config.get("val_every", 1) != 0:
        raise ValueError(
            f"{config.task} ({split}) has no validation classes (splits {', '.join(data.splits)}). Set "
            "val_fraction=0.1 to carve them from the train classes (drawn with split_seed), or val_every=0 "
            "to validate nothing and keep the last checkpoint."
        )

    def sampler(part: str, keys: tuple[str, str, str], augment: str = ""):  # keys: the config's ways, shots, queries
        name = f"{config.task}'s {part} split ({split})"
        return make_episode_sampler(data[part], *(config[k] for k in keys), augment=augment, name=name, keys=keys)

    train = sampler("train", ("ways", "shots", "queries"), config.get("augment", ""))
    evaluation = ("eval_ways", "eval_shots", "eval_queries")
    val = sampler("val", evaluation) if "val" in data.splits and config.get("val_every", 1) else None
    test = sampler("test", evaluation)
    example = jnp.zeros((1, *data["train"].input_shape))
    return TaskFamily(train, val, test, example, *scoring(config.task))


def data_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The options ``config`` passes to its data set's loader: every option the loader takes that the config
    has under the same name and sets (not "" or None), the loader's ``seed`` (how classes are drawn into
    splits) from ``split_seed``, ``split`` when it names a split registered for the data set, and
    ``val_fraction`` when above 0 (carved with that ``seed``; with 0 for a loader that has no ``seed``).

    Example::

        >>> config = few_shot_config("omniglot", "maml", ways=5, shots=1)
        >>> config.split, config.val_fraction = "background", 0.1
        >>> data_options(config)
        {'split': 'background', 'rotate': ('train',), 'seed': 0, 'val_fraction': 0.1}
    """
    from jmeta.data.registry import entry, split_names

    renamed = {"seed": "split_seed"}
    options = {}
    for option in entry(config.task).options:
        value = config.get(renamed.get(option, option))
        if value is not None and value != "" and option != "val_fraction":
            options[option] = tuple(value) if isinstance(value, list) else value
    if config.get("split") and config.split in split_names(config.task):
        options["split"] = config.split  # a registered split, also for a loader without a split option
    if config.get("val_fraction"):
        options["val_fraction"] = config.val_fraction
    return options


def few_shot_config(task: str, learner: str, *, ways: int, shots: int) -> ml_collections.ConfigDict:
    """Defaults shared by the few-shot image configs in ``experiments/`` (each sets its paper's values).

    Example::

        >>> config = few_shot_config("omniglot", "maml", ways=5, shots=1)
        >>> config.val_metric
        'accuracy'
    """
    config = ml_collections.ConfigDict()
    config.task, config.learner, config.split = task, learner, "vinyals"
    config.data_dir = ""  # a folder holding the data set; "" or None = the loader's default (TFDS where it has one)
    config.val_fraction = 0.0  # > 0: validation classes carved from the train classes (for splits without val)
    config.split_seed = 0  # draws classes into splits (Omniglot's maml split, val_fraction, folder fractions)
    config.augment = ""  # meta-training episodes: "rot90", "cropP", "flip", joined by "+" ("" none)
    config.rotate = ("train",)  # Omniglot: splits whose characters also appear rotated, as new classes
    config.model, config.hidden, config.downsample, config.pool = "conv4", 64, "stride", "flatten"
    config.batch_norm = "batch statistics in every pass, also at test (transductive), as MAML's code"
    config.eval_batch_norm = "transductive"  # at test: transductive, support or running (jmeta.evaluate)
    config.ways, config.eval_ways, config.shots, config.queries = ways, ways, shots, shots
    config.eval_shots, config.eval_queries = shots, shots
    config.inner_lr, config.inner_steps, config.eval_steps = 0.4, 1, (3,)
    config.meta_batch, config.meta_lr, config.steps, config.seed = 32, 1e-3, 60_000, 0
    config.batching, config.compute_dtype = "auto", "float32"
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


class _TaskFamilies(dict):
    """Task families by name: the entries below, and every data set registered in :mod:`jmeta.data`
    (episodic), looked up when used, so that ``jmeta.data.register_dataset(name, ...)`` makes ``task=name``
    work in configs."""

    def __missing__(self, name: str) -> Callable[[ml_collections.ConfigDict], TaskFamily]:
        from jmeta.data import dataset_names

        if name in dataset_names():
            return episodic_family
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return name in tuple(self)

    def __iter__(self):
        from jmeta.data import dataset_names

        return iter(dict.fromkeys([*dict.__iter__(self), *dataset_names()]))


TASK_FAMILIES: dict[str, Callable[[ml_collections.ConfigDict], TaskFamily]] = _TaskFamilies(
    sinusoid=sinusoid_family
)
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
