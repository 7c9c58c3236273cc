"""Turns an experiment config (``experiments/*.py``) into the pieces a run needs.

A config is a ``ml_collections.ConfigDict`` returned by ``get_config()`` in a Python file. It names a task
family (``task``), a model and a learner, each registered in :mod:`jmeta.registry` (jmeta's own below, a
user's with ``jmeta.register_learner`` and its kin, in a module the config lists in ``imports``). Overrides
are ``key=value`` strings. :func:`check_config` checks the whole config against what the chosen components
declare (missing keys, unknown keys with the nearest known names, keys nothing reads, values) before anything
is written; :func:`build` then assembles the task family, the model and the learner; nothing is traced or
compiled.

Example::

    >>> config = load_config("experiments/sinusoid_maml.py", ["steps=100", "seed=3"])  # doctest: +SKIP
    >>> experiment = build(config)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import numbers
import sys
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
from jmeta.learners.base import LossFn, check_task_metrics
from jmeta.models import MLP, Conv4
from jmeta.nn import Model, check_model_outputs, from_linen, with_compute_dtype
from jmeta.registry import (
    LEARNERS,
    MODELS,
    TASK_FAMILIES,
    Component,
    nearest,
    register_learner,
    register_model,
    register_task_family,
    snapshot,
)
from jmeta.tasks import SinusoidSampler, Task, check_sampler
from jmeta.validation import one_of, positive_float, positive_int

Sampler = Callable[[jax.Array, int], Task]
ABSENT = object()  # an optional key that is not filled in when a config lacks it
# The keys of every meta-learner run (beside the keys its task family, model and learner declare); a value
# ABSENT is optional and left out when missing, any other value is optional with that default.
RUN_KEYS: dict[str, Any] = {
    "task": None,
    "model": None,
    "learner": None,
    "steps": None,
    "seed": None,
    "meta_batch": None,
    "meta_lr": None,
    "log_every": None,
    "val_every": None,
    "val_tasks": None,
    "val_metric": None,
    "eval_tasks": None,
    "eval_steps": None,
    "published": None,  # {inner steps: the paper's figure} for the config's own test protocol
    "published_source": None,  # where `published` comes from (paper, table, row)
    "devices": 0,  # devices per process for `jmeta train`/`eval` (0 = all)
    "batching": "auto",  # how the task axis is batched (jmeta.batching)
    "compute_dtype": "float32",  # the dtype of the model's passes (float32 or bfloat16)
    "imports": (),  # modules (or .py files) that register the config's own components
    "keep_checkpoints": 2,  # latest checkpoints kept (jmeta.checkpoint); 0 keeps every one (jmeta.compute curves)
    "schedule_steps": 0,  # the horizon of a learner's meta-optimiser schedule; 0: `steps` when the run starts
    "eval_batch_norm": ABSENT,  # test-time BatchNorm mode (jmeta.evaluate's batch_norm)
    "batch_norm": ABSENT,  # a description of how the model's BatchNorm is used, stated in the protocol
    "seeds": ABSENT,  # a population (jmeta.population): this many seeds of every setting, seed + 0..seeds-1
    "sweep": ABSENT,  # a population: {key: (values, ...)}, crossed with seeds; traced in one compiled program
}
POPULATION_KEYS = ("seeds", "sweep")
REQUIRED_RUN_KEYS = tuple(key for key, default in RUN_KEYS.items() if default is None)
# Keys of a config with `program` (a source system): programs check their other keys themselves.
PROGRAM_KEYS = ("steps", "seed", "meta_batch", "eval_tasks")
# Keys every config has unless it sets them.
RUN_DEFAULTS = {"devices": RUN_KEYS["devices"]}


class TaskFamily(NamedTuple):
    """Where tasks come from: samplers for meta-training, validation and test, an example input, and how
    tasks are scored (filled in from the task family's registered ``loss`` and ``metrics``).

    A sampler is a pytree callable ``sampler(key, num_tasks) -> Task`` (e.g. ``SinusoidSampler``,
    ``jmeta.tasks.episodes.EpisodeSampler``, or a plain function wrapped by :func:`jmeta.tasks.sampler`); it
    is passed into jitted functions as an argument, so a data set on the device is never baked into a
    compiled program. ``sample_val`` may be ``None`` when the run does not validate (``val_every=0``)."""

    sample_train: Sampler | None
    sample_val: Sampler | None
    sample_test: Sampler | None
    example_input: jax.Array
    loss: LossFn | None = None
    metrics: Mapping[str, LossFn] | None = None


class Experiment(NamedTuple):
    """What a run is made of."""

    family: TaskFamily
    learner: Learner
    meta_optimizer: optax.GradientTransformation


class Components(NamedTuple):
    """The registered task family, model and learner a config names."""

    task: Component
    model: Component
    learner: Component


def load_config(
    path: str | Path, overrides: Sequence[str] = (), imports: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """Loads ``get_config()`` from a config file, imports the modules that register its components
    (``config.imports``, then ``imports``, e.g. from ``jmeta train --import``), fills in the optional keys
    its components declare, and applies ``key=value`` overrides.

    A config file that registers components itself is added to ``imports`` (as its absolute path), so that
    ``jmeta eval``, ``plot``, ``predict`` and ``jmeta.load_run`` register them again in a fresh process.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist; configs live in experiments/.")
    before = snapshot()
    module = _exec_file(path, "config file")
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {str(path)!r} must define get_config() returning a ConfigDict.")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(
            f"get_config() of {str(path)!r} must return an ml_collections.ConfigDict; got {type(config).__name__}."
        )
    registered_here = snapshot() != before
    extra = [str(path.resolve())] if registered_here else []
    extra += [str(Path(name).resolve()) if name.endswith(".py") else name for name in imports]
    if extra:
        config.imports = tuple(dict.fromkeys([*config.get("imports", ()), *extra]))
    import_components(config)
    if config.get("imports"):
        config.imports = tuple(_as_found(name) for name in config.imports)
    required = PROGRAM_KEYS if config.get("program") else ("task", "model", "learner")
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"config file {str(path)!r} lacks the keys {missing}; every config must have {required}.")
    apply_run_defaults(config)
    for override in overrides:
        apply_override(config, override)
    return config


def import_components(config: ml_collections.ConfigDict) -> None:
    """Imports each of ``config.imports``: a module name (``my_lab.cavia``, found on ``sys.path`` or in the
    current folder) or a ``.py`` file, so that the components it registers exist. Raises ImportError naming
    the entry and the key when one cannot be imported."""
    imports = config.get("imports", ())
    if isinstance(imports, str) or not isinstance(imports, (tuple, list)):
        raise TypeError(f"config key 'imports' must be a tuple of module names or .py files; got {imports!r}.")
    for name in imports:
        if not isinstance(name, str) or not name:
            raise TypeError(f"config key 'imports' must hold module names or .py file paths; got {name!r}.")
        if name.endswith(".py"):
            _exec_file(Path(name), "config key 'imports' names")
            continue
        if name in sys.modules:
            continue
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.append(str(Path.cwd()))
        try:
            importlib.import_module(name)
        except Exception as error:
            raise ImportError(
                f"config key 'imports' names the module {name!r}, which could not be imported: {error!r}. Put its "
                "folder on PYTHONPATH (or run from it), or give the path of its .py file."
            ) from error


def _as_found(name: str) -> str:
    """``name`` as a reader can find it again: a module that is a file in the current folder becomes that
    file's absolute path, so that the run can be read from any folder."""
    if name.endswith(".py"):
        return name
    origin = getattr(sys.modules.get(name), "__file__", None) or ""
    found = Path(origin).resolve() if origin else None
    if found and found.parent == Path.cwd().resolve() and found.name == f"{name}.py":
        return str(found)
    return name


_EXECUTED: dict[Path, Any] = {}


def _exec_file(path: Path, what: str) -> Any:
    """Runs a Python file once per process (as module ``jmeta_config_<stem>``) and returns the module."""
    path = path.resolve()
    if path in _EXECUTED:
        return _EXECUTED[path]
    if not path.is_file():
        raise ImportError(f"{what} the file {str(path)!r}, which does not exist.")
    spec = importlib.util.spec_from_file_location(f"jmeta_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise ValueError(f"{what} {str(path)!r}, which could not be run: {error!r}") from error
    _EXECUTED[path] = module
    return module


def apply_run_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the optional keys ``config`` lacks (in place): the run's (:data:`RUN_KEYS`) and, for a
    meta-learner config, those its registered components declare with a default. Returns ``config``."""
    for key, value in RUN_DEFAULTS.items():
        if key not in config:
            config[key] = value
    if config.get("program") or not all(isinstance(config.get(key), str) for key in ("task", "model", "learner")):
        return config
    defaults = {key: value for key, value in RUN_KEYS.items() if value is not None and value is not ABSENT}
    try:
        for component in components(config):
            defaults.update(_declared(component, "optional_keys", config))
    except ValueError:
        pass  # an unknown name: check_config says so
    with config.unlocked():
        for key, value in defaults.items():
            if key not in config and value is not ABSENT:
                config[key] = value
    return config


def is_population(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config`` describes a population (sets ``seeds`` or ``sweep``): many runs trained as one program
    by ``jmeta.population.train_population``, not by ``jmeta.train.train_and_evaluate``."""
    return any(config.get(key) is not None for key in POPULATION_KEYS)


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Sets ``key=value`` on ``config``; the value is parsed as a Python literal, else kept as a string.

    ``key=None`` unsets a key of any type (e.g. ``data_dir=None``: the loader's default, TFDS for Omniglot);
    checks in :func:`build` reject it where a value is required."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ValueError(f"overrides must look like key=value (e.g. steps=1000); got {override!r}.")
    if key not in config and key not in POPULATION_KEYS:  # a population's keys are absent from a single run
        elsewhere = _components_reading(key)
        known = sorted({*config, *POPULATION_KEYS})
        why = f" (read by {', '.join(elsewhere)}, not by this config's)" if elsewhere else nearest(key, known)
        raise ValueError(f"unknown config key {key!r} in override {override!r}{why}; known keys: {', '.join(known)}.")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    old = config.get(key)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
        value = type(old)(value)
    if isinstance(old, ml_collections.ConfigDict) and isinstance(value, dict):
        old = old.to_dict()
    if old is not None and value is not None and type(value) is not type(old):
        kind = type(old).__name__
        article = "an" if kind[0] in "aeiou" else "a"
        raise ValueError(f"config key {key!r} expects {article} {kind} (like {old!r}); got {value!r} in {override!r}.")
    with config.unlocked():
        if key in config and (value is None or isinstance(value, dict)):
            del config[key]  # a ConfigDict field keeps its first type; a new one takes the new value's
        config[key] = value


def family_component(name: Any) -> Component:
    """The registered task family ``name``, or the episodic family for a registered data set ``name``."""
    from jmeta.data import dataset_names

    if name in TASK_FAMILIES:
        return TASK_FAMILIES[name]
    if isinstance(name, str) and name in dataset_names():
        return Component("task family", name, episodic_family, EPISODIC.properties)
    known = [*TASK_FAMILIES, *dataset_names()]
    raise ValueError(
        f"task must be one of {', '.join(map(repr, known))} (a task family registered with "
        f"jmeta.register_task_family, or a data set registered with jmeta.register_dataset); got {name!r}"
        f"{nearest(name, known) if isinstance(name, str) else ''}."
    )


def components(config: ml_collections.ConfigDict) -> Components:
    """The task family, model and learner ``config`` names; ValueError naming the key for an unknown name."""
    task = family_component(config.task)
    model = MODELS[config.model] if config.model in MODELS else None
    learner = LEARNERS[config.learner] if config.learner in LEARNERS else None
    if model is None:
        raise ValueError(MODELS.unknown(config.model, "model"))
    if learner is None:
        raise ValueError(LEARNERS.unknown(config.learner, "learner"))
    return Components(task, model, learner)


def _declared(component: Component, name: str, config: ml_collections.ConfigDict) -> Any:
    """A component's ``keys`` or ``optional_keys``: as declared, or computed from the config."""
    value = component.properties[name]
    value = value(config) if callable(value) else value
    return dict(value) if name == "optional_keys" else tuple(value)


def build(config: ml_collections.ConfigDict) -> Experiment:
    """Validates ``config`` and builds the experiment it describes (nothing is compiled; the model and the
    learner's ``task_loss`` are traced abstractly, ``jax.eval_shape``, to check what they return)."""
    parts = check_config(config)
    family = parts.task.builder(config)
    if not isinstance(family, TaskFamily):
        raise TypeError(
            f"the builder of task family {config.task!r} must return a jmeta.experiment.TaskFamily; got "
            f"{type(family).__name__}."
        )
    for field in ("sample_train", "sample_val", "sample_test"):
        sampler = getattr(family, field)
        if sampler is not None:
            check_sampler(sampler, f"task family {config.task!r}'s {field}")
    family = family._replace(loss=parts.task.properties["loss"], metrics=dict(parts.task.properties["metrics"]))
    learner, meta_optimizer = build_learner(config, family, parts)
    sampler = family.sample_train or family.sample_test
    check_task_metrics(learner, sampler, {config.val_metric: "val_metric"}, f"learner {config.learner!r}")
    return Experiment(family, learner, meta_optimizer)


def check_config(config: ml_collections.ConfigDict) -> Components:
    """Checks ``config`` against its components (every problem in one ValueError naming the keys) and
    returns them: required keys present, no key that nothing reads (with the nearest known names, or the
    component that would read it), and the run keys' values. ``val_every=0`` turns validation off: the run
    then tests its last checkpoint."""
    parts = components(config)
    known = dict.fromkeys(RUN_KEYS)
    required = list(REQUIRED_RUN_KEYS)
    for component in parts:
        known.update(dict.fromkeys(_declared(component, "keys", config)))
        known.update(_declared(component, "optional_keys", config))
        required += _declared(component, "keys", config)
    problems = [
        f"missing key {key!r} (read by {_reader(key, parts, config)})"
        for key in dict.fromkeys(required)
        if key not in config
    ]
    for key in config:
        if key not in known:
            elsewhere = _components_reading(key)
            if elsewhere:
                problems.append(
                    f"key {key!r} is read by {', '.join(elsewhere)} but not by this config's learner "
                    f"{config.learner!r}, model {config.model!r} or task {config.task!r}: remove it"
                )
            else:
                problems.append(f"unknown key {key!r}{nearest(key, known)}")
    if problems:
        raise ValueError(f"the config does not fit its components: {'; '.join(problems)}.")
    _check_values(config, parts)
    return parts


def _reader(key: str, parts: Components, config: ml_collections.ConfigDict) -> str:
    for component in parts:
        if key in _declared(component, "keys", config):
            return f"{component.kind} {component.name!r}"
    return "every meta-learner run"


def _components_reading(key: str) -> list[str]:
    """The registered components (other than data sets) that declare ``key`` as a constant (the first three,
    then ``"..."`` if there are more)."""
    found = []
    for registry in (LEARNERS, MODELS, TASK_FAMILIES):
        for name, component in registry.items():
            declared = [component.properties.get(p) for p in ("keys", "optional_keys")]
            if any(not callable(d) and key in (d or ()) for d in declared):
                found.append(f"{component.kind} {name!r}")
    return found[:3] + (["..."] if len(found) > 3 else [])


def _check_values(config: ml_collections.ConfigDict, parts: Components) -> None:
    for name in ("steps", "meta_batch", "eval_tasks", "log_every"):
        positive_int(name, config[name])
    positive_int("seed", config.seed, allow_zero=True)
    positive_int("schedule_steps", config.get("schedule_steps", 0), allow_zero=True)
    positive_int("devices", config.get("devices", 0), allow_zero=True)
    if positive_int("val_every", config.val_every, allow_zero=True):
        positive_int("val_tasks", config.val_tasks)
    if config.val_every % config.log_every:
        raise ValueError(
            f"val_every ({config.val_every}) must be a multiple of log_every ({config.log_every}): validation "
            "and checkpoints happen between compiled blocks of log_every steps. (val_every=0: no validation.)"
        )
    if not isinstance(config.eval_steps, (tuple, list)) or not config.eval_steps:
        raise ValueError(
            f"eval_steps must be a non-empty tuple of inner-step counts, e.g. (1, 5); got {config.eval_steps!r}."
        )
    for steps in config.eval_steps:
        positive_int("eval_steps", steps, allow_zero=True)
    if "eval_batch_norm" in config:
        one_of("eval_batch_norm", config.eval_batch_norm, BATCH_NORM_MODES)
    positive_int("keep_checkpoints", config.get("keep_checkpoints", 2), allow_zero=True)
    one_of("compute_dtype", config.get("compute_dtype", "float32"), ("float32", "bfloat16"))
    positive_float("meta_lr", config.meta_lr)
    one_of("val_metric", config.val_metric, ("loss", *parts.task.properties["metrics"]))
    if not isinstance(config.published, (Mapping, ml_collections.ConfigDict)):
        raise ValueError(f"published must be a dict {{inner steps: figure}} ({{}} for none); got {config.published!r}.")
    ways, eval_ways = config.get("ways"), config.get("eval_ways", config.get("ways"))
    if not parts.learner.properties["any_ways"] and eval_ways != ways:
        raise ValueError(
            f"eval_ways ({eval_ways}) must equal ways ({ways}) for learner {config.learner!r}: its classifier head "
            "has one output per way. Learners that declare any_ways=True (e.g. protonet) test with other ways."
        )


def build_learner(
    config: ml_collections.ConfigDict, family: TaskFamily, parts: Components | None = None
) -> LearnerBuild:
    """The model, learner and meta-optimiser of a checked ``config``; only ``family``'s loss, metrics and
    example input are used (see :func:`family_without_data`). The model gets no classifier head when the
    learner declares ``embedding=True``, else the outputs its task family declares, for the input the learner
    declares (``model_input``) or the task family's example input."""
    parts = parts or components(config)
    outputs = None if parts.learner.properties["embedding"] else parts.task.properties["outputs"](config)
    model_input = parts.learner.properties["model_input"]
    example = family.example_input if model_input is None else model_input(config, family.example_input)
    why = (
        f"learner {config.learner!r} declares embedding=True: return the embedding, without a head"
        if outputs is None
        else f"the outputs task family {config.task!r} declares"
    )
    model = parts.model.builder(config, example, outputs)
    check_model_outputs(model, example, outputs, f"model {config.model!r} built with outputs={outputs} ({why})")
    model = with_compute_dtype(model, config.get("compute_dtype", "float32"))
    return parts.learner.builder(config, model, family)


def family_without_data(config: ml_collections.ConfigDict, input_shape: Sequence[int]) -> TaskFamily:
    """``config``'s task family without samplers (``None``): its loss, metrics and an example input of
    ``input_shape``, enough to rebuild the learner of a trained run without loading any data set.

    Example::

        >>> family = family_without_data(load_config("experiments/sinusoid_maml.py"), (1,))  # doctest: +SKIP
        >>> family.example_input.shape                                                       # doctest: +SKIP
        (1, 1)
    """
    properties = check_config(config).task.properties
    return TaskFamily(None, None, None, jnp.zeros((1, *input_shape)), properties["loss"], dict(properties["metrics"]))


def schedule_horizon(config: ml_collections.ConfigDict) -> int:
    """The number of meta-steps a learner's meta-optimiser schedule spans: ``schedule_steps``, or ``steps``
    when it is 0 (``jmeta train`` fixes it when a run starts and records it, so extending a run with a
    larger ``steps`` keeps the schedule)."""
    return config.get("schedule_steps", 0) or config.steps


# ---- jmeta's own task families, models and learners, registered as a user's would be ----

CLASSIFICATION = {"loss": losses.cross_entropy, "metrics": {"accuracy": losses.accuracy}, "labels": "classes"}
EPISODE_KEYS = ("ways", "eval_ways", "shots", "queries", "eval_shots", "eval_queries")
EPISODE_OPTIONAL = {"data_dir": "", "split": "", "split_seed": 0, "val_fraction": 0.0, "augment": ""}


def sinusoid_family(config: ml_collections.ConfigDict) -> TaskFamily:
    """Sinusoid regression (Finn et al. 2017, sec. 5.1); validation and test draw fresh functions."""
    train = SinusoidSampler(config.shots, config.queries)
    test = SinusoidSampler(config.eval_shots, config.eval_queries)
    return TaskFamily(train, test, test, jnp.zeros((1, 1)))


def _sinusoid_figure(learner: Learner, params: Any, model_state: Any, key: jax.Array, config: Any, path: Path) -> None:
    from jmeta.plotting import plot_sinusoid_adaptation

    plot_sinusoid_adaptation(learner, params, model_state, key, shots=config.eval_shots, steps=(0, 1, 10), path=path)


register_task_family(
    "sinusoid",
    sinusoid_family,
    keys=("shots", "queries", "eval_shots", "eval_queries", "outputs"),
    loss=losses.mse,
    labels="values",
    outputs=lambda config: config.outputs,
    figure=_sinusoid_figure,
)


def episode_optional_keys(dataset: str) -> dict[str, Any]:
    """The optional keys of episodes from the registered data set ``dataset``: the data options, and every
    option of the data set's loader (its ``seed`` as ``split_seed``)."""
    from jmeta.data.registry import entry

    renamed = {"seed": "split_seed"}
    loader = {renamed.get(option, option): ABSENT for option in entry(dataset).options if option != "val_fraction"}
    return {**loader, **EPISODE_OPTIONAL}


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
    return TaskFamily(train, val, test, jnp.zeros((1, *data["train"].input_shape)))


# Not registered under a name of its own: every registered data set is an episodic task family.
EPISODIC = Component(
    "task family",
    "episodes",
    episodic_family,
    {
        **TASK_FAMILIES.schema,
        **CLASSIFICATION,
        "keys": EPISODE_KEYS,
        "optional_keys": lambda config: episode_optional_keys(config.task),
        "outputs": lambda config: config.ways,
    },
)


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


# Inner-loop keys set by few_shot_config for the learners that declare them.
INNER_DEFAULTS = {"inner_lr": 0.4, "inner_steps": 1}


def few_shot_config(task: str, learner: str, *, ways: int, shots: int) -> ml_collections.ConfigDict:
    """Defaults shared by the few-shot image configs in ``experiments/`` (each sets its paper's values and
    the keys of its learner beyond ``inner_lr`` and ``inner_steps``, which are set where the learner
    declares them). ``task`` must be a registered data set, ``learner`` a registered learner.

    Example::

        >>> config = few_shot_config("omniglot", "maml", ways=5, shots=1)
        >>> config.val_metric, config.inner_lr
        ('accuracy', 0.4)
        >>> "inner_lr" in few_shot_config("omniglot", "protonet", ways=5, shots=1)
        False
    """
    from jmeta.data.registry import entry

    config = ml_collections.ConfigDict()
    config.task, config.learner, config.split = task, learner, "vinyals"
    config.data_dir = ""  # a folder holding the data set; "" or None = the loader's default (TFDS where it has one)
    config.val_fraction = 0.0  # > 0: validation classes carved from the train classes (for splits without val)
    config.split_seed = 0  # draws classes into splits (Omniglot's maml split, val_fraction, folder fractions)
    config.augment = ""  # meta-training episodes: "rot90", "cropP", "flip", joined by "+" ("" none)
    if "rotate" in entry(task).options:
        config.rotate = ("train",)  # Omniglot: splits whose characters also appear rotated, as new classes
    config.model, config.hidden, config.downsample, config.pool = "conv4", 64, "stride", "flatten"
    config.batch_norm = "batch statistics in every pass, also at test (transductive), as MAML's code"
    config.eval_batch_norm = "transductive"  # at test: transductive, support or running (jmeta.evaluate)
    config.ways, config.eval_ways, config.shots, config.queries = ways, ways, shots, shots
    config.eval_shots, config.eval_queries = shots, shots
    declared = LEARNERS[learner].properties["keys"]
    for key, value in INNER_DEFAULTS.items():
        if key in declared:
            config[key] = value
    config.eval_steps = (3,)
    config.meta_batch, config.meta_lr, config.steps, config.seed = 32, 1e-3, 60_000, 0
    config.batching, config.compute_dtype = "auto", "float32"
    config.log_every, config.val_every, config.val_tasks, config.val_metric = 100, 1000, 100, "accuracy"
    config.eval_tasks = 600
    config.published, config.published_source = {}, ""
    return config


def mlp_model(config: ml_collections.ConfigDict, example_input: jax.Array, outputs: int | None) -> Model:
    """An MLP with ``hidden`` layers and ``outputs`` outputs (none: the last hidden layer is the embedding)."""
    sizes = (*config.hidden, outputs) if outputs is not None else tuple(config.hidden)
    return from_linen(MLP(sizes, init_std=config.get("init_std")), example_input)


def conv4_model(config: ml_collections.ConfigDict, example_input: jax.Array, outputs: int | None) -> Model:
    """Conv-4 with ``outputs`` outputs, or without a head (an embedding) for ``outputs=None``."""
    module = Conv4(num_classes=outputs, hidden=config.hidden, downsample=config.downsample, pool=config.pool)
    return from_linen(module, example_input)


register_model("mlp", mlp_model, keys=("hidden",), optional_keys={"init_std": None})
register_model("conv4", conv4_model, keys=("hidden", "downsample", "pool"))

LearnerBuild = tuple[Learner, optax.GradientTransformation]
INNER_KEYS = ("inner_lr", "inner_steps")
# Every learner with an inner optimiser may take another one: {"name": optax function, **its arguments}.
INNER_OPTIONAL = {"inner_optimizer": None}


def inner_optimizer(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The inner optimiser arguments of a learner factory: ``inner_lr`` (plain SGD), or, when the config sets
    ``inner_optimizer``, any optax optimiser by name with its arguments, where an argument may itself be an
    optax schedule ``{"schedule": name, **arguments}``; ``inner_lr`` is then not used.

    Example::

        >>> import ml_collections
        >>> config = ml_collections.ConfigDict({"inner_lr": 0.4, "inner_optimizer": None})
        >>> inner_optimizer(config)
        {'inner_lr': 0.4}
        >>> config.inner_optimizer = {"name": "adam", "learning_rate": {"schedule": "linear_schedule",
        ...     "init_value": 0.1, "end_value": 0.01, "transition_steps": 5}}
        >>> sorted(inner_optimizer(config))
        ['inner_lr', 'inner_optimizer']
    """
    spec = config.get("inner_optimizer")
    if not spec:
        return {"inner_lr": config.inner_lr}
    spec = spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else dict(spec)
    return {"inner_lr": None, "inner_optimizer": _optax_call(spec, "name", "inner_optimizer")}


def _optax_call(spec: dict[str, Any], field: str, where: str) -> Any:
    name = spec.pop(field, None)
    function = getattr(optax, name, None) if isinstance(name, str) else None
    if function is None or not callable(function):
        raise ValueError(
            f"{where} must name an optax function in {field!r} (e.g. {{{field!r}: 'adam', 'learning_rate': 0.01}}); "
            f"got {name!r}{nearest(name, dir(optax)) if isinstance(name, str) else ''}."
        )
    arguments = {
        key: _optax_call(dict(value), "schedule", f"{where}'s {key}") if isinstance(value, Mapping) else value
        for key, value in spec.items()
    }
    try:
        return function(**arguments)
    except TypeError as error:
        raise ValueError(
            f"{where}: optax.{name}({arguments}) failed: {error}{_takes(function, name, spec)}."
        ) from error


def _takes(function: Callable[..., Any], name: str, given: Mapping[str, Any]) -> str:
    """'; optax.NAME takes ARGUMENTS' (with the nearest names to an unknown one given), or '' without a signature."""
    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ""
    unknown = [key for key in given if key not in parameters]
    return f"; optax.{name} takes {', '.join(parameters)}{nearest(unknown[0], parameters) if unknown else ''}"


def maml_learner(
    config: ml_collections.ConfigDict, model: Model, family: TaskFamily, *, first_order: bool
) -> LearnerBuild:
    """MAML and first-order MAML, from ``inner_lr`` (or ``inner_optimizer``) and ``inner_steps``."""
    learner = learners.maml(
        model,
        family.loss,
        steps=config.inner_steps,
        first_order=first_order,
        metrics=family.metrics,
        **inner_optimizer(config),
    )
    return learner, optax.adam(config.meta_lr)


MAML = {"keys": INNER_KEYS, "optional_keys": INNER_OPTIONAL, "inner_lr": True}
register_learner("maml", functools.partial(maml_learner, first_order=False), **MAML)
register_learner("fomaml", functools.partial(maml_learner, first_order=True), **MAML)


@register_learner("metasgd", keys=INNER_KEYS, inner_lr=True)
def metasgd_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """Meta-SGD: per-parameter inner learning rates, initialised to ``inner_lr`` and meta-learned."""
    learner = learners.metasgd(model, family.loss, config.inner_lr, config.inner_steps, metrics=family.metrics)
    return learner, optax.adam(config.meta_lr)


@register_learner("anil", keys=(*INNER_KEYS, "head"), optional_keys=INNER_OPTIONAL, inner_lr=True)
def anil_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """ANIL: only the parameters under the top-level name ``head`` (``config.head``) adapt."""
    learner = learners.anil(
        model,
        family.loss,
        lambda path: path[0] == config.head,
        steps=config.inner_steps,
        metrics=family.metrics,
        **inner_optimizer(config),
    )
    return learner, optax.adam(config.meta_lr)


@register_learner(
    "reptile", keys=(*INNER_KEYS, "transductive"), optional_keys=INNER_OPTIONAL, inner_lr=True, schedule=True
)
def reptile_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """Reptile: inner Adam (beta1 = 0) with ``inner_lr`` (or ``inner_optimizer``); meta step ``meta_lr``
    annealed linearly to 0 over :func:`schedule_horizon` steps."""
    learner = learners.reptile(
        model,
        family.loss,
        steps=config.inner_steps,
        transductive=config.transductive,
        metrics=family.metrics,
        **inner_optimizer(config),
    )
    return learner, learners.reptile_meta_optimizer(config.meta_lr, schedule_horizon(config))


@register_learner("protonet", keys=("ways",), embedding=True, any_ways=True)
def protonet_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """Prototypical Networks; ``ways`` (training) may exceed ``eval_ways`` (absent: ``ways``)."""
    ways = max(config.ways, config.get("eval_ways", config.ways))
    return learners.protonet(model, ways, family.loss, metrics=family.metrics), optax.adam(config.meta_lr)


@register_learner(
    "imaml",
    keys=(*INNER_KEYS, "lam", "cg_steps"),
    optional_keys=INNER_OPTIONAL,
    inner_lr=True,
    example_passes=lambda config: (config.inner_steps + config.cg_steps, 1),  # a support pass per CG step
)
def imaml_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """iMAML: proximal inner loop (``lam``), implicit meta-gradient by ``cg_steps`` of conjugate gradient."""
    learner = learners.imaml(
        model,
        family.loss,
        steps=config.inner_steps,
        lam=config.lam,
        cg_steps=config.cg_steps,
        metrics=family.metrics,
        **inner_optimizer(config),
    )
    return learner, optax.adam(config.meta_lr)


@register_learner(
    "cavia",
    keys=(*INNER_KEYS, "context_size"),
    optional_keys=INNER_OPTIONAL,
    inner_lr=True,
    model_input=lambda config, x: jnp.zeros((*x.shape[:-1], x.shape[-1] + config.context_size), x.dtype),
)
def cavia_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """CAVIA: ``context_size`` context parameters appended to the input adapt with ``inner_lr`` (or
    ``inner_optimizer``) for ``inner_steps`` steps; the model is built for the widened input."""
    learner = learners.cavia(
        model,
        family.loss,
        config.context_size,
        steps=config.inner_steps,
        metrics=family.metrics,
        **inner_optimizer(config),
    )
    return learner, optax.adam(config.meta_lr)


MAMLPP_KEYS = ("msl_steps", "first_order_steps", "lslr", "bnwb", "bnrs", "cosine")


@register_learner("mamlpp", keys=(*INNER_KEYS, *MAMLPP_KEYS), inner_lr=True, schedule=True)
def mamlpp_learner(config: ml_collections.ConfigDict, model: Model, family: TaskFamily) -> LearnerBuild:
    """MAML++, each part from the config: ``msl_steps``, ``first_order_steps``, ``lslr``, ``bnwb``, ``bnrs``,
    ``cosine`` (cosine annealing of ``meta_lr`` over :func:`schedule_horizon` steps)."""
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
        return learner, learners.mamlpp_meta_optimizer(config.meta_lr, schedule_horizon(config))
    return learner, optax.adam(config.meta_lr)


def describe(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON-able values (saved with a run, compared on resume)."""
    return json_safe(config.to_dict())


def json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value
