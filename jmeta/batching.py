"""How a batch of tasks is mapped through a per-task function inside one compiled program.

Strategies (the right one depends on backend and model; ``jmeta bench ... --batching`` measures them):

* ``"vmap"``: one vectorised program over all tasks. Best for MLPs everywhere and on GPU/TPU.
  Per-task convolution kernels become grouped convolutions, which XLA:CPU runs slowly.
* ``"map"``: ``lax.map``, a loop inside the program; ``chunk_size`` tasks at a time are vmapped.
* ``"unroll"``: one copy of the per-task program per task. Fast on CPU for convolutions, but the
  compile time grows with the number of tasks.
* ``"auto"``: ``"unroll"`` on CPU when the per-task program contains a convolution, else ``"vmap"``
  (figures behind this rule: docs/batching.md).

Example::

    >>> import jax.numpy as jnp
    >>> per_task = lambda params, state, x: (params * x).sum()
    >>> over_tasks(per_task, "vmap")(2.0, None, jnp.ones((3, 4)))
    Array([8., 8., 8.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from jmeta.validation import one_of, positive_int

STRATEGIES = ("auto", "vmap", "map", "unroll")


def check_strategy(strategy: str, chunk_size: int | None = None) -> None:
    """Validates a batching choice before anything is traced."""
    one_of("batching", strategy, STRATEGIES)
    if chunk_size is not None:
        positive_int("chunk_size", chunk_size)
        if strategy != "map":
            raise ValueError(f"chunk_size only applies to batching='map'; got batching={strategy!r}.")


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
        if chosen == "map":
            return jax.lax.map(lambda task: per_task(params, state, task), tasks, batch_size=chunk_size)
        outputs = [per_task(params, state, _task(tasks, i)) for i in range(_leading(tasks))]
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)

    return batched


def resolve(per_task: Callable[[Any, Any, Any], Any], params: Any, state: Any, tasks: Any) -> str:
    """The strategy ``"auto"`` stands for, given the backend and the per-task program (traced, not run)."""
    if jax.default_backend() != "cpu":
        return "vmap"
    one_task = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tasks)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), (params, state))
    jaxpr = jax.make_jaxpr(per_task)(*shapes, one_task)
    has_conv = any(eqn.primitive.name == "conv_general_dilated" for eqn in _equations(jaxpr.jaxpr))
    return "unroll" if has_conv else "vmap"


def _equations(jaxpr: Any) -> Iterator[Any]:
    """Every equation of a jaxpr, descending into the sub-jaxprs of scans, calls and custom rules."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _leading(tasks: Any) -> int:
    return jax.tree.leaves(tasks)[0].shape[0]


def _task(tasks: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tasks)
