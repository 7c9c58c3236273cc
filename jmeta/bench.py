"""Throughput, FLOP utilisation and memory of meta-training steps, on the workloads of the PyTorch peers in
../shared/bench/.

``sinusoid-maml`` is the workload of ``peers_sine.py``: MLP 1-40-40-1 (ReLU), K=10 support and 10 query
points per task, meta-batch 25, one inner SGD step with lr 0.01, second order, Adam 1e-3; one task batch
sampled once; one warm-up call (compilation), then ``steps`` timed meta-steps. ``omniglot-maml`` is that of
``peers_torch.py`` (``omniglot_maml``); ``omniglot-imaml`` runs iMAML on the same tasks (no peer).
``omniglot-metaoptnet-r2d2`` and ``omniglot-matchingnet`` are the meta-training steps of
``experiments/omniglot_metaoptnet_r2d2.py`` and ``experiments/omniglot_matchingnet.py`` (their episodes and
Conv-4 embedding; no peer, no inner loop).
A ``Setting`` varies a workload: inner steps, ``remat``, the compute dtype, the convolution, the batching.

* ``run``: tasks/s, and the FLOPs of one meta-step (``step_flops``: matrix products and convolutions of
  the step's jaxpr, loop bodies counted once per trip; XLA's ``cost_analysis()`` counts a loop body once,
  which is also reported);
* ``measure_peak_flops``: the FLOP/s of a large float32 matrix product on the default device, the
  denominator of the utilisation;
* ``memory``: XLA's compiled memory of one meta-step (``compiled.memory_analysis()``).

Example::

    >>> result = run("sinusoid-maml", steps=100)   # doctest: +SKIP
    >>> result.tasks_per_s, result.flops_per_s     # doctest: +SKIP
    >>> memory("omniglot-maml", inner_steps=100, remat=True).total  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.batching import check_strategy, matmul_and_conv_flops
from jmeta.learners import imaml, maml, matchingnet, metaoptnet_r2d2
from jmeta.meta_trainer import MetaTrainer, TrainState, meta_trainer
from jmeta.models import MLP, Conv4
from jmeta.models.conv4 import CONVS
from jmeta.nn import COMPUTE_DTYPES, from_linen
from jmeta.tasks import Task, sinusoid_tasks
from jmeta.validation import one_of, positive_int


class Setting(NamedTuple):
    """How a workload is built: ``batching`` and ``chunk_size`` for ``jmeta.meta_trainer``; the learner's
    ``inner_steps``, ``remat`` and ``compute_dtype``; ``conv`` for ``Conv4`` (Conv-4 workloads only)."""

    batching: str = "auto"
    chunk_size: int | None = None
    inner_steps: int = 1
    remat: bool = False
    compute_dtype: str = "float32"
    conv: str = "auto"


class BenchResult(NamedTuple):
    """What ``run`` measured: ``steps`` meta-steps of ``tasks_per_step`` tasks in ``run_s`` seconds (after a
    first call, compiling, of ``compile_s``), and the FLOPs of one meta-step (``step_flops``) beside
    XLA's own count of the compiled call (``xla_flops``, each loop body once)."""

    name: str
    setting: Setting
    steps: int
    steps_per_call: int
    tasks_per_step: int
    compile_s: float
    run_s: float
    flops_per_step: float
    xla_flops: float

    @property
    def tasks_per_s(self) -> float:
        return self.steps * self.tasks_per_step / self.run_s

    @property
    def flops_per_s(self) -> float:
        return self.steps * self.flops_per_step / self.run_s


class MemoryResult(NamedTuple):
    """XLA's compiled memory of one meta-step, in bytes (``compiled.memory_analysis()``): ``argument``
    (train state and tasks), ``output`` (new state and metrics), of which ``alias`` reuses donated
    argument buffers, and ``temp`` (everything else live at the peak); ``total`` = argument + output + temp."""

    argument: int
    output: int
    alias: int
    temp: int
    compile_s: float

    @property
    def total(self) -> int:
        return self.argument + self.output + self.temp


class Workload(NamedTuple):
    """A meta-trainer, its initial state and the one task batch it is timed on."""

    trainer: MetaTrainer
    state: TrainState
    tasks: Task


def sinusoid_maml(setting: Setting) -> Workload:
    """The ``peers_sine.py`` workload (``setting.inner_steps`` SGD steps; one by default)."""
    model = from_linen(MLP((40, 40, 1)), jnp.zeros((1, 1)))
    learner = maml(
        model,
        losses.mse,
        inner_lr=0.01,
        steps=setting.inner_steps,
        remat=setting.remat,
        compute_dtype=setting.compute_dtype,
    )
    trainer = meta_trainer(learner, optax.adam(1e-3), batching=setting.batching, chunk_size=setting.chunk_size)
    tasks = sinusoid_tasks(jax.random.key(1), 25, shots=10, queries=10)
    return Workload(trainer, trainer.init(jax.random.key(0)), tasks)


def omniglot_maml(setting: Setting) -> Workload:
    """The ``peers_torch.py`` workload: 5-way 1-shot, 15 queries per class, 28x28x1 random images, Conv-4
    (64 filters, stride-2 3x3 convolutions, BatchNorm on batch statistics, ReLU), mean-pool, linear head;
    meta-batch 32; ``setting.inner_steps`` (one by default) second-order SGD steps of 0.4; Adam 1e-3."""
    model = from_linen(Conv4(num_classes=5, conv=setting.conv), jnp.zeros((1, 28, 28, 1)))
    learner = maml(
        model,
        losses.cross_entropy,
        inner_lr=0.4,
        steps=setting.inner_steps,
        remat=setting.remat,
        compute_dtype=setting.compute_dtype,
    )
    return _omniglot_workload(learner, setting)


def omniglot_imaml(setting: Setting) -> Workload:
    """iMAML on the ``omniglot-maml`` tasks and network: ``setting.inner_steps`` proximal SGD steps of 0.1
    with lam 2, the implicit meta-gradient by 5 conjugate-gradient steps (``experiments/omniglot_imaml.py``)."""
    model = from_linen(Conv4(num_classes=5, conv=setting.conv), jnp.zeros((1, 28, 28, 1)))
    learner = imaml(
        model,
        losses.cross_entropy,
        inner_lr=0.1,
        steps=setting.inner_steps,
        lam=2.0,
        cg_steps=5,
        compute_dtype=setting.compute_dtype,
    )
    return _omniglot_workload(learner, setting)


def omniglot_metaoptnet_r2d2(setting: Setting) -> Workload:
    """MetaOptNet-R2D2 as ``experiments/omniglot_metaoptnet_r2d2.py`` meta-trains it: 20-way 1-shot episodes
    with 5 queries per class, meta-batch 4, 28x28x1 random images; the Conv-4 embedding of
    :func:`_embedding`; ridge penalty 50; Adam 1e-3."""
    learner = metaoptnet_r2d2(
        _embedding(setting), 20, losses.cross_entropy, lam=50.0, compute_dtype=setting.compute_dtype
    )
    return _omniglot_workload(learner, setting, ways=20, queries=5, meta_batch=4)


def omniglot_matchingnet(setting: Setting) -> Workload:
    """Matching Networks as ``experiments/omniglot_matchingnet.py`` meta-trains them: 5-way 1-shot episodes
    with 5 queries per class, meta-batch 32, 28x28x1 random images; the Conv-4 embedding of
    :func:`_embedding`; cosine attention, no full context embeddings; Adam 1e-3."""
    learner = matchingnet(_embedding(setting), 5, losses.cross_entropy, compute_dtype=setting.compute_dtype)
    return _omniglot_workload(learner, setting, ways=5, queries=5, meta_batch=32)


def _embedding(setting: Setting) -> Any:
    """The Conv-4 embedding of the metric and closed-form learners' Omniglot configs: 64 filters, 3x3
    convolutions of stride 1, BatchNorm on batch statistics, ReLU, 2x2 max-pool per block, no head (64-d)."""
    module = Conv4(num_classes=None, downsample="maxpool", pool="flatten", conv=setting.conv)
    return from_linen(module, jnp.zeros((1, 28, 28, 1)))


def _omniglot_workload(
    learner: Any, setting: Setting, *, ways: int = 5, shots: int = 1, queries: int = 15, meta_batch: int = 32
) -> Workload:
    trainer = meta_trainer(learner, optax.adam(1e-3), batching=setting.batching, chunk_size=setting.chunk_size)
    support_key, query_key = jax.random.split(jax.random.key(1))
    labels = jnp.repeat(jnp.arange(ways), shots)
    tasks = Task(
        jax.random.normal(support_key, (meta_batch, ways * shots, 28, 28, 1)),
        jnp.broadcast_to(labels, (meta_batch, ways * shots)),
        jax.random.normal(query_key, (meta_batch, ways * queries, 28, 28, 1)),
        jnp.broadcast_to(jnp.repeat(jnp.arange(ways), queries), (meta_batch, ways * queries)),
    )
    return Workload(trainer, trainer.init(jax.random.key(0)), tasks)


WORKLOADS = {
    "sinusoid-maml": sinusoid_maml,
    "omniglot-maml": omniglot_maml,
    "omniglot-imaml": omniglot_imaml,
    "omniglot-metaoptnet-r2d2": omniglot_metaoptnet_r2d2,
    "omniglot-matchingnet": omniglot_matchingnet,
}
# Timed meta-steps and meta-steps per compiled call by default: enough for a stable figure in seconds.
DEFAULTS = {
    "sinusoid-maml": (1000, 100),
    "omniglot-maml": (20, 1),
    "omniglot-imaml": (10, 1),
    "omniglot-metaoptnet-r2d2": (50, 1),
    "omniglot-matchingnet": (20, 1),
}
# The workloads whose learner has no inner loop (a closed-form head, attention over the support set).
WITHOUT_INNER_LOOP = ("omniglot-metaoptnet-r2d2", "omniglot-matchingnet")


def build(name: str, **setting: Any) -> Workload:
    """The named workload (one of ``WORKLOADS``) with the ``Setting`` fields given, checked before any tracing.

    Example::

        >>> workload = build("sinusoid-maml", inner_steps=5, remat=True)
        >>> workload.tasks.support_x.shape
        (25, 10, 1)
    """
    one_of("name", name, tuple(WORKLOADS))
    setting = Setting(**setting)
    check_strategy(setting.batching, setting.chunk_size)
    positive_int("inner_steps", setting.inner_steps)
    one_of("compute_dtype", setting.compute_dtype, COMPUTE_DTYPES)
    one_of("conv", setting.conv, CONVS)
    if not isinstance(setting.remat, bool):
        raise TypeError(f"remat must be a bool (True or False); got {setting.remat!r}.")
    if name == "sinusoid-maml" and setting.conv != "auto":
        raise ValueError(
            f"conv applies to the Conv-4 workloads; sinusoid-maml has no convolution (got conv={setting.conv!r})."
        )
    if name in WITHOUT_INNER_LOOP and (setting.inner_steps != 1 or setting.remat):
        raise ValueError(
            f"inner_steps and remat apply to workloads with an inner loop; {name} has none (got "
            f"inner_steps={setting.inner_steps}, remat={setting.remat}; leave them at 1 and False)."
        )
    if name == "omniglot-imaml" and setting.remat:
        raise ValueError("remat does not apply to omniglot-imaml: iMAML never differentiates through its inner loop.")
    return WORKLOADS[name](setting)


def run(name: str, *, steps: int = 1000, steps_per_call: int = 1, **setting: Any) -> BenchResult:
    """Times ``steps`` meta-steps of the named workload after one warm-up (compiling) call.

    ``steps_per_call=1`` calls the compiled step once per meta-step, as a Python training loop does;
    ``steps_per_call=k`` runs ``k`` meta-steps in one compiled ``lax.scan``, as ``jmeta train`` does.
    ``setting``: fields of ``Setting`` (``batching``, ``chunk_size``, ``inner_steps``, ``remat``,
    ``compute_dtype``, ``conv``). Raises ``ValueError`` on bad input before compiling.
    """
    steps, steps_per_call = positive_int("steps", steps), positive_int("steps_per_call", steps_per_call)
    if steps % steps_per_call:
        raise ValueError(f"steps ({steps}) must be a multiple of steps_per_call ({steps_per_call}).")
    trainer, state, tasks = workload = build(name, **setting)
    start = time.perf_counter()
    call = _jitted(trainer, steps_per_call).lower(state, tasks).compile()
    state, _ = call(state, tasks)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps // steps_per_call):
        state, _ = call(state, tasks)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - start
    tasks_per_step = jax.tree.leaves(tasks)[0].shape[0]
    xla_flops = float((call.cost_analysis() or {}).get("flops", float("nan")))
    return BenchResult(
        name,
        Setting(**setting),
        steps,
        steps_per_call,
        tasks_per_step,
        compile_s,
        run_s,
        step_flops(workload),
        xla_flops,
    )


def step_flops(workload: Workload) -> float:
    """FLOPs of one meta-step: its matrix products and convolutions, counted on the step's jaxpr with each
    scan body counted once per trip (``jmeta.batching.matmul_and_conv_flops``).

    XLA's ``compiled.cost_analysis()["flops"]`` counts the body of a loop once, whatever its trip count
    (checked on jax 0.10.2: a 10-step scan of a matrix product reports one product's FLOPs), so it
    undercounts a meta-step that loops over tasks (``batching="accumulate"``/``"map"``) or inner steps.
    Elementwise work, which XLA also counts, is left out: a few % for the workloads here.

    Example::

        >>> step_flops(build("sinusoid-maml"))   # doctest: +SKIP
    """
    trainer, state, tasks = workload
    return matmul_and_conv_flops(jax.make_jaxpr(trainer.update)(state, tasks).jaxpr)


def memory(name: str, **setting: Any) -> MemoryResult:
    """XLA's compiled memory of one meta-step of the named workload (nothing is run).

    Example::

        >>> memory("sinusoid-maml", inner_steps=5).total > 0   # doctest: +SKIP
        True
    """
    return step_memory(build(name, **setting))


def step_memory(workload: Workload) -> MemoryResult:
    """XLA's compiled memory of ``workload.trainer``'s meta-step on its state and tasks, as ``jmeta train``
    compiles it (the state donated). Compiles, runs nothing.

    Example::

        >>> step_memory(build("sinusoid-maml")).temp > 0
        True
    """
    trainer, state, tasks = workload
    start = time.perf_counter()
    analysis = _jitted(trainer, 1).lower(state, tasks).compile().memory_analysis()
    compile_s = time.perf_counter() - start
    return MemoryResult(
        int(analysis.argument_size_in_bytes),
        int(analysis.output_size_in_bytes),
        int(analysis.alias_size_in_bytes),
        int(analysis.temp_size_in_bytes),
        compile_s,
    )


def measure_peak_flops(size: int | None = None, seconds: float = 1.0) -> float:
    """The FLOP/s of a ``size`` x ``size`` float32 matrix product on the default device (the best of the
    repetitions run in ``seconds``, after a compiling call), at JAX's default matmul precision (on NVIDIA
    GPUs that may use TF32 tensor cores: see docs/benchmarks.md). ``size``: 2048 on CPU, 8192 elsewhere.

    Example::

        >>> measure_peak_flops(256, seconds=0.1) > 0
        True
    """
    size = positive_int("size", size or (2048 if jax.default_backend() == "cpu" else 8192))
    a, b = jax.random.normal(jax.random.key(0), (2, size, size), jnp.float32)
    product = jax.jit(jnp.matmul).lower(a, b).compile()
    jax.block_until_ready(product(a, b))
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        begin = time.perf_counter()
        jax.block_until_ready(product(a, b))
        best = min(best, time.perf_counter() - begin)
    return 2.0 * size**3 / best


def _jitted(trainer: MetaTrainer, count: int) -> Any:
    """The meta-step, or ``count`` of them fused in one ``lax.scan``, jitted with the state donated."""
    if count == 1:
        return jax.jit(trainer.update, donate_argnums=0)

    def run_steps(state: TrainState, tasks: Task) -> tuple[TrainState, Any]:
        return jax.lax.scan(lambda state, _: trainer.update(state, tasks), state, length=count)

    return jax.jit(run_steps, donate_argnums=0)
