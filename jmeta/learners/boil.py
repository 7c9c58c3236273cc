"""BOIL, Body Only update in Inner Loop (Oh, Yoo, Kim & Yun, "BOIL: Towards Representation Change for
Few-shot Learning", ICLR 2021).

The complement of ANIL: the *head* (usually the last, linear layer) is frozen in the inner loop and only
the *body* adapts, so that adaptation must change the representation rather than reuse it. The outer loop
learns every parameter, the head through the query pass (it reaches the body's inner updates too, second
order by default). ``head`` names the frozen subset: a predicate over parameter paths, e.g.
``lambda path: path[0] == "head"``, or a pytree of bools with the parameters' structure; everything else
adapts.

The result equals MAML with an inner optimiser that leaves the head alone, e.g.
``optax.multi_transform({"body": inner, "head": optax.set_to_zero()}, labels)``, without forming the head's
support gradient. The meta-parameters and the adapted parameters are plain model parameters.

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.learners.boil(model, jmeta.losses.mse, head=lambda path: path[0] == "Dense_2", inner_lr=0.1)
    >>> params, state = learner.init(jax.random.key(0))
    >>> task = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 1, shots=5, queries=5)
    >>> adapted = learner.adapt(params, state, task.support_x[0], task.support_y[0])
    >>> bool((adapted["Dense_2"]["kernel"] == params["Dense_2"]["kernel"]).all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import optax

from jmeta.learners.base import Learner, LossFn
from jmeta.learners.common import PathPredicate, subset_learner
from jmeta.nn import Model, PyTree


def boil(
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
    """BOIL: MAML whose inner loop adapts every parameter except those ``head`` selects.

    Args:
      model: a ``jmeta.Model``.
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task, used in both loops.
      head: the parameters frozen in the inner loop: ``head(path) -> bool`` for each parameter path (a tuple
        of names, e.g. ``("Dense_2", "kernel")``), or a pytree of bools with the parameters' structure. It
        must select at least one parameter array and leave at least one out (the body, which adapts).
      inner_lr: learning rate of plain SGD on the body in the inner loop; or give ``inner_optimizer`` instead.
      steps: inner steps during meta-training (``adapt`` and ``task_loss`` accept a per-call override).
      inner_optimizer: any optax transformation for the body's inner loop; its update is differentiated through.
      first_order: drop second-order terms.
      remat: checkpoint the inner loop in nested segments (``jmeta.learners.remat``): memory grows like
        ``log(steps)``, not linearly.
      metrics: extra ``name -> fn(predictions, targets)`` reported on the query set.
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner`` over plain model parameters; ``adapt`` returns them with the body adapted and the
      head as given.

    Raises:
      ValueError: ``head`` selects no parameter array, or all of them; ``inner_lr`` and ``inner_optimizer``
        are both given or both missing; ``steps`` is not a positive integer; ``compute_dtype`` is unknown.
      TypeError: ``head`` returns a non-bool, ``inner_optimizer`` is not an optax transformation,
        ``first_order`` or ``remat`` is not a bool.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.Conv4(num_classes=5), jnp.zeros((1, 28, 28, 1)))
        >>> learner = jmeta.learners.boil(model, jmeta.losses.cross_entropy, lambda p: p[0] == "head", 0.5)
    """
    return subset_learner(
        model,
        loss_fn,
        head,
        "head",
        invert=True,
        inner_lr=inner_lr,
        steps=steps,
        inner_optimizer=inner_optimizer,
        first_order=first_order,
        remat=remat,
        metrics=metrics,
        compute_dtype=compute_dtype,
    )
