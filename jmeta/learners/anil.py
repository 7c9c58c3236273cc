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

import optax

from jmeta.learners.base import Learner, LossFn
from jmeta.learners.common import PathPredicate, subset_learner
from jmeta.nn import Model, PyTree


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
    return subset_learner(
        model,
        loss_fn,
        head,
        "head",
        invert=False,
        inner_lr=inner_lr,
        steps=steps,
        inner_optimizer=inner_optimizer,
        first_order=first_order,
        remat=remat,
        metrics=metrics,
        compute_dtype=compute_dtype,
    )
