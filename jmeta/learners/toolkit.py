"""The learner toolkit: what jmeta's own learners are built from, public for yours (docs/your-own-learner.md).

**The contract.** A learner is a :class:`Learner` of four pure functions, plus what it declares of itself:

* ``init(key) -> (meta_params, model_state)``: called once by ``jmeta.meta_trainer`` (and ``jmeta.load_run``
  to know the shapes a checkpoint holds);
* ``adapt(meta_params, model_state, x, y, steps=None) -> task_params``: the inner loop on one task's support
  set ``x`` ``(points, *input_shape)``, ``y`` ``(points,)`` int labels or ``(points, outputs)`` targets;
  ``steps`` overrides the learner's default number of inner steps for this call (``jmeta.evaluate`` passes
  each of its ``steps``; ``None``: the default);
* ``predict(task_params, model_state, x) -> (predictions, new_model_state)``: used by ``jmeta predict``
  and ``jmeta.runs.predict``;
* ``task_loss(meta_params, model_state, task, steps=None) -> (loss, TaskOutput(metrics, model_state))``:
  adapt on ``task``'s support set, then the query loss. The meta-trainer differentiates it
  (``jax.grad``), averages it over the task batch and logs every entry of ``metrics``; ``metrics`` must hold
  ``"loss"`` (the query loss) and scalar float32 values; ``jmeta.evaluate`` estimates each of them.
* ``adapts_network``: whether the inner loop changes the network's parameters (``jmeta.evaluate`` then warns
  that BatchNorm's running averages need not fit adapted networks).

Every function works on ONE task; jmeta maps them over the task batch (``jmeta.batching``) and the devices.

**The building blocks.** :func:`gradient_inner_loop` (the differentiable inner loop: any optax optimiser made
safe to differentiate by :func:`resolve_inner_optimizer`/:func:`safe_derivatives`, a rolled scan, ``remat`` in
nested checkpointed segments via :func:`scan_steps`, first-order option), :func:`query_metrics` (the query loss
and named metrics, with the label check :func:`check_loss_inputs`), :func:`call_apply` (calls a model and
checks it returned ``(predictions, state)``), :func:`steps_or_default` (per-call ``steps``), and
:func:`with_compute_dtype` (a model whose passes run in bfloat16 with float32 parameters; ``jmeta train``
wraps every config's model with it, so a registered learner gets ``compute_dtype`` for free).

To use a learner from configs and every ``jmeta`` command, register a builder with
:func:`jmeta.register_learner`. :mod:`jmeta.learners.cavia` is a complete example built only from this module.

Example::

    >>> import jax, jax.numpy as jnp, optax, jmeta
    >>> from jmeta.learners.toolkit import Learner, TaskOutput, gradient_inner_loop, query_metrics
    >>> model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 1)))
    >>> inner = gradient_inner_loop(model.apply, jmeta.losses.mse, optax.sgd(0.1), first_order=False, remat=False)
    >>> def adapt(params, state, x, y, steps=None):
    ...     return inner(params, state, x, y, 1 if steps is None else steps)
    >>> def task_loss(params, state, task, steps=None):
    ...     predictions, state = model.apply(adapt(params, state, task.support_x, task.support_y, steps), state,
    ...                                      task.query_x)
    ...     loss, metrics = query_metrics(jmeta.losses.mse, {}, predictions, task.query_y)
    ...     return loss, TaskOutput(metrics, state)
    >>> learner = Learner(model.init, adapt, model.apply, task_loss, adapts_network=True)
    >>> state = jmeta.meta_trainer(learner, optax.adam(1e-3)).init(jax.random.key(0))
"""

from jmeta.learners.base import (
    Learner,
    LossFn,
    TaskOutput,
    call_apply,
    check_loss_inputs,
    gradient_inner_loop,
    query_metrics,
    resolve_inner_optimizer,
    steps_or_default,
)
from jmeta.learners.remat import scan_steps
from jmeta.learners.safe_optimizer import safe_derivatives
from jmeta.nn import with_compute_dtype

__all__ = [
    "Learner",
    "LossFn",
    "TaskOutput",
    "call_apply",
    "check_loss_inputs",
    "gradient_inner_loop",
    "query_metrics",
    "resolve_inner_optimizer",
    "safe_derivatives",
    "scan_steps",
    "steps_or_default",
    "with_compute_dtype",
]
