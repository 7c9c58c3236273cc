"""The learner interface shared by every meta-learner, and the differentiable inner loop.

A learner is a ``NamedTuple`` of pure functions, in the manner of an optax ``GradientTransformation``:

* ``init(key) -> (meta_params, model_state)``;
* ``adapt(meta_params, model_state, x, y, steps=None) -> task_params``: the inner loop on a support set;
* ``predict(task_params, model_state, x) -> (y, new_model_state)``;
* ``task_loss(meta_params, model_state, task, steps=None) -> (loss, TaskOutput)``: adapt on the
  task's support set, then the loss on its query set. ``jax.grad`` of it is the meta-gradient.

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
    >>> params, state = learner.init(jax.random.key(0))
    >>> task = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 1, shots=5, queries=10)
    >>> task_params = learner.adapt(params, state, task.support_x[0], task.support_y[0])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import optax

from jmeta.learners.remat import scan_steps
from jmeta.learners.safe_optimizer import safe_derivatives
from jmeta.losses import check_labels
from jmeta.nn import ApplyFn, PyTree
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class TaskOutput(NamedTuple):
    """What ``task_loss`` returns beside the loss: scalar metrics and the model state after the query pass."""

    metrics: dict[str, jax.Array]
    model_state: PyTree


class AdaptFn(Protocol):
    def __call__(
        self, meta_params: PyTree, model_state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None
    ) -> PyTree: ...


class TaskLossFn(Protocol):
    def __call__(
        self, meta_params: PyTree, model_state: PyTree, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]: ...


class Learner(NamedTuple):
    """A meta-learner as four pure functions (see the module docstring), and what it declares of itself:
    ``adapts_network``, whether its inner loop changes the network's parameters (MAML and its kin; not
    ProtoNets), which ``jmeta.evaluate`` uses to warn that BatchNorm's running averages need not fit."""

    init: Callable[[jax.Array], tuple[PyTree, PyTree]]
    adapt: AdaptFn
    predict: ApplyFn
    task_loss: TaskLossFn
    adapts_network: bool = False


def resolve_inner_optimizer(
    inner_lr: float | None,
    optimizer: optax.GradientTransformation | None,
    *,
    from_lr: Callable[[float], optax.GradientTransformation] = optax.sgd,
    described: str = "plain SGD",
) -> optax.GradientTransformation:
    """Resolves the two ways of naming the inner optimiser: a learning rate (for ``from_lr``, plain SGD by
    default, ``described`` in errors), or any optax transformation. The result goes through
    ``safe_derivatives``, so that differentiating through its updates gives finite meta-gradients where a
    support-gradient entry is exactly zero (Adam, RMSProp, Adagrad and the like divide by square roots).

    Example::

        >>> import optax
        >>> isinstance(resolve_inner_optimizer(0.1, None), optax.GradientTransformation)
        True
    """
    if (inner_lr is None) == (optimizer is None):
        raise ValueError(
            f"give exactly one of inner_lr (a float: {described}, e.g. inner_lr=0.01) or inner_optimizer "
            f"(an optax.GradientTransformation, e.g. optax.adam(1e-3)); got inner_lr={inner_lr!r} and "
            f"inner_optimizer={optimizer!r}."
        )
    if optimizer is None:
        return safe_derivatives(from_lr(positive_float("inner_lr", inner_lr)))
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"inner_optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}.")
    return safe_derivatives(optimizer)


def call_apply(apply: ApplyFn, params: PyTree, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
    """Calls a model's ``apply`` and checks, while tracing, that it returned ``(y, new_state)``."""
    out = apply(params, state, x)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            "model.apply(params, state, x) must return a pair (predictions, new_state); got "
            f"{type(out).__name__}. Wrap Flax modules with jmeta.from_linen or jmeta.from_nnx."
        )
    return out


def check_loss_inputs(predictions: jax.Array, targets: jax.Array, where: str) -> None:
    """Raises, while tracing, if predictions and targets do not describe the same points, or if concrete
    class labels lie outside ``0..classes-1`` (``jmeta.losses.check_labels``)."""
    if predictions.shape[:1] != targets.shape[:1]:
        raise ValueError(
            f"the model's predictions on the {where} set have shape {predictions.shape} but the {where} "
            f"targets have shape {targets.shape}: they must have the same number of points (axis 0)."
        )
    check_labels(predictions, targets, f"the {where} labels")


def gradient_inner_loop(
    apply: ApplyFn,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    first_order: bool,
    remat: bool,
) -> Callable[[PyTree, PyTree, jax.Array, jax.Array, int], PyTree]:
    """Builds ``run(params, state, x, y, steps) -> adapted params``: ``steps`` optimiser steps on the
    support loss, traced so that ``jax.grad`` differentiates through them.

    ``first_order`` stops gradients through the inner gradients (first-order MAML). The steps are a rolled
    ``jax.lax.scan`` (compiling in seconds at any number of steps); ``remat`` checkpoints it in nested
    segments (``jmeta.learners.remat``), so that the memory of the meta-gradient grows like the logarithm
    of ``steps`` instead of linearly, for one more forward pass per step and level of nesting. The model state (e.g.
    BatchNorm statistics) is read but not carried between inner steps.
    """

    def support_loss(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        predictions, _ = call_apply(apply, params, state, x)
        check_loss_inputs(predictions, y, "support")
        return loss_fn(predictions, y)

    def run(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int) -> PyTree:
        def step(carry: tuple[PyTree, Any], _: None) -> tuple[tuple[PyTree, Any], None]:
            params, opt_state = carry
            grads = jax.grad(support_loss)(params, state, x, y)
            if first_order:
                grads = jax.lax.stop_gradient(grads)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        if steps == 0:
            return params
        (params, _), _ = scan_steps(step, (params, optimizer.init(params)), None, steps, remat=remat)
        return params

    return run


def query_metrics(
    loss_fn: LossFn, metrics: Mapping[str, LossFn], predictions: jax.Array, targets: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The query loss and every named metric of the query predictions."""
    check_loss_inputs(predictions, targets, "query")
    loss = loss_fn(predictions, targets)
    return loss, {"loss": loss, **{name: fn(predictions, targets) for name, fn in metrics.items()}}


def check_task_metrics(
    learner: Learner, sample_tasks: Callable[[jax.Array, int], Task], required: Mapping[str, str], argument: str
) -> None:
    """Checks, by tracing only (``jax.eval_shape``: nothing is computed or compiled), that ``learner.task_loss``
    on one task drawn by ``sample_tasks(key, 1)`` returns ``(loss, TaskOutput(metrics, state))`` with a scalar
    ``loss`` and scalar ``metrics`` holding ``"loss"`` (the contract of :mod:`jmeta.learners.toolkit`) and
    every name in ``required``, a mapping from a metric's name to what needs it (e.g. ``{"mae": "val_metric"}``).
    ``argument`` names the learner in the error. Raises ValueError naming the metrics returned and those
    required.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
        >>> check_task_metrics(learner, jmeta.tasks.SinusoidSampler(5, 5), {"mae": "val_metric"}, "learner 'maml'")
        Traceback (most recent call last):
        ValueError: the task_loss of learner 'maml' returns the metrics ['loss']; they must hold 'loss' (the query loss) and 'mae' (val_metric).
    """  # noqa: E501
    tasks = jax.eval_shape(lambda key: sample_tasks(key, 1), jax.random.key(0))
    task = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), tasks)
    params, state = jax.eval_shape(learner.init, jax.random.key(0))
    loss, output = jax.eval_shape(learner.task_loss, params, state, task)
    metrics = getattr(output, "metrics", None)
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"the task_loss of {argument} must return (loss, jmeta.learners.toolkit.TaskOutput(metrics, model_state)); "
            f"got ({type(loss).__name__}, {type(output).__name__})."
        )
    wanted = {"loss": "the query loss", **{name: why for name, why in required.items() if name != "loss"}}
    if any(name not in metrics for name in wanted):
        names = " and ".join(f"{name!r} ({why})" for name, why in wanted.items())
        raise ValueError(f"the task_loss of {argument} returns the metrics {sorted(metrics)}; they must hold {names}.")
    shapes = {"loss": loss, **metrics}
    shapes = {name: tuple(getattr(value, "shape", ())) for name, value in shapes.items()}
    if any(shapes.values()):
        raise ValueError(
            f"the task_loss of {argument} must return a scalar loss and scalar metrics (for one task); got the "
            f"shapes {shapes}."
        )


def steps_or_default(steps: int | None, default: int) -> int:
    """The number of inner steps for one call: ``default`` unless overridden (0 means no adaptation)."""
    return default if steps is None else positive_int("steps", steps, allow_zero=True)
