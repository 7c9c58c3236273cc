"""Meta-SGD (Li, Zhou, Chen & Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", 2017).

Meta-SGD meta-learns, beside the initial parameters, one inner learning rate per parameter entry: the inner
step is ``params - lrs * grad`` (elementwise; a learned rate may turn negative, learning the direction too).
The meta-parameters are ``MetaSGDParams(params, lrs)``, ``lrs`` a pytree of the shape of ``params``
initialised to ``inner_lr``; ``adapt`` returns plain model parameters, so ``predict`` is the model's own
``apply``. The meta-gradient differentiates through the inner loop (second order by default).

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.learners.metasgd(model, jmeta.losses.mse, inner_lr=0.01)
    >>> meta_params, state = learner.init(jax.random.key(0))
    >>> meta_params.lrs["Dense_0"]["kernel"].shape == meta_params.params["Dense_0"]["kernel"].shape
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta.learners.base import Learner, LossFn, TaskOutput, gradient_inner_loop, steps_or_default
from jmeta.learners.common import check_bool, query_pass
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int


class MetaSGDParams(NamedTuple):
    """Meta-SGD's meta-parameters: the initial model parameters and a learning rate for each of their entries."""

    params: PyTree
    lrs: PyTree


def per_entry_sgd(lrs: PyTree) -> optax.GradientTransformation:
    """SGD with a learning rate per parameter entry: the update is ``-lrs * grad``.

    Example::

        >>> import jax.numpy as jnp
        >>> opt = per_entry_sgd({"w": jnp.array([0.1, 1.0])})
        >>> updates, _ = opt.update({"w": jnp.array([1.0, 1.0])}, opt.init(None))
        >>> updates["w"]
        Array([-0.1, -1. ], dtype=float32)
    """
    return optax.stateless(lambda grads, params=None: jax.tree.map(lambda lr, g: -lr * g, lrs, grads))


def metasgd(
    model: Model,
    loss_fn: LossFn,
    inner_lr: float = 0.01,
    steps: int = 1,
    *,
    first_order: bool = False,
    remat: bool = False,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Meta-SGD: MAML with a meta-learned learning rate for every parameter entry.

    Args:
      model: a ``jmeta.Model``.
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task, used in both loops.
      inner_lr: the initial value of every learned inner learning rate.
      steps: inner steps during meta-training (``adapt`` and ``task_loss`` accept a per-call override);
        the paper uses one.
      first_order: drop the second-order terms (the rates are still learned through the last step).
      remat: checkpoint the inner loop in nested segments (``jmeta.learners.remat``): memory grows like
        ``log(steps)``, not linearly.
      metrics: extra ``name -> fn(predictions, targets)`` reported on the query set.
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner`` whose meta-parameters are ``MetaSGDParams(params, lrs)``.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
        >>> learner = jmeta.learners.metasgd(model, jmeta.losses.mse, inner_lr=0.01, first_order=True)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    inner_lr = positive_float("inner_lr", inner_lr)
    default_steps = positive_int("steps", steps)
    first_order, remat = check_bool("first_order", first_order), check_bool("remat", remat)
    metrics = dict(metrics or {})

    def init(key: jax.Array) -> tuple[MetaSGDParams, PyTree]:
        params, state = model.init(key)
        return MetaSGDParams(params, jax.tree.map(lambda p: jnp.full_like(p, inner_lr), params)), state

    def adapt(
        meta_params: MetaSGDParams, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None
    ) -> PyTree:
        run = gradient_inner_loop(
            model.apply, loss_fn, per_entry_sgd(meta_params.lrs), first_order=first_order, remat=remat
        )
        return run(meta_params.params, state, x, y, steps_or_default(steps, default_steps))

    def task_loss(
        meta_params: MetaSGDParams, state: PyTree, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        adapted = adapt(meta_params, state, task.support_x, task.support_y, steps)
        return query_pass(model.apply, loss_fn, metrics, adapted, state, task)

    return Learner(init=init, adapt=adapt, predict=model.apply, task_loss=task_loss, adapts_network=True)
