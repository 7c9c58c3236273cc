"""How a batch of tasks is mapped through a per-task function inside one compiled program.

Strategies (the right one depends on backend and model; ``jmeta bench ... --batching`` measures them):

* ``"vmap"``: one vectorised program over all tasks. Best for MLPs everywhere and on GPU/TPU.
  Per-task convolution kernels become grouped convolutions, which XLA:CPU runs slowly.
* ``"map"``: ``lax.map``, a loop inside the program; ``chunk_size`` tasks at a time are vmapped.
* ``"unroll"``: one copy of the per-task program per task. Fast on CPU for XLA convolutions, but the
  compile time grows with the number of tasks.
* ``"accumulate"``: a loop over chunks of ``chunk_size`` tasks (default 1) in which each chunk's
  meta-gradient is computed and summed, as a PyTorch loop of per-task ``backward`` calls does. Nothing
  of one chunk is kept for the next, so the working set is one chunk's: fastest for large per-task
  programs on CPU (caches) and the way to fit meta-batches too large for memory. Without a gradient to
  take (``over_tasks``) it is ``"map"``.
* ``"auto"``: on CPU, ``"unroll"`` when the per-task program contains an XLA convolution,
  ``"accumulate"`` when its matrix products make it large (``LARGE_TASK_FLOPS``), else ``"vmap"``;
  ``"vmap"`` on every other backend (figures behind this rule: docs/batching.md).

Every strategy takes optional task *weights* (``over_tasks_with_mean_grad``, ``task_mean``): the mean over
tasks becomes ``sum_i w_i x_i / sum_i w_i``. A task batch padded to split evenly over devices gives its
padding weight 0 (``jmeta.parallel.pad_with_weights``), so the meta-gradient and metrics are those of the
real tasks.

Example::

    >>> import jax.numpy as jnp
    >>> per_task = lambda params, state, x: (params * x).sum()
    >>> over_tasks(per_task, "vmap")(2.0, None, jnp.ones((3, 4)))
    Array([8., 8., 8.], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.validation import one_of, positive_int

STRATEGIES = ("auto", "vmap", "map", "unroll", "accumulate")
CHUNKED = ("map", "accumulate")
# Matrix-product FLOPs of one task's forward program from which "auto" accumulates on CPU: vmap and
# accumulate cross between 1e6 and 5e6 on 2 cores (MLP sweep in docs/batching.md); an omniglot-maml task has 4.8e8, a
# sinusoid-maml task 1.3e5.
LARGE_TASK_FLOPS = 5e6


def check_strategy(strategy: str, chunk_size: int | None = None) -> None:
    """Validates a batching choice before anything is traced."""
    one_of("batching", strategy, STRATEGIES)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)
        if strategy not in CHUNKED:
            raise ValueError(f"chunk_size only applies to batching='map' or 'accumulate'; got batching={strategy!r}.")


def over_tasks(
    per_task: Callable[[Any, Any, Any], Any], strategy: str = "auto", chunk_size: int | None = None
) -> Callable[[Any, Any, Any], Any]:
    """Lifts ``per_task(params, state, task)`` to ``batched(params, state, tasks)``, stacking outputs.

    ``params`` and ``state`` are shared by all tasks; ``tasks`` has a leading task axis.
    """
    check_strategy(strategy, chunk_size)

    def batched(params: Any, state: Any, tasks: Any) -> Any:
        chosen = resolve(per_task, params, state, tasks) if strategy == "auto" else strategy
        if chosen == "vmap":
            return jax.vmap(per_task, in_axes=(None, None, 0))(params, state, tasks)
        if chosen in CHUNKED:
            return jax.lax.map(lambda task: per_task(params, state, task), tasks, batch_size=chunk_size)
        outputs = [per_task(params, state, _task(tasks, i)) for i in range(_leading(tasks))]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)

    return batched


def over_tasks_with_mean_grad(
    per_task: Callable[[Any, Any, Any], tuple[jax.Array, Any]],
    strategy: str = "auto",
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]:
    """Lifts ``per_task(params, state, task) -> (loss, aux)`` to ``batched(params, state, tasks,
    weights=None) -> ((losses, auxes), grads)``: the per-task outputs stacked over tasks, and the gradient
    with respect to ``params`` of the mean loss, or with ``weights`` (a ``(tasks,)`` float array, ``>= 0``,
    not all 0) of the weighted mean ``sum_i w_i L_i / sum_i w_i`` (see ``task_mean``). A task of weight 0
    is still computed; its gradient enters multiplied by 0, so it must be finite (``0 * nan`` is NaN).

    Example::

        >>> import jax.numpy as jnp
        >>> per_task = lambda w, state, x: ((w * x).sum(), None)
        >>> (losses, _), grad = over_tasks_with_mean_grad(per_task, "accumulate")(2.0, None, jnp.ones((3, 4)))
        >>> losses, grad
        (Array([8., 8., 8.], dtype=float32), Array(4., dtype=float32))
        >>> tasks = jnp.arange(3.0)[:, None] * jnp.ones((3, 4))        # task i sums to 4 i
        >>> _, grad = over_tasks_with_mean_grad(per_task, "vmap")(2.0, None, tasks, jnp.array([1.0, 1.0, 0.0]))
        >>> float(grad)                                                  # (0 + 4) / 2
        2.0
    """
    check_strategy(strategy, chunk_size)

    def batched(params: Any, state: Any, tasks: Any, weights: jax.Array | None = None) -> tuple[Any, Any]:
        check_weights(weights, _leading(tasks))
        weights = None if weights is None else jnp.asarray(weights)
        chosen = resolve(per_task, params, state, tasks) if strategy == "auto" else strategy
        if chosen == "accumulate":
            return _accumulated(per_task, params, state, tasks, weights, chunk_size or 1)
        mapped = over_tasks(per_task, chosen, chunk_size)

        def mean_loss(params: Any) -> tuple[jax.Array, Any]:
            outputs = mapped(params, state, tasks)
            return task_mean(outputs[0], weights), outputs

        (_, outputs), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
        return outputs, grads

    return batched


def task_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """The mean of ``values`` (shape ``(tasks, ...)``) over its leading task axis; with ``weights`` (shape
    ``(tasks,)``, ``>= 0``, not all 0) the weighted mean ``sum_i w_i values_i / sum_i w_i``, in the dtype of
    ``values``. Weights of 1 for real tasks and 0 for padding give the mean over the real tasks.

    Example::

        >>> import jax.numpy as jnp
        >>> task_mean(jnp.array([1.0, 2.0, 9.0]), jnp.array([1.0, 1.0, 0.0]))
        Array(1.5, dtype=float32)
    """
    if weights is None:
        return jnp.mean(values, 0)
    weights = jnp.asarray(weights)
    return _weighted_sum(values, weights) / jnp.sum(weights).astype(values.dtype)


def _weighted_sum(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """``values`` summed over the leading axis, each slice times its weight (all 1 without ``weights``)."""
    if weights is None:
        return values.sum(0)
    return jnp.sum(jnp.reshape(weights, (-1,) + (1,) * (values.ndim - 1)).astype(values.dtype) * values, 0)


def check_weights(weights: Any, count: int) -> None:
    """Raises ``ValueError`` unless ``weights`` is ``None`` or a ``(count,)`` array of real numbers, and, when
    its values are known (not traced), unless they are finite, ``>= 0`` and not all 0.

    Example::

        >>> check_weights([1.0, -1.0], 2)
        Traceback (most recent call last):
        ValueError: weights must be finite and >= 0; got [ 1. -1.].
    """
    if weights is None:
        return
    if not isinstance(weights, jax.Array):
        weights = np.asarray(weights)
    shape, dtype = weights.shape, weights.dtype
    if shape != (count,) or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(
            f"weights must be a ({count},) array of real numbers, one per task of the batch; got shape {shape} "
            f"and dtype {dtype}."
        )
    if isinstance(weights, jax.core.Tracer) or (isinstance(weights, jax.Array) and not weights.is_fully_addressable):
        return  # values unknown here, or not all on this process
    values = np.asarray(weights, np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"weights must be finite and >= 0; got {values}.")
    if not np.any(values > 0):
        raise ValueError(f"weights must not all be 0 (the mean over no task is undefined); got {values}.")


def _accumulated(
    per_task: Callable[..., Any], params: Any, state: Any, tasks: Any, weights: jax.Array | None, chunk: int
) -> tuple[Any, Any]:
    """Per-task outputs and the (weighted) mean gradient, summed over a loop of ``chunk``-task chunks."""
    chunk_outputs_and_grads = jax.vmap(jax.value_and_grad(per_task, has_aux=True), in_axes=(None, None, 0))

    def add_chunk(total: Any, chunk_inputs: tuple[Any, Any]) -> tuple[Any, Any]:
        chunk_tasks, chunk_weights = chunk_inputs
        outputs, grads = chunk_outputs_and_grads(params, state, chunk_tasks)
        return jax.tree.map(lambda t, g: t + _weighted_sum(g, chunk_weights), total, grads), outputs

    count = _leading(tasks)
    whole = count - count % chunk
    # Chunk i holds tasks i, i + whole/chunk, ...: with tasks sharded over devices in contiguous blocks (and
    # chunk a multiple of the device count), every device loops over its own tasks.
    inputs = (tasks, weights)
    chunks = jax.tree.map(lambda a: a[:whole].reshape(chunk, whole // chunk, *a.shape[1:]).swapaxes(0, 1), inputs)
    # Two chunks per loop iteration let XLA overlap one chunk's memory-bound work with the other's matrix
    # products: omniglot-maml 61 -> 66 tasks/s on 2 CPU cores, compile 6 -> 8.5 s (docs/batching.md).
    total, outputs = jax.lax.scan(add_chunk, jax.tree.map(jnp.zeros_like, params), chunks, unroll=2)
    outputs = jax.tree.map(lambda a: a.swapaxes(0, 1).reshape(whole, *a.shape[2:]), outputs)
    if whole < count:
        total, rest = add_chunk(total, jax.tree.map(lambda a: a[whole:], inputs))
        outputs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outputs, rest)
    normaliser = count if weights is None else jnp.sum(weights)
    return outputs, jax.tree.map(lambda t: t / jnp.asarray(normaliser, t.dtype), total)


def resolve(per_task: Callable[[Any, Any, Any], Any], params: Any, state: Any, tasks: Any) -> str:
    """The strategy ``"auto"`` stands for, given the backend and the per-task program (traced, not run)."""
    if jax.default_backend() != "cpu":
        return "vmap"
    one_task = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tasks)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), (params, state))
    jaxpr = jax.make_jaxpr(per_task)(*shapes, one_task).jaxpr
    if any(eqn.primitive.name == "conv_general_dilated" for eqn, _ in _equations(jaxpr)):
        return "unroll"
    return "accumulate" if matmul_flops(jaxpr) >= LARGE_TASK_FLOPS else "vmap"


def matmul_flops(jaxpr: Any) -> float:
    """FLOPs of the matrix products (``dot_general``) a jaxpr runs, counting loop bodies once per trip.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> matmul_flops(jax.make_jaxpr(jnp.matmul)(jnp.ones((2, 3)), jnp.ones((3, 4))).jaxpr)
        48.0
    """
    return _flops(jaxpr, lambda eqn: _dot_flops(eqn) if eqn.primitive.name == "dot_general" else 0.0)


def matmul_and_conv_flops(jaxpr: Any) -> float:
    """FLOPs of the matrix products and convolutions (``conv_general_dilated``) a jaxpr runs, 2 per
    multiply-add: the work a FLOP-utilisation figure counts. A scan body counts once per trip, a ``while``
    body once (its trip count is not known when tracing), a ``cond`` as its costliest branch.

    A convolution's output element is a dot product over the kernel's entries per output feature, of
    which a transposed convolution (``lhs_dilation``, in gradients of strided ones) meets one in
    ``prod(lhs_dilation)`` on average; padding is counted (XLA's cost analysis leaves it out: a few % less).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> conv = lambda x, k: jax.lax.conv(x, k, (1, 1), "VALID")
        >>> matmul_and_conv_flops(jax.make_jaxpr(conv)(jnp.ones((1, 3, 5, 5)), jnp.ones((8, 3, 3, 3))).jaxpr)
        3888.0
    """

    def product_flops(eqn: Any) -> float:
        if eqn.primitive.name == "dot_general":
            return _dot_flops(eqn)
        if eqn.primitive.name != "conv_general_dilated":
            return 0.0
        kernel = eqn.invars[1].aval.shape
        out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
        taps = math.prod(kernel) / out_features / math.prod(eqn.params["lhs_dilation"])
        return 2.0 * math.prod(eqn.outvars[0].aval.shape) * taps

    return _flops(jaxpr, product_flops)


def _dot_flops(eqn: Any) -> float:
    (contracting, _), _ = eqn.params["dimension_numbers"]
    contracted = math.prod(eqn.invars[0].aval.shape[d] for d in contracting)
    return 2.0 * contracted * math.prod(eqn.outvars[0].aval.shape)


def _flops(jaxpr: Any, eqn_flops: Callable[[Any], float]) -> float:
    """``eqn_flops`` summed over a jaxpr: scan bodies times their length, a cond's costliest branch."""
    total = 0.0
    for eqn in jaxpr.eqns:
        inner = [_flops(sub, eqn_flops) for sub in _sub_jaxprs(eqn)]
        if eqn.primitive.name == "cond":
            total += max(inner, default=0.0)
        else:
            trips = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
            total += eqn_flops(eqn) + trips * sum(inner)
    return total


def _equations(jaxpr: Any, trips: int = 1) -> Iterator[tuple[Any, int]]:
    """Every equation of a jaxpr with how often it runs, descending into the sub-jaxprs of scans, calls
    and custom rules (a ``while`` body counts once: its trip count is not known when tracing)."""
    for eqn in jaxpr.eqns:
        yield eqn, trips
        inner_trips = trips * eqn.params.get("length", 1) if eqn.primitive.name == "scan" else trips
        for inner in _sub_jaxprs(eqn):
            yield from _equations(inner, inner_trips)


def _sub_jaxprs(eqn: Any) -> list[Any]:
    """The jaxprs in an equation's parameters (a scan's body, a cond's branches, a call's function)."""
    found = []
    for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
            inner = getattr(sub, "jaxpr", sub)
            if hasattr(inner, "eqns"):
                found.append(inner)
    return found


def _leading(tasks: Any) -> int:
    return jax.tree.leaves(tasks)[0].shape[0]


def _task(tasks: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tasks)
