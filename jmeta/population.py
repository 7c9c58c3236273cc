"""Populations: many seeds and hyperparameter settings of one experiment, meta-trained as one compiled program.

A config with ``seeds=N`` and/or ``sweep={"inner_lr": (0.1, 0.4), "meta_lr": (1e-3, 3e-3)}`` describes a
population: every setting of the sweep (the product of its values, in the order given) crossed with ``N``
seeds (default 1). Member ``k`` is setting ``k // N`` with seed ``config.seed + k % N``; its initialisation
and its meta-training, validation and test tasks come from ``jmeta.train.run_keys(seed)``, exactly as the
separate run with that seed and setting, so member ``k`` ends as that run does (within float rounding: the
population's programs batch the members' arithmetic).

One program meta-trains them all: the training state has a leading population axis, the meta-step is
vmapped over it, and the learner and its meta-optimiser are built inside the compiled step from each
member's values of the swept keys, which are traced (the effect of ``optax.inject_hyperparams``, for any
optimiser or schedule a learner builds), so one compilation serves every member. Only keys that change no
shape or loop count can be swept: floating-point keys read by the learner or the model, and ``meta_lr``
(:func:`sweepable_keys`). The devices form a 2-D mesh ``("population", "tasks")``: members are split over
as many devices as divide both the device count and the population (members need no communication), the
task batch of each step over the rest.

A member whose metrics become non-finite is frozen (its state stays as at its last finite step), reported
on stderr, in ``metrics.jsonl`` (``stopped``) and in ``results.json``; the others go on. Checkpoints hold the
whole population, with each member's best state by validation, so a killed run resumes exactly. Validation
and meta-test run member by member with the programs of a single run. Results are reported per setting as
the mean over seeds with a CI across seeds, as meta-learning papers report several seeds (e.g. MAML++, the
mean of 3 seeds: Antoniou et al. 2019, "How to train your MAML").

This module is a layer above the single-run layer (``jmeta.train``, ``jmeta.runs``, ``jmeta.plotting``), which
never imports it: ``jmeta train/eval/plot/predict`` and ``jmeta.load_run`` (:func:`load_run`) dispatch here.

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/sinusoid_maml.py", ["steps=200", "seeds=3"])   # doctest: +SKIP
    >>> results = train_population(config, "runs/three_seeds")                           # doctest: +SKIP
    >>> [m["seed"] for m in results["members"]]                                           # doctest: +SKIP
    [0, 1, 2]
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import numbers
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tensorboardX import SummaryWriter
from tqdm import tqdm

from jmeta import parallel
from jmeta.checkpoint import HIGHER_IS_BETTER, Checkpoints, interrupt_deferred, interrupts_remembered
from jmeta.compute import passes_per_step
from jmeta.distributed import is_main_process
from jmeta.experiment import (
    POPULATION_KEYS,
    Components,
    Experiment,
    TaskFamily,
    _declared,
    apply_override,
    build,
    build_learner,
    check_config,
    components,
    family_without_data,
    is_population,
)
from jmeta.lock import workdir_lock
from jmeta.meta_trainer import MetaTrainer, NonFiniteError, TrainState, meta_trainer
from jmeta.nn import PyTree
from jmeta.registry import nearest
from jmeta.runs import CHECKPOINTS, Run, model_input_shape, read_config, save_model_input
from jmeta.runs import load_run as load_single_run
from jmeta.storage import close_event_writer, disk_full_reported
from jmeta.tasks.checks import check_finite_tasks
from jmeta.train import (
    EVAL_OVERRIDES,
    eval_suffix,
    fix_schedule,
    interrupted_at,
    keep_metrics_until,
    meta_test,
    prepare_workdir,
    run_keys,
    run_mesh_of,
    validate,
    write_atomically,
)
from jmeta.validation import one_of, positive_int

POPULATION_AXIS = "population"
# Swept keys are traced: keys that size arrays or loops (ints, tuples, strings) cannot be.
ALWAYS_SWEEPABLE = ("meta_lr",)
NEVER_VALIDATED = np.iinfo(np.int32).max  # a member's best_diverged before its first validation


class Member(NamedTuple):
    """One member of a population: its index, setting (swept key -> value) and seed."""

    index: int
    setting_index: int
    setting: dict[str, float]
    seed: int


class PopulationState(NamedTuple):
    """The training state of a population; every leaf has a leading axis of one entry per member.

    ``members``: the members' ``TrainState`` (a member stopped for non-finite values keeps the state of its
    last finite step, but its ``step`` goes on with the population's); ``best_*``: the step, parameters and
    model state of each member's best validation so far, with its value and count of diverged validation
    tasks (``best_diverged`` is ``NEVER_VALIDATED`` before its first validation, and the member's current
    state then stands for its best); ``stopped_at``: the meta-step at which a member became
    non-finite, 0 while it trains."""

    members: TrainState
    best_step: jax.Array
    best_params: PyTree
    best_model_state: PyTree
    best_value: jax.Array
    best_diverged: jax.Array
    stopped_at: jax.Array

    @property
    def step(self) -> int:
        """The population's meta-step (every member's ``step``)."""
        return int(on_host(self.members.step)[0])


def on_host(array: jax.Array) -> np.ndarray:
    """The whole of ``array`` as a NumPy array on every process, also when it spans other processes'
    devices (every process must then call it: the array is gathered onto each device of its mesh)."""
    if array.is_fully_addressable:
        return np.asarray(array)
    whole = jax.jit(lambda a: a, out_shardings=NamedSharding(array.sharding.mesh, PartitionSpec()))(array)
    return np.asarray(whole.addressable_data(0))


def sweepable_keys(config: ml_collections.ConfigDict, parts: Components | None = None) -> tuple[str, ...]:
    """The keys of ``config`` a sweep may vary: ``meta_lr`` and the floating-point keys its learner or model
    reads (their values are traced; integer, tuple and string keys size arrays or loops)."""

    parts = parts or components(config)
    declared = [
        key
        for component in (parts.learner, parts.model)
        for key in (*_declared(component, "keys", config), *_declared(component, "optional_keys", config))
    ]
    floats = [key for key in dict.fromkeys(declared) if isinstance(config.get(key), float)]
    return tuple(dict.fromkeys([*ALWAYS_SWEEPABLE, *floats]))


def check_population(config: ml_collections.ConfigDict, parts: Components) -> None:
    """Checks ``seeds`` and ``sweep`` (called by ``jmeta.experiment.check_config``): ``seeds`` a positive
    int, ``sweep`` a dict of sweepable keys (:func:`sweepable_keys`) to non-empty tuples of numbers, each
    setting a valid config. Raises ValueError naming the key, what was given and what is allowed."""
    if config.get("seeds") is not None:
        positive_int("seeds", config.seeds)
    sweep = config.get("sweep")
    if sweep is None:
        return
    if not isinstance(sweep, (dict, ml_collections.ConfigDict)) or not sweep:
        raise ValueError(
            "sweep must be a non-empty dict {key: (value, ...)}, e.g. sweep={'inner_lr': (0.1, 0.4)}; "
            f"got {sweep!r}."
        )
    allowed = sweepable_keys(config, parts)
    for key, values in sweep.items():
        if key not in allowed:
            why = (
                f"is not a key of this config{nearest(key, allowed)}"
                if key not in config
                else (f"is {config[key]!r}, not a float")
            )
            raise ValueError(
                f"sweep key {key!r} cannot be swept: it {why}, and a sweep's values are traced in one compiled "
                f"program, so only floating-point keys that change no shape or loop count can vary. Keys that can "
                f"be swept here: {', '.join(allowed)}; for others (inner_steps, hidden, ways, ...) run one "
                "population per value."
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)) or not values:
            raise ValueError(f"sweep[{key!r}] must be a non-empty tuple of numbers, e.g. (0.1, 0.4); got {values!r}.")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"sweep[{key!r}] must hold numbers; got {value!r} in {tuple(values)!r}.")
        if len(set(values)) != len(values):
            raise ValueError(f"sweep[{key!r}] holds a value twice: {tuple(values)!r}.")
    for member in members(config)[:: config.get("seeds") or 1]:  # one per setting: its values are checked
        try:
            check_config(member_config(config, member))
        except ValueError as error:
            raise ValueError(f"the sweep's setting {member.setting}: {error}") from error


def members(config: ml_collections.ConfigDict) -> list[Member]:
    """The members of the population ``config`` describes: the sweep's settings (the product of its values,
    keys in the order given) crossed with ``seeds`` seeds, seeds varying fastest.

    Example::

        >>> import ml_collections
        >>> config = ml_collections.ConfigDict({"seed": 10, "seeds": 2, "sweep": {"inner_lr": (0.1, 0.4)}})
        >>> [(m.index, m.setting, m.seed) for m in members(config)]
        [(0, {'inner_lr': 0.1}, 10), (1, {'inner_lr': 0.1}, 11), (2, {'inner_lr': 0.4}, 10), (3, {'inner_lr': 0.4}, 11)]
    """
    sweep = dict(config.get("sweep") or {})
    settings = [dict(zip(sweep, values, strict=True)) for values in itertools.product(*sweep.values())]
    seeds = config.get("seeds") or 1
    return [
        Member(i * seeds + s, i, {k: float(v) for k, v in setting.items()}, config.seed + s)
        for i, setting in enumerate(settings)
        for s in range(seeds)
    ]


def member_config(config: ml_collections.ConfigDict, member: Member) -> ml_collections.ConfigDict:
    """The config of the single run that ``member`` equals: its seed and setting, without ``seeds`` and
    ``sweep``."""
    plain = {key: value for key, value in config.to_dict().items() if key not in POPULATION_KEYS}
    single = ml_collections.ConfigDict(plain)
    for key, value in {**member.setting, "seed": member.seed}.items():
        apply_override(single, f"{key}={value!r}")
    return single


def population_mesh(devices: Sequence[jax.Device], population: int) -> Mesh:
    """A 2-D mesh ``("population", "tasks")`` over ``devices``: the population axis takes as many devices as
    divide both the device count and ``population`` (the members need no communication between devices),
    the task axis the rest.

    Example::

        >>> mesh = population_mesh(jax.devices()[:1], 3)
        >>> dict(mesh.shape)
        {'population': 1, 'tasks': 1}
    """
    devices = np.asarray(devices).ravel()
    members_over = math.gcd(len(devices), population)
    return Mesh(devices.reshape(members_over, len(devices) // members_over), (POPULATION_AXIS, parallel.TASK_AXIS))


class Population(NamedTuple):
    """What a population run is made of: the config, its members, the experiment of each setting (concrete
    values: validation and test), the swept values as arrays (one entry per member), the members' keys, the
    mesh, and ``init(init_keys, values)``/``update(members, train_keys, values, sampler)`` over the
    population axis, the learners built from traced values."""

    config: ml_collections.ConfigDict
    members: list[Member]
    experiments: list[Experiment]
    values: dict[str, jax.Array]
    keys: Any  # jmeta.train.RunKeys with a leading population axis
    mesh: Mesh
    init: Any
    update: Any


def build_population(
    config: ml_collections.ConfigDict, *, family: TaskFamily | None = None, mesh: Mesh | None = None
) -> Population:
    """Checks ``config`` and builds its population (nothing is compiled). The task family is built once; each
    setting's learner is built with concrete values (for validation and test), and once more, abstractly,
    from traced values (``jax.eval_shape``), so that a learner that cannot take a traced value is refused
    here, naming the key. ``family``: the task family to use (default: built from ``config``; one without
    samplers, ``jmeta.experiment.family_without_data``, to rebuild a trained population). ``mesh`` default: the
    run's devices (``devices``) as :func:`population_mesh`."""

    parts = check_config(config)
    check_population(config, parts)
    family = family or build(config).family  # reads only: a bad config leaves no workdir behind
    population = members(config)
    experiments = []
    for member in population[:: config.get("seeds") or 1]:
        try:
            experiments.append(Experiment(family, *build_learner(member_config(config, member), family, parts)))
        except ValueError as error:
            raise ValueError(f"the sweep's setting {member.setting}: {error}") from error
    swept = list(config.get("sweep") or {})
    values = {key: jnp.asarray([m.setting[key] for m in population], jnp.float32) for key in swept}
    keys = jax.tree.map(lambda *k: jnp.stack(k), *[run_keys(m.seed) for m in population])
    mesh = mesh or population_mesh(run_mesh_of(config).devices, len(population))
    plain = {key: value for key, value in config.to_dict().items() if key not in POPULATION_KEYS}

    def trainer(member_values: dict[str, jax.Array]) -> MetaTrainer:
        traced = ml_collections.ConfigDict({**plain, **member_values})
        return meta_trainer(*build_learner(traced, family, parts), batching=config.batching)

    def init(init_keys: jax.Array, values: dict[str, jax.Array]) -> TrainState:
        return jax.vmap(lambda key, v: trainer(v).init(key))(init_keys, values)

    def update(
        states: TrainState, train_keys: jax.Array, values: dict[str, jax.Array], sampler: Any
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        task_devices = mesh.shape[parallel.TASK_AXIS]

        def one(state: TrainState, key: jax.Array, v: dict[str, jax.Array]) -> tuple[TrainState, dict]:
            tasks = sampler(jax.random.fold_in(key, state.step), config.meta_batch)
            tasks, weights = parallel.constrain_tasks(parallel.pad_with_weights(tasks, task_devices), mesh)
            return trainer(v).update(state, tasks, weights)

        return jax.vmap(one, spmd_axis_name=POPULATION_AXIS)(states, train_keys, values)

    def probe(member_values: dict[str, jax.Array]) -> Any:  # one member's init and meta-step
        state = trainer(member_values).init(keys.init[0])
        if family.sample_train is None:
            return state
        tasks = family.sample_train(keys.train[0], config.meta_batch)
        return trainer(member_values).update(state, tasks)

    refused = {}
    for key in swept:  # each key alone, to name the ones a builder cannot trace
        try:
            jax.eval_shape(probe, {key: values[key][0]})
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError) as error:
            refused[key] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    if refused:
        raise ValueError(
            f"sweep keys {list(refused)} cannot be traced by learner {config.learner!r} or model {config.model!r}: "
            "its builder needs a concrete value "
            f"({'; '.join(f'{key}: {why}' for key, why in refused.items())}). Sweep other keys "
            f"({', '.join(k for k in sweepable_keys(config, parts) if k not in refused)}), or run one population per "
            "value."
        )
    return Population(config, population, experiments, values, keys, mesh, init, update)


def init_population(population: Population) -> PopulationState:
    """The population's initial state: each member initialised from its own key, as its single run."""
    states = population.init(population.keys.init, population.values)
    size = len(population.members)
    worst = -np.inf if population.config.val_metric in HIGHER_IS_BETTER else np.inf
    return PopulationState(
        states,
        jnp.zeros(size, jnp.int32),
        jax.tree.map(jnp.copy, states.params),  # own buffers: the step donates the state
        jax.tree.map(jnp.copy, states.model_state),
        jnp.full(size, worst, jnp.float32),
        jnp.full(size, NEVER_VALIDATED, jnp.int32),
        jnp.zeros(size, jnp.int32),
    )


def _where(mask: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """``new`` for the members where ``mask`` (shape ``(members,)``) holds, else ``old``."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b), new, old)


def population_step(population: Population) -> Any:
    """``step(state, sampler, count) -> (state, metrics)``: ``count`` meta-steps of every member (a scan;
    metrics ``(count, members)``, NaN for a stopped member). A member whose metrics are not all finite keeps
    its previous state and is marked stopped at that step."""

    def one_step(state: PopulationState, sampler: Any) -> tuple[PopulationState, dict[str, jax.Array]]:
        new, metrics = population.update(state.members, population.keys.train, population.values, sampler)
        finite = jnp.all(jnp.stack([jnp.isfinite(value) for value in metrics.values()]), axis=0)
        running = state.stopped_at == 0
        kept = finite & running
        members_state = _where(kept, new, state.members)._replace(step=new.step)
        stopped_at = jnp.where(running & ~finite, new.step, state.stopped_at)
        metrics = {name: jnp.where(kept, value, jnp.nan) for name, value in metrics.items()}
        return state._replace(members=members_state, stopped_at=stopped_at), metrics

    def steps(state: PopulationState, sampler: Any, count: int) -> tuple[PopulationState, dict[str, jax.Array]]:
        return jax.lax.scan(lambda s, _: one_step(s, sampler), state, length=count)

    per_step = NamedSharding(population.mesh, PartitionSpec(None, POPULATION_AXIS))  # metrics: (count, members)
    return jax.jit(
        steps, static_argnums=2, donate_argnums=0, out_shardings=(member_sharding(population.mesh), per_step)
    )


def member_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (population) axis split over the mesh's ``"population"`` axis."""
    return NamedSharding(mesh, PartitionSpec(POPULATION_AXIS))


def member_state(population: Population, state: PopulationState, k: int, *, best: bool) -> TrainState:
    """Member ``k``'s ``TrainState``, whole on every device of the population's mesh: its best by validation
    (``best``; its last finite state without validation, or if it stopped before its first validation) or its
    current state (as at its last finite step if it stopped), with the step reached."""
    validated = int(on_host(state.best_diverged)[k]) != NEVER_VALIDATED
    return _member_picker(population.mesh)(state, k, best and validated, int(on_host(state.stopped_at)[k]))


@functools.cache
def _member_picker(mesh: Mesh) -> Any:
    """``pick(state, k, best, stopped_at)``, compiled once per mesh (and value of ``best``)."""

    def pick(state: PopulationState, k: jax.Array, best: bool, stopped_at: jax.Array) -> TrainState:
        current = jax.tree.map(lambda a: a[k], state.members)
        if best:
            return current._replace(
                step=state.best_step[k],
                params=jax.tree.map(lambda a: a[k], state.best_params),
                model_state=jax.tree.map(lambda a: a[k], state.best_model_state),
            )
        return current._replace(step=jnp.where(stopped_at > 0, stopped_at - 1, current.step).astype(jnp.int32))

    return jax.jit(pick, static_argnums=2, out_shardings=parallel.replicated(mesh))


def _member_label(member: Member) -> str:
    setting = ", ".join(f"{k}={v}" for k, v in member.setting.items())
    return f"member {member.index} (seed {member.seed}{', ' + setting if setting else ''})"


def train_population(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Meta-trains the population ``config`` describes in ``workdir`` (resuming from its latest checkpoint),
    meta-tests each member, writes ``results.json`` and returns it (:func:`population_results`). ``jmeta
    train`` calls it for a config with ``seeds`` or ``sweep`` (``jmeta.train.train_and_evaluate`` refuses one).

    Raises ValueError for a bad config (before the workdir is touched), ``NonFiniteError`` when every member
    has stopped, ``jmeta.train.TrainingInterrupted`` on Ctrl-C."""

    if not is_population(config):
        raise ValueError(
            "config sets neither seeds nor sweep (a single run): train it with jmeta.train.train_and_evaluate "
            "(as `jmeta train` does), or set seeds=N."
        )
    check_population(config, check_config(config))
    fix_schedule(config, Path(workdir))
    population = build_population(config)
    with workdir_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
        workdir = prepare_workdir(workdir, config)
        if is_main_process():
            save_model_input(workdir, population.experiments[0].family.example_input)
        checkpoints = Checkpoints(
            workdir / "checkpoints", best_metric=config.val_metric, sharding=member_sharding(population.mesh)
        )
        try:
            state = _resume_or_init(population, checkpoints)
            state = meta_train_population(population, state, checkpoints, workdir)
        finally:
            checkpoints.close()
        results = population_results(population, state)
        results["population"]["mesh"] = dict(population.mesh.shape)  # the devices it trained on
        if is_main_process():
            write_atomically(workdir / "results.json", json.dumps(results, indent=2) + "\n")
        return results


def _abstract_state(population: Population) -> PopulationState:
    return jax.eval_shape(lambda: init_population(population))


def _resume_or_init(population: Population, checkpoints: Checkpoints) -> PopulationState:
    restored = checkpoints.resume(_abstract_state(population), jax.eval_shape(lambda: population.keys.train))
    if restored is None:
        return parallel.put(init_population(population), member_sharding(population.mesh))
    state, sampler_keys = restored
    if not np.array_equal(jax.random.key_data(sampler_keys), jax.random.key_data(population.keys.train)):
        raise ValueError("the checkpoint's sampler keys do not match config.seed and seeds; use a new --workdir.")
    print(f"resuming from step {int(state.step)} ({checkpoints.restored_from})", file=sys.stderr)
    return state


def meta_train_population(
    population: Population, state: PopulationState, checkpoints: Checkpoints, workdir: Path
) -> PopulationState:
    """The loop of ``jmeta.train.meta_train`` for a population: blocks of ``log_every`` steps in one compiled
    call, then the members' metrics (a list per quantity, ``null`` for a stopped member) to
    ``metrics.jsonl``; every ``val_every`` steps each running member is validated (as its single run) and its
    best kept in the state; a checkpoint of the whole population after each validation (each block without
    validation) and at the end."""

    config, main = population.config, is_main_process()
    family = population.experiments[0].family
    first = family.sample_train(jax.random.fold_in(population.keys.train[0], state.step), config.meta_batch)
    passes = passes_per_step(config, first)  # training example passes per meta-step of a member (jmeta.compute)
    check_finite_tasks(first, f"the meta-training sampler (step {int(state.step) + 1})")  # before compiling
    run_steps = population_step(population)
    sampler = parallel.replicate(family.sample_train, population.mesh)
    compiled: dict[int, Any] = {}
    metrics_path = workdir / "metrics.jsonl"
    done = int(state.step)  # every process reads it (a collective across processes), then only process 0 writes
    if main:
        keep_metrics_until(metrics_path, done)
    reported = set(np.flatnonzero(on_host(state.stopped_at)))
    board = None
    with (
        interrupts_remembered() as interrupted,
        open(metrics_path if main else os.devnull, "a") as log,
        tqdm(total=config.steps, initial=min(done, config.steps), desc="meta-train", disable=not main) as bar,
    ):
        try:
            while (done := int(state.step)) < config.steps:
                if interrupted:
                    raise KeyboardInterrupt
                count = min(config.log_every, config.steps - done)
                if count not in compiled:
                    bar.set_description("compiling")
                    with interrupt_deferred():
                        compiled[count] = run_steps.lower(state, sampler, count).compile()
                    bar.set_description("meta-train")
                start = time.perf_counter()
                state, metrics = compiled[count](state, sampler)
                metrics = {name: on_host(values) for name, values in metrics.items()}
                stopped_at = on_host(state.stopped_at)
                running = stopped_at == 0
                elapsed = time.perf_counter() - start
                done += count
                for k in sorted(set(np.flatnonzero(~running)) - reported):
                    reported.add(k)
                    tqdm.write(
                        f"{_member_label(population.members[k])} became non-finite at meta-step "
                        f"{stopped_at[k]}: frozen as at step {stopped_at[k] - 1}; the other members go on",
                        file=sys.stderr,
                    )
                if not running.any():
                    raise NonFiniteError(
                        f"every member of the population became non-finite (at meta-steps {stopped_at.tolist()}); "
                        "lower meta_lr or inner_lr, or check the data."
                    )
                record: dict[str, Any] = {"step": done}
                for name, values in metrics.items():
                    record[name] = [_finite_mean(values[:, k]) if running[k] else None for k in range(len(running))]
                record["training_example_passes"] = [done * passes if running[k] else None for k in range(len(running))]
                record["stopped"] = [int(s) or None for s in stopped_at]
                record["tasks_per_s"] = count * config.meta_batch * int(running.sum()) / elapsed
                validate_now = bool(config.val_every) and done % config.val_every == 0
                if validate_now:
                    state, validation = _validate_members(population, state, running, validate)
                    record.update(validation)
                with disk_full_reported(metrics_path, f"writing {metrics_path.name}"):
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                # TensorBoard: one series per member and quantity, e.g. loss/member_2; an event file per
                # checkpoint interval, written out when its writer closes
                board = board or SummaryWriter(
                    str(workdir / "tensorboard"), filename_suffix=f".{done - count}", write_to_disk=main
                )
                for name, values in record.items():
                    for k, value in enumerate(values if isinstance(values, list) and name != "stopped" else []):
                        if value is not None:
                            board.add_scalar(f"{name}/member_{k}", value, done)
                board.add_scalar("tasks_per_s", record["tasks_per_s"], done)
                if validate_now or not config.val_every or done == config.steps:
                    close_event_writer(board, workdir / "tensorboard")
                    board = None
                    checkpoints.save(state, population.keys.train)
                bar.set_postfix({"running": int(running.sum())})
                bar.update(count)
        except KeyboardInterrupt:
            raise interrupted_at(f"at meta-step {done} of {config.steps}", checkpoints) from None
        finally:
            if board is not None:
                close_event_writer(board, workdir / "tensorboard")
    return state


def _finite_mean(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if np.all(np.isfinite(values)) else None


def _validate_members(
    population: Population, state: PopulationState, running: np.ndarray, validate: Any
) -> tuple[PopulationState, dict[str, list]]:
    """Validates each running member as its single run would; a member whose validation ranks above its
    best so far (fewer diverged tasks first, then the metric) gets its current state as its best."""
    config = population.config
    metric = config.val_metric
    records: dict[str, list] = {}
    better = np.zeros(len(running), bool)
    values, diverged = on_host(state.best_value).copy(), on_host(state.best_diverged).copy()
    for member in population.members:
        k = member.index
        if not running[k]:
            continue
        single = member_config(config, member)
        experiment = population.experiments[member.setting_index]
        found = validate(single, experiment, member_state(population, state, k, best=False), population.keys.val[k])
        for name, value in found.items():
            records.setdefault(name, [None] * len(running))[k] = value
        value = found[f"val_{metric}"]
        if not math.isfinite(value):
            value = -math.inf if metric in HIGHER_IS_BETTER else math.inf
        sign = -1 if metric in HIGHER_IS_BETTER else 1
        if diverged[k] == NEVER_VALIDATED or (found["val_diverged"], sign * value) < (diverged[k], sign * values[k]):
            better[k], values[k], diverged[k] = True, value, found["val_diverged"]

    def keep_best(state: PopulationState, mask: jax.Array, values: jax.Array, diverged: jax.Array) -> PopulationState:
        return state._replace(
            best_step=jnp.where(mask, state.members.step, state.best_step),
            best_params=_where(mask, state.members.params, state.best_params),
            best_model_state=_where(mask, state.members.model_state, state.best_model_state),
            best_value=values,
            best_diverged=diverged,
        )

    sharding = member_sharding(population.mesh)
    updated = jax.jit(keep_best, out_shardings=sharding)(
        state, *parallel.put((better, values.astype(np.float32), diverged.astype(np.int32)), sharding)
    )
    return updated, records


def population_results(
    population: Population,
    state: PopulationState,
    *,
    selected: Sequence[int] | None = None,
    best: bool = True,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Meta-tests the members (``selected``, default all) with their single runs' protocol
    (``jmeta.train.meta_test``, with ``overrides`` of the meta-test protocol), and summarises them.

    Returns ``{"members": [...], "settings": [...], "best_setting": ..., "protocol": ...}``: each member with
    its seed, setting, where it stopped (``stopped_at``, None if it never became non-finite), its best
    validation and its single run's results; each setting with, per inner-step count and metric, the mean
    over its seeds with the 95% CI across seeds (Student's t with seeds - 1 degrees of freedom: ``t *
    std / sqrt(seeds)``) beside the mean of the members' per-task 95% CIs; the best setting by the mean
    over seeds of the members' best validation metric (test results are not looked at)."""

    config = population.config
    chosen = [population.members[k] for k in (range(len(population.members)) if selected is None else selected)]
    stopped_at, best_value, best_diverged = (
        on_host(a) for a in (state.stopped_at, state.best_value, state.best_diverged)
    )
    records = []
    for member in chosen:
        k = member.index
        single = member_config(config, member)
        for override in overrides:
            apply_override(single, override)
        experiment = population.experiments[member.setting_index]
        tested = member_state(population, state, k, best=best)
        checkpoint = None
        if not best:
            checkpoint = f"latest checkpoint (--last), step {int(tested.step)}"
        elif not config.val_every:
            checkpoint = f"last finite (no validation: val_every=0), step {int(tested.step)}"
        elif int(best_diverged[k]) == NEVER_VALIDATED:
            checkpoint = f"last finite (stopped before its first validation), step {int(tested.step)}"
        results = meta_test(single, experiment, tested, population.keys.test[k], checkpoint=checkpoint)
        records.append(
            {
                "member": k,
                "seed": member.seed,
                "setting": member.setting,
                "stopped_at": int(stopped_at[k]) or None,
                f"best_val_{config.val_metric}": float(best_value[k]) if config.val_every else None,
                "checkpoint": results["protocol"]["checkpoint"],
                "results": results["results"],
            }
        )
    settings = []
    for setting_index in sorted({m.setting_index for m in chosen}):
        group = [r for r, m in zip(records, chosen, strict=True) if m.setting_index == setting_index]
        summary = {}
        for steps, by_metric in group[0]["results"].items():
            summary[steps] = {
                name: across_seeds(
                    [r["results"][steps][name]["mean"] for r in group],
                    [r["results"][steps][name]["ci95"] for r in group],
                )
                for name in by_metric
            }
        validation = [r[f"best_val_{config.val_metric}"] for r in group]
        settings.append(
            {
                "setting": group[0]["setting"],
                "members": [r["member"] for r in group],
                "seeds": [r["seed"] for r in group],
                "stopped": [r["member"] for r in group if r["stopped_at"]],
                f"mean_best_val_{config.val_metric}": float(np.mean(validation)) if config.val_every else None,
                "results": summary,
            }
        )
    protocol = dict(results["protocol"])  # the last member's: the same for all but the seed and checkpoint
    protocol["seed"] = f"config.seed + 0..seeds-1 ({config.seed} to {config.seed + (config.get('seeds') or 1) - 1})"
    protocol["checkpoint"] = "each member's own (members[i].checkpoint)"
    if "inner_lr" in (config.get("sweep") or {}):
        protocol["inner_lr"] = "each setting's (settings[i].setting)"
    protocol["ci_across_seeds"] = "95%, Student's t(seeds - 1) * std(ddof=1) / sqrt(seeds), over the members' means"
    protocol["ci_tasks"] = "the mean of the members' per-task 95% CIs (1.96 * std / sqrt(tasks))"
    return {
        "population": {
            "members": len(population.members),
            "seeds": config.get("seeds") or 1,
            "sweep": {k: list(v) for k, v in (config.get("sweep") or {}).items()},
        },
        "protocol": protocol,
        "members": records,
        "settings": settings,
        "best_setting": _best_setting(config, settings),
        "published": dict(config.published),
        "published_source": config.published_source,
    }


def across_seeds(means: Sequence[float], task_cis: Sequence[float]) -> dict[str, Any]:
    """The mean of the members' means with its 95% CI across seeds (Student's t, ``seeds - 1`` degrees of
    freedom; NaN for one seed) and the mean of their per-task CIs.

    Example::

        >>> r = across_seeds([1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
        >>> round(r["mean"], 3), round(r["ci95_seeds"], 3), round(r["ci95_tasks"], 3), r["seeds"]
        (2.0, 2.484, 0.2, 3)
    """
    from scipy.stats import t

    values = np.asarray(means, np.float64)
    finite = values[np.isfinite(values)]
    n = len(finite)
    ci = float(t.ppf(0.975, n - 1) * finite.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {
        "mean": float(finite.mean()) if n else math.nan,
        "ci95_seeds": ci,
        "ci95_tasks": float(np.nanmean(np.asarray(task_cis, np.float64))) if n else math.nan,
        "seeds": n,
        "diverged_seeds": len(values) - n,
    }


def _best_setting(config: ml_collections.ConfigDict, settings: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The setting with the best mean over seeds of the best validation metric; None without validation or
    without a sweep (one setting: nothing to choose)."""
    if not config.val_every or not config.get("sweep"):
        return None
    key = f"mean_best_val_{config.val_metric}"
    sign = -1 if config.val_metric in HIGHER_IS_BETTER else 1
    ranked = [s for s in settings if math.isfinite(s[key])]
    if not ranked:
        return None
    chosen = min(ranked, key=lambda s: sign * s[key])
    return {
        "setting": chosen["setting"],
        "chosen_by": f"{key} (mean over seeds of each member's best validation {config.val_metric} on "
        f"{config.val_tasks} tasks); test results are not looked at",
    }


def _seeds_cell(estimate: dict[str, Any]) -> str:
    """``mean ± CI across seeds [mean per-task CI]`` (``n/a`` for one seed), 42 characters."""
    if not math.isfinite(estimate["mean"]):
        return f"{'diverged (every seed)':>42}"
    across = f"{estimate['ci95_seeds']:<8.4f}" if math.isfinite(estimate["ci95_seeds"]) else f"{'n/a':<8}"
    return f"{estimate['mean']:>17.4f} ± {across} [{estimate['ci95_tasks']:.4f}]     "


def format_population(results: dict[str, Any]) -> str:
    """A plain-text table: one line per setting and inner-step count (mean over seeds ± 95% CI across seeds,
    then the mean per-task CI), the members that stopped, and the best setting by validation."""
    names = list(next(iter(results["settings"][0]["results"].values())))
    labels = []
    for setting in results["settings"]:
        label = ", ".join(f"{k}={v}" for k, v in setting["setting"].items()) or "(config)"
        one = len(setting["members"]) == 1  # e.g. `jmeta eval member=K`
        label += (
            f" member {setting['members'][0]} (seed {setting['seeds'][0]})"
            if one
            else f" x{len(setting['seeds'])} seeds"
        )
        labels.append(label)
    width = max(28, *map(len, labels))
    lines = [
        f"{'setting':<{width}} {'steps':>5}  "
        + "  ".join(f"{name + ' (mean ± CI seeds) [CI tasks]':>42}" for name in names)
        + f"  {'published':>9}"
    ]
    for label, setting in zip(labels, results["settings"], strict=True):
        for steps, by_metric in setting["results"].items():
            cells = "  ".join(_seeds_cell(e) for e in by_metric.values())
            published = results["published"].get(steps, "")
            lines.append(f"{label:<{width}} {steps:>5}  {cells}  {published:>9}")
        if setting["stopped"]:
            lines.append(f"  members stopped (non-finite): {setting['stopped']}")
    for member in results["members"]:
        if member["stopped_at"]:
            setting = "".join(f", {k}={v}" for k, v in member["setting"].items())
            lines.append(
                f"member {member['member']} (seed {member['seed']}{setting}) became non-finite at meta-step "
                f"{member['stopped_at']}; tested as {member['checkpoint']}"
            )
    if results["best_setting"]:
        lines.append(
            f"best setting by validation: {results['best_setting']['setting']} ({results['best_setting']['chosen_by']})"
        )
    protocol = results["protocol"]
    lines.append(
        f"protocol: {protocol['tasks']} test tasks per member, {protocol['shots']}-shot, {protocol['checkpoint']}; "
        f"CI across seeds: {protocol['ci_across_seeds']}; published: {results['published_source']}"
    )
    return "\n".join(lines)


def restore_population(
    workdir: Path, config: ml_collections.ConfigDict, family: TaskFamily
) -> tuple[Population, PopulationState]:
    """The population of the run in ``workdir`` and its latest intact checkpoint (read-only: safe while it
    trains), on this process's first device."""
    population = build_population(config, family=family, mesh=population_mesh(jax.local_devices()[:1], 1))
    checkpoints = Checkpoints(workdir / "checkpoints", best_metric=config.val_metric, read_only=True)
    try:
        state, _ = checkpoints.restore(_abstract_state(population), jax.eval_shape(lambda: population.keys.train))
    finally:
        checkpoints.close()
    return population, state


def selected_members(config: ml_collections.ConfigDict, member: Any) -> list[int]:
    """``member`` checked against the population: a list of the one index, or all for None."""
    size = len(members(config))
    if member is None:
        return list(range(size))
    if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < size:
        raise ValueError(
            f"member must be an int from 0 to {size - 1} (the population has {size} members); got {member!r}."
        )
    return [member]


def evaluate_population_workdir(
    workdir: str | Path, overrides: Sequence[str] = (), *, best: bool = True
) -> tuple[dict[str, Any], Path | None]:
    """``jmeta eval`` of a population run: meta-tests every member (or ``member=K`` among ``overrides``) from
    its best state by validation (or the latest checkpoint's, ``best=False``), with the other ``overrides``
    (``jmeta.train.EVAL_OVERRIDES``, one value each), and writes ``eval_<checkpoint>[_<overrides>].json``.
    Returns the results (:func:`population_results`) and that path (None if it could not be written)."""

    workdir = Path(workdir)
    config = read_config(workdir)
    if not is_population(config):
        raise ValueError(
            f"{str(workdir)!r} holds a single run, not a population: evaluate it with jmeta.train.evaluate_workdir "
            "(as `jmeta eval` does)."
        )
    member, fixed = None, []
    for override in overrides:
        key, _, text = override.partition("=")
        if key == "member":
            member = _literal_int(text)
        elif key not in EVAL_OVERRIDES:
            allowed = ", ".join(f"{key}=..." for key in ("member", *EVAL_OVERRIDES))
            raise ValueError(f"jmeta eval of a population takes the overrides {allowed}; got {override!r}.")
        else:
            fixed.append(override)
    chosen = selected_members(config, member)
    tested = ml_collections.ConfigDict(config.to_dict())
    for override in fixed:
        apply_override(tested, override)
    if any(isinstance(tested.get(key), (tuple, list)) for key in ("eval_ways", "eval_shots", "eval_queries")):
        raise ValueError(
            "jmeta eval of a population takes one value of eval_ways, eval_shots and eval_queries at a time."
        )
    test_only = ml_collections.ConfigDict(tested.to_dict())
    test_only.val_every = 0  # no validation sampler
    population, state = restore_population(workdir, tested, build(test_only).family)
    results = population_results(population, state, selected=chosen, best=best and bool(config.val_every))
    path = workdir / f"eval_{'best' if best and config.val_every else 'latest'}{eval_suffix(overrides)}.json"
    try:
        write_atomically(path, json.dumps(results, indent=2) + "\n")
    except OSError as error:
        print(f"jmeta eval: warning: could not write {path} ({error}); the results are printed only", file=sys.stderr)
        return results, None
    return results, path


def _literal_int(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def load_run(workdir: str | Path, checkpoint: str = "best", *, member: int | None = None) -> Run:
    """``jmeta.load_run``: a single run's ``jmeta.runs.load_run``, or member ``member`` of a population run:
    its learner (built with its setting), its best state by validation (``checkpoint="best"``; its last finite
    one without validation) or its latest, and its single run's config, as a ``jmeta.runs.Run``.

    Raises ValueError for a population without ``member`` (or one out of range), or ``member`` with a single
    run; otherwise as ``jmeta.runs.load_run``.

    Example::

        >>> run = jmeta.load_run("runs/sine_seeds", member=2)  # doctest: +SKIP
        >>> run.config.seed                                    # doctest: +SKIP
        2
    """

    workdir = Path(workdir)
    config = read_config(workdir)
    if not is_population(config):
        if member is not None:
            raise ValueError(f"member={member!r}: {str(workdir)!r} holds a single run, not a population.")
        return load_single_run(workdir, checkpoint)
    one_of("checkpoint", checkpoint, CHECKPOINTS)
    if member is None:
        raise ValueError(
            f"{str(workdir)!r} holds a population of {len(members(config))} members: pass member=K "
            "(jmeta.load_run(workdir, member=K), jmeta predict --workdir DIR --member K)."
        )
    (k,) = selected_members(config, member)
    input_shape = model_input_shape(workdir, config)
    population, state = restore_population(workdir, config, family_without_data(config, input_shape))
    best = checkpoint == "best"
    tested = member_state(population, state, k, best=best)
    experiment = population.experiments[population.members[k].setting_index]
    single = member_config(config, population.members[k])
    name = "best" if best and config.val_every else "latest"
    return Run(experiment.learner, tested.params, tested.model_state, single, int(tested.step), name, input_shape)


def member_labels(config: ml_collections.ConfigDict) -> list[str]:
    """``"k: seed S, key=value"`` for each member of ``config``'s population."""
    return [
        f"{m.index}: seed {m.seed}" + "".join(f", {k}={v:g}" for k, v in m.setting.items()) for m in members(config)
    ]
