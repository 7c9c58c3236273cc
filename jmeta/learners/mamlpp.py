"""MAML++ (Antoniou, Edwards & Storkey, "How to train your MAML", ICLR 2019), each part switchable.

* **MSL**, multi-step loss (``msl_steps > 0``): the meta-loss is ``sum_i w_i L_Q(phi_i)`` over the query
  losses after every inner step ``i``. The weights start uniform and are annealed linearly, over the
  first ``msl_steps`` meta-training steps, to ``(0, ..., 0, 1)`` (the last step only); see ``msl_weights``.
* **DA**, derivative-order annealing (``first_order_steps > 0``): the first ``first_order_steps``
  meta-training steps are first order, the later ones second order.
* **LSLR** (``lslr=True``): learned per-layer, per-step inner learning rates: one rate per parameter
  array (pytree leaf) and inner step, initialised to ``inner_lr``.
* **BNWB** (``bnwb=True``): per-step BatchNorm weights and biases: every BatchNorm parameter has a copy
  per inner step, used by the passes of that step; these copies are meta-learned and not adapted in the
  inner loop.
* **BNRS** (``bnrs=True``): per-step BatchNorm running statistics: every BatchNorm statistic has a copy per
  inner step, read and updated by the passes of that step.
* **CA**, cosine annealing of the meta learning rate: ``mamlpp_meta_optimizer``.

Training progress. MSL and DA depend on the meta-training step, and ``meta_trainer`` must stay
unchanged. Keeping the progress in the meta-parameters would let the optax optimiser change it, and
rebuilding ``task_loss`` when the schedule moves would recompile. So the progress is an integer in the
*model state*, ``MAMLPPState(model, step)``: ``task_loss`` reads ``step`` and returns it plus one, and
``meta_trainer`` carries the model state returned by ``task_loss`` into its next step, so ``step``
counts meta-training steps (evaluation, which discards the returned state, does not advance it). Set it
with ``state._replace(step=jnp.asarray(n, jnp.int32))``, e.g. to resume. ``task_loss`` switches between
its (at most four) first/second-order and with/without-MSL programs with ``lax.switch`` on ``step``, so
one compiled meta-step serves the whole run and only the selected program runs.

Step indices. ``steps`` (the training inner steps ``K``) sizes the per-step copies. Inner step ``i`` uses
copy ``min(i, K - 1)``, so ``adapt``/``task_loss`` may be asked for more steps than ``K`` (the last copy
is reused). The query pass after the last step ``k - 1`` uses copy ``min(max(k - 1, 0), K - 1)``.

BatchNorm parameters and statistics are recognised by their paths: by default any path with a name
containing ``"batchnorm"`` or having ``"bn"`` as a word (case-insensitive), as in Flax Linen's
``BatchNorm_0``, jmeta's ``Conv4`` (``bn0``..``bn3``) and ``ResNet12`` (``conv1_bn``); give
``batch_norm=lambda path: ...`` for other models. Without BNRS,
the model state is handled as by ``maml``: read, not carried, by the inner loop; the query pass's state
is returned.

Representations: meta-parameters ``MAMLPPParams(params, lrs)`` (``params`` the model parameters, the
BatchNorm ones with a leading ``(K,)`` axis under BNWB; ``lrs`` a ``(K,)`` vector per adapted parameter
array under LSLR, else ``None``); ``adapt`` returns ``MAMLPPAdapted(params, index)``: plain model
parameters and the per-step copy of the statistics that ``predict`` uses.

Example::

    >>> import jax, jax.numpy as jnp, optax
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    >>> learner = jmeta.learners.mamlpp(model, jmeta.losses.mse, inner_lr=0.01, steps=5, msl_steps=100,
    ...                                 first_order_steps=50)
    >>> trainer = jmeta.meta_trainer(learner, jmeta.learners.mamlpp_meta_optimizer(1e-3, steps=1000))
    >>> state = trainer.init(jax.random.key(0))
    >>> state, metrics = trainer.step(state, jmeta.tasks.sinusoid_tasks(jax.random.key(1), 5, shots=10, queries=10))
    >>> int(state.model_state.step)
    1
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta.learners.base import (
    Learner,
    LossFn,
    TaskOutput,
    call_apply,
    check_loss_inputs,
    query_metrics,
    steps_or_default,
)
from jmeta.learners.common import (
    Path,
    PathPredicate,
    abstract_init,
    check_bool,
    combine,
    count_selected,
    leaf_paths,
    non_negative_float,
    partition,
    query_pass,
    select,
)
from jmeta.learners.remat import scan_steps
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int


class MAMLPPParams(NamedTuple):
    """MAML++'s meta-parameters: model ``params`` (BatchNorm ones stacked per step under BNWB) and the
    per-step learning rates ``lrs`` (``None`` without LSLR)."""

    params: PyTree
    lrs: PyTree


class MAMLPPState(NamedTuple):
    """MAML++'s model state: the model's own (BatchNorm statistics stacked per step under BNRS) and the
    meta-training ``step`` that the MSL and derivative-order schedules read."""

    model: PyTree
    step: jax.Array


class MAMLPPAdapted(NamedTuple):
    """Adapted parameters: plain model ``params`` and the ``index`` of the per-step statistics to use."""

    params: PyTree
    index: jax.Array


BATCH_NORM_NAME = re.compile(r"batchnorm|(^|_)bn(\d|_|$)", re.IGNORECASE)


def is_batch_norm(path: Path) -> bool:
    """The default BatchNorm test: a name in ``path`` contains ``"batchnorm"`` or has ``"bn"`` as a word
    (``bn``, ``bn0``, ``conv1_bn``, ``bn_2``; any case), as Flax Linen's ``BatchNorm_0`` and jmeta's models do.

    Example::

        >>> is_batch_norm(("BatchNorm_0", "scale")), is_batch_norm(("bn1", "bias")), is_batch_norm(("subnet", "bias"))
        (True, True, False)
    """
    return any(isinstance(name, str) and BATCH_NORM_NAME.search(name) is not None for name in path)


def msl_weights(step: jax.Array | int, steps: int, anneal_steps: int) -> jax.Array:
    """The multi-step-loss weights of the ``steps`` inner steps at meta-training step ``step``.

    Every non-final weight falls linearly from ``1 / steps`` (at step 0) to 0 (from ``anneal_steps`` on);
    the final one is the rest, so the weights always sum to 1. ``step`` may be traced.

    Example::

        >>> msl_weights(0, 4, 10), msl_weights(5, 4, 10), msl_weights(10, 4, 10)
        (Array([0.25, 0.25, 0.25, 0.25], dtype=float32), Array([0.125, 0.125, 0.125, 0.625], dtype=float32), \
Array([0., 0., 0., 1.], dtype=float32))
    """
    steps = positive_int("steps", steps)
    anneal_steps = positive_int("anneal_steps", anneal_steps)
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / anneal_steps, 0.0, 1.0)
    early = (1.0 - progress) / steps
    return jnp.full((steps,), early).at[-1].set(1.0 - (steps - 1) * early)


def mamlpp_meta_optimizer(learning_rate: float, steps: int, final: float = 0.0) -> optax.GradientTransformation:
    """MAML++'s meta-optimiser with cosine annealing (CA): Adam whose learning rate follows a cosine from
    ``learning_rate`` to ``final`` over ``steps`` meta-steps (then stays at ``final``).

    Example::

        >>> opt = mamlpp_meta_optimizer(1e-3, steps=50_000, final=1e-5)
    """
    learning_rate = positive_float("learning_rate", learning_rate)
    steps = positive_int("steps", steps)
    final = non_negative_float("final", final)
    if final > learning_rate:
        raise ValueError(f"final must be at most learning_rate ({learning_rate}); got {final}.")
    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=final / learning_rate))


def mamlpp(
    model: Model,
    loss_fn: LossFn,
    inner_lr: float = 0.01,
    steps: int = 5,
    *,
    msl_steps: int = 0,
    first_order_steps: int = 0,
    lslr: bool = True,
    bnwb: bool = False,
    bnrs: bool = False,
    batch_norm: PathPredicate = is_batch_norm,
    remat: bool = False,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """MAML++ (see the module docstring for each part and for how training progress is carried).

    Args:
      model: a ``jmeta.Model``.
      loss_fn: ``loss_fn(predictions, targets) -> scalar`` for one task, used in both loops.
      inner_lr: the inner SGD learning rate (the initial value of every rate under LSLR).
      steps: inner steps ``K`` during meta-training; sizes the per-step rates and BatchNorm copies.
      msl_steps: meta-training steps over which the multi-step-loss weights anneal to the last step only;
        0 disables MSL.
      first_order_steps: meta-training steps trained first order before switching to second order;
        0 trains second order throughout.
      lslr: learn a rate per parameter array and inner step.
      bnwb: per-step BatchNorm weights and biases (the model must have BatchNorm parameters).
      bnrs: per-step BatchNorm running statistics (the model state must have BatchNorm statistics).
      batch_norm: ``batch_norm(path) -> bool``, which parameter and state paths are BatchNorm's.
      remat: checkpoint the inner loop in nested segments (``jmeta.learners.remat``): the meta-gradient's
        memory grows like ``log(steps)``, not linearly.
      metrics: extra ``name -> fn(predictions, targets)`` reported on the query set after the last step.
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's forward and backward passes
        (``jmeta.nn.with_compute_dtype``); parameters, optimiser states and losses stay float32.

    Returns:
      A ``jmeta.Learner``: ``init`` gives ``(MAMLPPParams, MAMLPPState)``, ``adapt`` ``MAMLPPAdapted``.
      ``task_loss`` returns the MSL-weighted loss (the plain query loss without MSL); its
      ``metrics["loss"]`` is always the query loss after the last inner step.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.Conv4(num_classes=5), jnp.zeros((1, 28, 28, 1)))
        >>> learner = jmeta.learners.mamlpp(model, jmeta.losses.cross_entropy, 0.1, 5, msl_steps=10_000,
        ...                                 first_order_steps=5_000, bnwb=True, bnrs=True)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    inner_lr = positive_float("inner_lr", inner_lr)
    num_steps = positive_int("steps", steps)
    msl_steps = positive_int("msl_steps", msl_steps, allow_zero=True)
    first_order_steps = positive_int("first_order_steps", first_order_steps, allow_zero=True)
    lslr, bnwb, bnrs = check_bool("lslr", lslr), check_bool("bnwb", bnwb), check_bool("bnrs", bnrs)
    remat = check_bool("remat", remat)
    if not callable(batch_norm):
        raise TypeError(f"batch_norm must be a predicate over paths, batch_norm(path) -> bool; got {batch_norm!r}.")
    metrics = dict(metrics or {})
    params_shape, state_shape = abstract_init(model)
    per_step_params = _per_step_mask(bnwb, batch_norm, params_shape, "bnwb", "parameter")
    per_step_stats = _per_step_mask(bnrs, batch_norm, state_shape, "bnrs", "model state")

    def init(key: jax.Array) -> tuple[MAMLPPParams, MAMLPPState]:
        params, state = model.init(key)
        params = _stack(params, per_step_params, num_steps)
        adapted = partition(params, per_step_params)[1]
        lrs = jax.tree.map(lambda p: jnp.full((num_steps,), inner_lr, p.dtype), adapted) if lslr else None
        return MAMLPPParams(params, lrs), MAMLPPState(
            _stack(state, per_step_stats, num_steps), jnp.zeros((), jnp.int32)
        )

    def copy_index(step: jax.Array | int) -> jax.Array:
        return jnp.minimum(step, num_steps - 1)

    def pass_at(
        fast: PyTree, per_step: PyTree, stats: PyTree, rest: PyTree, index: jax.Array, x: jax.Array
    ) -> tuple[jax.Array, PyTree, PyTree]:
        """A forward pass with the per-step copies ``index``: predictions, updated ``stats``, new ``rest``."""
        params = combine(fast, _at(per_step, index))
        predictions, new_state = call_apply(model.apply, params, combine(_at(stats, index), rest), x)
        new_stats, new_rest = partition(new_state, per_step_stats)
        return predictions, _put(stats, index, new_stats), new_rest

    def inner_loop(
        meta_params: MAMLPPParams,
        model_state: PyTree,
        x: jax.Array,
        y: jax.Array,
        steps: int,
        second_order: bool,
        query_x: jax.Array | None,
    ) -> tuple[PyTree, PyTree, PyTree, jax.Array | None]:
        """Returns ``(fast params, per-step stats, latest non-per-step state, query predictions per step)``;
        the query predictions (after each step) only when ``query_x`` is given."""
        per_step, fast = partition(meta_params.params, per_step_params)
        stats, rest = partition(model_state, per_step_stats)

        def support_loss(fast: PyTree, stats: PyTree, index: jax.Array) -> tuple[jax.Array, PyTree]:
            predictions, stats, _ = pass_at(fast, per_step, stats, rest, index, x)
            check_loss_inputs(predictions, y, "support")
            return loss_fn(predictions, y), stats

        def step(carry: tuple[PyTree, PyTree, PyTree], i: jax.Array) -> tuple[tuple, jax.Array | None]:
            fast, stats, latest_rest = carry
            index = copy_index(i)
            grads, stats = jax.grad(support_loss, has_aux=True)(fast, stats, index)
            if not second_order:
                grads = jax.lax.stop_gradient(grads)
            rates = (
                jax.tree.map(lambda r: r[index], meta_params.lrs) if lslr else jax.tree.map(lambda _: inner_lr, fast)
            )
            fast = jax.tree.map(lambda p, g, r: p - r * g, fast, grads, rates)
            if query_x is None:
                return (fast, stats, latest_rest), None
            predictions, stats, latest_rest = pass_at(fast, per_step, stats, rest, index, query_x)
            return (fast, stats, latest_rest), predictions

        if steps == 0:
            return fast, stats, rest, None
        (fast, stats, rest), predictions = scan_steps(step, (fast, stats, rest), jnp.arange(steps), steps, remat=remat)
        return fast, stats, rest, predictions

    def adapt(
        meta_params: MAMLPPParams, state: MAMLPPState, x: jax.Array, y: jax.Array, steps: int | None = None
    ) -> MAMLPPAdapted:
        steps = steps_or_default(steps, num_steps)
        fast, *_ = inner_loop(meta_params, state.model, x, y, steps, True, None)
        return adapted_params(meta_params, fast, steps)

    def adapted_params(meta_params: MAMLPPParams, fast: PyTree, steps: int) -> MAMLPPAdapted:
        index = copy_index(max(steps - 1, 0))
        per_step = partition(meta_params.params, per_step_params)[0]
        return MAMLPPAdapted(combine(fast, _at(per_step, index)), index)

    def predict(adapted: MAMLPPAdapted, state: MAMLPPState, x: jax.Array) -> tuple[jax.Array, MAMLPPState]:
        stats, rest = partition(state.model, per_step_stats)
        predictions, new_state = call_apply(model.apply, adapted.params, combine(_at(stats, adapted.index), rest), x)
        new_stats, new_rest = partition(new_state, per_step_stats)
        return predictions, state._replace(model=combine(_put(stats, adapted.index, new_stats), new_rest))

    def objective(
        second_order: bool, multi_step: bool, steps: int, meta_params: MAMLPPParams, state: MAMLPPState, task: Task
    ) -> tuple[jax.Array, TaskOutput]:
        query_x = task.query_x if multi_step else None
        fast, stats, rest, predictions = inner_loop(
            meta_params, state.model, task.support_x, task.support_y, steps, second_order, query_x
        )
        if not multi_step:
            adapted = adapted_params(meta_params, fast, steps)
            loss, output = query_pass(
                predict, loss_fn, metrics, adapted, MAMLPPState(combine(stats, rest), state.step), task
            )
            return loss, TaskOutput(output.metrics, output.model_state._replace(step=state.step + 1))
        last_loss, values = query_metrics(loss_fn, metrics, predictions[-1], task.query_y)
        earlier = jax.vmap(loss_fn, in_axes=(0, None))(predictions[:-1], task.query_y)  # traced once, any steps
        losses = jnp.concatenate([earlier, last_loss[None]])
        loss = jnp.vdot(msl_weights(state.step, steps, msl_steps), losses)
        return loss, TaskOutput(values, MAMLPPState(combine(stats, rest), state.step + 1))

    def task_loss(
        meta_params: MAMLPPParams, state: MAMLPPState, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        steps = steps_or_default(steps, num_steps)
        orders = (False, True) if first_order_steps > 0 else (True,)
        multi_step = (True, False) if msl_steps > 0 and steps > 0 else (False,)
        branches = [functools.partial(objective, o, m, steps) for o in orders for m in multi_step]
        if len(branches) == 1:
            return branches[0](meta_params, state, task)
        order_index = (state.step >= first_order_steps).astype(jnp.int32) if len(orders) == 2 else 0
        msl_index = (state.step >= msl_steps).astype(jnp.int32) if len(multi_step) == 2 else 0
        return jax.lax.switch(order_index * len(multi_step) + msl_index, branches, meta_params, state, task)

    return Learner(init=init, adapt=adapt, predict=predict, task_loss=task_loss, adapts_network=True)


def _per_step_mask(enabled: bool, batch_norm: Callable[[Path], bool], tree: PyTree, flag: str, what: str) -> PyTree:
    """Which leaves of ``tree`` get a copy per inner step: BatchNorm's when ``enabled``, else none."""
    if not enabled:
        return jax.tree.map(lambda _: False, tree)
    mask = select(batch_norm, tree, "batch_norm")
    if count_selected(mask) == 0:
        raise ValueError(
            f"{flag}=True needs BatchNorm {what}s, but batch_norm matched none of the model's {what} paths "
            f"{leaf_paths(tree)}; give batch_norm=lambda path: ... to name them, or set {flag}=False."
        )
    return mask


def _stack(tree: PyTree, mask: PyTree, copies: int) -> PyTree:
    return jax.tree.map(lambda m, leaf: jnp.stack([leaf] * copies) if m else leaf, mask, tree)


def _at(stacked: PyTree, index: jax.Array) -> PyTree:
    return jax.tree.map(lambda leaf: leaf[index], stacked)


def _put(stacked: PyTree, index: jax.Array, values: PyTree) -> PyTree:
    return jax.tree.map(lambda leaf, value: leaf.at[index].set(value), stacked, values)
