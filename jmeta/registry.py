"""One registry pattern for everything a config names: learners, task families, models, data sets, splits
and programs.

A :class:`Registry` maps names to :class:`Component` s: a builder and the properties it declares. What jmeta
does with a component follows from its properties (e.g. a learner's ``any_ways``: "tests with any number of
ways"), never from its name, and jmeta's own built-ins register through the same functions as a user's:

=========================================  =====================================================================
function                                   builder
=========================================  =====================================================================
``jmeta.register_learner(name, ...)``      ``builder(config, model, family) -> (Learner, meta_optimizer)``
``jmeta.register_task_family(name, ...)``  ``builder(config) -> TaskFamily`` (samplers and an example input)
``jmeta.register_model(name, ...)``        ``builder(config, example_input, outputs) -> Model``
``jmeta.register_dataset(name, ...)``      ``loader(data_dir, **options) -> FewShotData``
``jmeta.register_split(dataset, ...)``     ``split(class_names) -> {"train": [...], "val": [...], "test": [...]}``
``jmeta.register_program(name, ...)``      ``program(config, workdir) -> results``
=========================================  =====================================================================

Each ``register_*`` returns the builder, so it also works as a decorator. A config that uses a component
registered outside jmeta names the modules that register it (``config.imports``); every command imports them
again before it rebuilds a run, from a fresh process (docs: "Your own learner").

Example::

    >>> reg = Registry("widget", properties={"size": 1})
    >>> @reg.register("small")
    ... def small(config):
    ...     return "a small widget"
    >>> reg["small"].properties["size"], reg["small"].builder(None)
    (1, 'a small widget')
    >>> reg["smal"]  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: widget must be one of 'small' (or a name registered with register_widget); got 'smal' (did you ...?).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = [
    "LEARNERS",
    "MODELS",
    "PROGRAMS",
    "REQUIRED",
    "TASK_FAMILIES",
    "Component",
    "Registry",
    "nearest",
    "register_learner",
    "register_model",
    "register_program",
    "register_task_family",
    "snapshot",
]

REQUIRED = object()  # a property every registration must give


@dataclasses.dataclass(frozen=True)
class Component:
    """A registered builder with its declared properties (a read-only mapping, defaults filled in)."""

    kind: str
    name: str
    builder: Callable[..., Any]
    properties: Mapping[str, Any]


class Registry:
    """Names of one ``kind`` of component, each with a builder and ``properties``.

    ``properties`` maps each property a registration may declare to its default (:data:`REQUIRED` for none).
    Registering a taken name raises ValueError unless it is the same builder with the same properties, or
    ``replace=True``. Every registry is listed in ``Registry.instances``."""

    instances: list[Registry] = []

    def __init__(self, kind: str, *, properties: Mapping[str, Any] | None = None, register_with: str = ""):
        self.kind = kind
        self.schema = dict(properties or {})
        self.register_with = register_with or f"register_{kind.replace(' ', '_')}"
        self._entries: dict[str, Component] = {}
        Registry.instances.append(self)

    def register(
        self, name: str, builder: Callable[..., Any] | None = None, *, replace: bool = False, **properties: Any
    ) -> Any:
        """Adds ``builder`` as ``name`` with ``properties``; without ``builder``, a decorator that does."""
        if builder is None:
            return lambda function: self.register(name, function, replace=replace, **properties)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}.")
        if not callable(builder):
            raise TypeError(f"the {self.kind} builder for {name!r} must be callable; got {type(builder).__name__}.")
        unknown = sorted(set(properties) - set(self.schema))
        if unknown:
            raise TypeError(
                f"{self.kind} {name!r}: unknown properties {unknown}{nearest(unknown[0], self.schema)}; a {self.kind} "
                f"declares {', '.join(self.schema) or 'no properties'}."
            )
        missing = [key for key, default in self.schema.items() if default is REQUIRED and key not in properties]
        if missing:
            raise TypeError(f"{self.kind} {name!r} must declare the properties {missing}.")
        component = Component(self.kind, name, builder, types.MappingProxyType({**self.schema, **properties}))
        old = self._entries.get(name)
        same = old is not None and old.builder is builder and dict(old.properties) == dict(component.properties)
        if old is not None and not replace and not same:
            raise ValueError(
                f"a {self.kind} named {name!r} is already registered (to {_label(old.builder)}); pass replace=True "
                "to replace it, or choose another name."
            )
        self._entries[name] = component
        return builder

    def __getitem__(self, name: str) -> Component:
        if name not in self._entries:
            raise ValueError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: Any, key: str | None = None) -> str:
        """The message for a name that is not registered (``key``: the config key that gave it)."""
        names = ", ".join(map(repr, self._entries)) or "(none yet)"
        hint = nearest(name, self._entries) if isinstance(name, str) else ""
        return (
            f"{key or self.kind} must be one of {names} (or a name registered with {self.register_with}); got "
            f"{name!r}{hint}."
        )

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def items(self) -> tuple[tuple[str, Component], ...]:
        return tuple(self._entries.items())


def nearest(name: str, known: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, or ``""``.

    Example::

        >>> nearest("inner_rl", ["inner_lr", "meta_lr"])
        " (did you mean 'inner_lr'?)"
    """
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _label(builder: Callable[..., Any]) -> str:
    """``module.qualname`` of a builder (of the function a ``functools.partial`` wraps)."""
    builder = getattr(builder, "func", builder) if isinstance(builder, functools.partial) else builder
    return f"{getattr(builder, '__module__', '?')}.{getattr(builder, '__qualname__', type(builder).__name__)}"


def snapshot() -> tuple[tuple[str, Component], ...]:
    """Every registered component of every registry (to see whether running a file registered any)."""
    return tuple(item for registry in Registry.instances for item in registry.items())


# Learners: ``builder(config, model, family) -> (Learner, meta_optimizer)``.
LEARNERS = Registry(
    "learner",
    properties={
        # config keys the builder reads (beside the run's own, jmeta.experiment.RUN_KEYS), and optional ones
        # with their defaults; either may be a function of the config
        "keys": (),
        "optional_keys": {},
        # the model is an embedding without a classifier head (the learner classifies embeddings itself)
        "embedding": False,
        # tests with any number of ways (eval_ways may differ from ways)
        "any_ways": False,
        # has an inner learning rate, config key inner_lr (stated in the protocol)
        "inner_lr": False,
        # model_input(config, example_input) -> the example input its model is built for (e.g. widened by a
        # context, CAVIA); None: the task family's
        "model_input": None,
        # its meta-optimiser's schedule spans the run (jmeta.experiment.schedule_horizon: fixed when it starts)
        "schedule": False,
        # example_passes(config) -> (support passes, query passes) of one training task's points per meta-step;
        # None: the default of jmeta.compute (inner_steps support passes with an inner_lr, else 1; 1 query pass)
        "example_passes": None,
    },
)
# Task families: ``builder(config) -> TaskFamily`` (samplers and an example input); loss and metrics declared.
TASK_FAMILIES = Registry(
    "task family",
    properties={
        "keys": (),
        "optional_keys": {},
        "loss": REQUIRED,  # loss(predictions, targets) -> scalar, the inner and outer loss
        "metrics": {},  # name -> metric(predictions, targets), reported beside the loss
        "labels": "classes",  # "classes": integer labels 0..outputs-1; "values": float targets (regression)
        "outputs": REQUIRED,  # outputs(config) -> int: the outputs a model's head needs
        "figure": None,  # figure(learner, params, model_state, key, config, path): a picture of adaptation
    },
    register_with="register_task_family",
)
# Models: ``builder(config, example_input, outputs) -> Model``; outputs None: an embedding (no head).
MODELS = Registry("model", properties={"keys": (), "optional_keys": {}})
# Programs (source systems trained otherwise than episode by episode): ``program(config, workdir) -> results``.
PROGRAMS = Registry(
    "program",
    properties={
        # evaluate(config, workdir) -> results: `jmeta eval` of a run (its checkpoints); None: results.json only
        "evaluate": None,
    },
)


def register_learner(name: str, builder: Callable[..., Any] | None = None, *, replace: bool = False, **properties: Any):
    """Registers a learner for configs' ``learner=name``: ``builder(config, model, family) -> (learner,
    meta_optimizer)``. Properties: ``keys`` (config keys it reads), ``optional_keys`` ({key: default}),
    ``embedding`` (its model has no head), ``any_ways`` (tests with other ways than it trains with),
    ``inner_lr`` (has config key ``inner_lr``, stated in the protocol), ``schedule`` (its meta-optimiser's
    schedule spans the run: built from ``jmeta.experiment.schedule_horizon(config)``), ``example_passes``
    (``config -> (support passes, query passes)`` per training task and meta-step, ``jmeta.compute``).
    Usable as a decorator.

    Example::

        >>> import optax, jmeta
        >>> @register_learner("my-maml", keys=("inner_lr", "inner_steps"), inner_lr=True, replace=True)
        ... def my_maml(config, model, family):
        ...     learner = jmeta.maml(model, family.loss, config.inner_lr, config.inner_steps, metrics=family.metrics)
        ...     return learner, optax.adam(config.meta_lr)
    """
    return LEARNERS.register(name, builder, replace=replace, **properties)


def register_task_family(
    name: str, builder: Callable[..., Any] | None = None, *, replace: bool = False, **properties: Any
):
    """Registers a task family for configs' ``task=name``: ``builder(config) -> TaskFamily``. Properties:
    ``loss`` and ``metrics`` (required loss, optional named metrics), ``outputs(config) -> int`` (outputs of
    a head), ``labels`` ("classes" or "values"), ``keys`` and ``optional_keys`` (config keys it reads),
    ``figure``. Usable as a decorator; docs: "Your own task family"."""
    return TASK_FAMILIES.register(name, builder, replace=replace, **properties)


def register_model(name: str, builder: Callable[..., Any] | None = None, *, replace: bool = False, **properties: Any):
    """Registers a model for configs' ``model=name``: ``builder(config, example_input, outputs) -> jmeta.Model``
    (``outputs`` None: the learner wants an embedding, no head). Properties ``keys`` and ``optional_keys``:
    the config keys it reads.
    Usable as a decorator."""
    return MODELS.register(name, builder, replace=replace, **properties)


def register_program(
    name: str, program: Callable[..., Any] | None = None, *, replace: bool = False, **properties: Any
):
    """Registers ``program(config, workdir) -> results`` for configs that set ``program=name`` (shaped as
    :func:`jmeta.systems.common.report` returns them). Property ``evaluate``: ``evaluate(config, workdir) ->
    results``, what ``jmeta eval --workdir`` runs on a run of the program (``config`` with the command's
    overrides); without it ``jmeta eval`` refuses the run. Usable as a decorator."""
    return PROGRAMS.register(name, program, replace=replace, **properties)
