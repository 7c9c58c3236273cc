"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse? Towards
Understanding the Effectiveness of MAML", ICLR 2020).

Only the *head* (a subset of the parameters, usually the last layer) adapts in the inner loop; the *body*
is shared by all tasks and learned by the outer loop alone, through the head's inner updates (second
order by default) and the query pass. ``head`` names the subset: a predicate over parameter paths, e.g.
``lambda path: path[0] == "head"``, or a pytree of bools with the parameters' structure.

The inner loop differentiates the support loss with respect to the head only (the body's gradient is
never formed). The result equals MAML with an inner optimiser that leaves the body alone, e.g.
``optax.multi_transform({"head": inner, "body": optax.set_to_zero()}, labels)``, at a lower cost.
The meta-parameters and the adapted parameters are plain model parameters.

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.learners.anil(model, jmeta.losses.mse, head=lambda path: path[0] == "Dense_2", inner_lr=0.1)
    >>> params, state = learner.init(jax.random.key(0))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax

from jmeta.learners.base import (
    Learner,
    LossFn,
    TaskOutput,
    gradient_inner_loop,
    resolve_inner_optimizer,
    steps_or_default,
)
from jmeta.learners.common import (
    PathPredicate,
    abstract_init,
    check_bool,
    combine,
    count_selected,
    leaf_paths,
    partition,
    query_pass,
    select,
)
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


def anil(
    model: Model,
    loss_fn: LossFn,
    head: PathPredicate | PyTree,
    inner_lr: float | None = None,
    steps: int = 1,
    *,
    inner_optimizer: optax.GradientTransformation | None = None,
    first_order: bool = False,
    remat: bool = False,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """ANIL: MAML whose inner loop adapts only the parameters that ``head`` selects.

    Args:
      model: a ``jmeta.Model``.
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task, used in both loops.
      head: the parameters to adapt: ``head(path) -> bool`` for each parameter path (a tuple of names,
        e.g. ``("Dense_2", "kernel")``), or a pytree of bools with the parameters' structure. It must
        select at least one parameter array.
      inner_lr: learning rate of plain SGD in the inner loop; or give ``inner_optimizer`` instead.
      steps: inner steps during meta-training (``adapt`` and ``task_loss`` accept a per-call override).
      inner_optimizer: any optax transformation for the head's inner loop.
      first_order: drop second-order terms.
      remat: checkpoint the inner loop in nested segments (``jmeta.learners.remat``): memory grows like
        ``log(steps)``, not linearly.
      metrics: extra ``name -> fn(predictions, targets)`` reported on the query set.
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner`` over plain model parameters.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.Conv4(num_classes=5), jnp.zeros((1, 28, 28, 1)))
        >>> learner = jmeta.learners.anil(model, jmeta.losses.cross_entropy, lambda p: p[0] == "head", 0.1, 10)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    default_steps = positive_int("steps", steps)
    optimizer = resolve_inner_optimizer(inner_lr, inner_optimizer)
    first_order, remat = check_bool("first_order", first_order), check_bool("remat", remat)
    metrics = dict(metrics or {})
    params_shape, _ = abstract_init(model)
    mask = select(head, params_shape, "head")
    if count_selected(mask) == 0:
        raise ValueError(
            f"head must select at least one parameter array; it selected none of {leaf_paths(params_shape)}."
        )

    def adapt(params: PyTree, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> Any:
        head_params, body = partition(params, mask)
        run = gradient_inner_loop(
            lambda h, s, inputs: model.apply(combine(h, body), s, inputs),
            loss_fn,
            optimizer,
            first_order=first_order,
            remat=remat,
        )
        return combine(run(head_params, state, x, y, steps_or_default(steps, default_steps)), body)

    def task_loss(params: PyTree, state: PyTree, task: Task, steps: int | None = None) -> tuple[jax.Array, TaskOutput]:
        adapted = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(model.apply, loss_fn, metrics, adapted, state, task)

    return Learner(init=model.init, adapt=adapt, predict=model.apply, task_loss=task_loss, adapts_network=True)
