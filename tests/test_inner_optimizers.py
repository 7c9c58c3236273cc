"""Inner optimisers that divide by square roots (Adam, RMSProp, Adagrad, ...) give finite, correct
meta-gradients where a support-gradient entry is exactly zero; meta_trainer(check_finite=True) names what
is not finite."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import first_task
from flax import linen

import jmeta
from jmeta.learners.base import gradient_inner_loop
from jmeta.learners.safe_optimizer import safe_derivatives
from jmeta.meta_trainer import NonFiniteError


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def test_issue_input_adam_inner_loop_gives_a_finite_meta_step():
    # The issue's input: MLP (40, 40, 1), two inner Adam steps of 1e-2, sinusoid tasks. Before: grad_norm=nan.
    model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    learner = jmeta.maml(model, jmeta.losses.mse, steps=2, inner_optimizer=optax.adam(1e-2))
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-3), check_finite=True)
    state = trainer.init(jax.random.key(0))
    state, metrics = trainer.step(state, jmeta.tasks.sinusoid_tasks(jax.random.key(1), 25, shots=10, queries=10))
    assert np.isfinite(metrics["grad_norm"]) and metrics["grad_norm"] > 0
    assert _finite(state.params)


def _dead_unit_setup(model):
    """An MLP with three hidden units of the first layer dead on every input (bias -100)."""
    learner_params, state = model.init(jax.random.key(0))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), learner_params)
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"].at[:3].set(-100.0)
    task = jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64),
        first_task(jmeta.tasks.sinusoid_tasks(jax.random.key(3), 2, shots=10, queries=10)),
    )
    return params, state, task


OPTIMIZERS = {
    "adam": lambda: optax.adam(1e-2),
    "rmsprop": lambda: optax.rmsprop(1e-2, eps_in_sqrt=False),
    "rmsprop_default": lambda: optax.rmsprop(1e-2),
    "adagrad": lambda: optax.adagrad(1e-2),
    "yogi": lambda: optax.yogi(1e-2),
    "clipped_sgd": lambda: optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(1e-2)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_meta_gradient_through_square_root_optimisers_matches_central_differences(mlp_model, name):
    with jax.enable_x64(True):
        params, state, task = _dead_unit_setup(mlp_model)
        learner = jmeta.maml(mlp_model, jmeta.losses.mse, steps=2, inner_optimizer=OPTIMIZERS[name]())
        meta_loss = jax.jit(lambda p: learner.task_loss(p, state, task)[0])
        def support_loss(p):
            return jmeta.losses.mse(mlp_model.apply(p, state, task.support_x)[0], task.support_y)

        assert int(jnp.sum(jax.grad(support_loss)(params)["Dense_0"]["bias"] == 0)) == 3  # dead units: exact zeros

        grad = jax.grad(meta_loss)(params)
        assert _finite(grad)
        leaves, treedef = jax.tree.flatten(params)
        eps = 1e-6
        directions = [jax.tree.map(jnp.zeros_like, params)]
        # a dead unit's input weight
        directions[0]["Dense_0"]["kernel"] = directions[0]["Dense_0"]["kernel"].at[0, 0].set(1.0)
        for i in range(2):
            keys = jax.random.split(jax.random.key(100 + i), len(leaves))
            noise = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
            directions.append(jax.tree.unflatten(treedef, noise))
        for direction in directions:
            plus = meta_loss(jax.tree.map(lambda p, d: p + eps * d, params, direction))
            minus = meta_loss(jax.tree.map(lambda p, d: p - eps * d, params, direction))
            pairs = zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
            analytic = sum(jnp.vdot(g, d) for g, d in pairs)
            np.testing.assert_allclose(analytic, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-9)


def test_the_unwrapped_adam_update_gives_nan_where_the_wrapped_one_is_finite(mlp_model):
    # The fault being fixed: the same inner loop with optax's Adam as it is.
    with jax.enable_x64(True):
        params, state, task = _dead_unit_setup(mlp_model)

        def meta_loss(optimizer, p):
            run = gradient_inner_loop(mlp_model.apply, jmeta.losses.mse, optimizer, first_order=False, remat=False)
            adapted = run(p, state, task.support_x, task.support_y, 2)
            return jmeta.losses.mse(mlp_model.apply(adapted, state, task.query_x)[0], task.query_y)

        raw = jax.grad(lambda p: meta_loss(optax.adam(1e-2), p))(params)
        safe = jax.grad(lambda p: meta_loss(safe_derivatives(optax.adam(1e-2)), p))(params)
        assert not _finite(raw) and _finite(safe)
        assert meta_loss(optax.adam(1e-2), params) == meta_loss(safe_derivatives(optax.adam(1e-2)), params)


class _BatchNormMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.BatchNorm(use_running_average=False)(linen.Dense(8)(x))
        return linen.Dense(3)(linen.relu(x))


def test_batch_norm_with_inner_adam_matches_central_differences():
    # BatchNorm removes the mean over the batch, so the first layer's bias gets an exactly-zero support gradient.
    model = jmeta.from_linen(_BatchNormMLP(), jnp.zeros((1, 4)))
    with jax.enable_x64(True):
        learner = jmeta.maml(model, jmeta.losses.cross_entropy, steps=2, inner_optimizer=optax.adam(1e-2))
        params, state = learner.init(jax.random.key(0))
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        keys = jax.random.split(jax.random.key(1), 2)
        task = jmeta.Task(jax.random.normal(keys[0], (6, 4), jnp.float64), jnp.arange(6) % 3,
                          jax.random.normal(keys[1], (6, 4), jnp.float64), jnp.arange(6) % 3)
        meta_loss = jax.jit(lambda p: learner.task_loss(p, state, task)[0])
        grad = jax.grad(meta_loss)(params)
        assert _finite(grad)
        direction = jax.tree.map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), params)
        eps = 1e-6
        numeric = (meta_loss(jax.tree.map(lambda p, d: p + eps * d, params, direction))
                   - meta_loss(jax.tree.map(lambda p, d: p - eps * d, params, direction))) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_conv4_with_batch_norm_and_inner_adam_has_finite_meta_gradients():
    # The issue's second input (Conv-4 with BatchNorm: every meta-gradient entry was NaN), at a small size.
    net = jmeta.models.Conv4(num_classes=5, hidden=8)
    model = jmeta.from_linen(net, jnp.zeros((1, 28, 28, 1)))
    learner = jmeta.maml(model, jmeta.losses.cross_entropy, steps=2, inner_optimizer=optax.adam(1e-2))
    params, state = learner.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 2)
    task = jmeta.Task(
        jax.random.uniform(keys[0], (5, 28, 28, 1)), jnp.arange(5), jax.random.uniform(keys[1], (5, 28, 28, 1)),
        jnp.arange(5),
    )
    grad = jax.jit(jax.grad(lambda p: learner.task_loss(p, state, task)[0]))(params)
    assert _finite(grad) and float(optax.tree.norm(grad)) > 0


def test_safe_derivatives_keeps_values_and_rewrites_roots_inside_loops_and_branches():
    def update_fn(grads, state, params=None):
        def body(carry, _):
            return carry + jnp.sqrt(jnp.square(grads)), None

        looped, _ = jax.lax.scan(body, jnp.zeros_like(grads), length=2)
        return jax.lax.cond(state > 0, lambda: looped, lambda: jnp.sqrt(grads)), state

    opt = safe_derivatives(optax.GradientTransformation(lambda p: jnp.ones(()), update_fn))
    g = jnp.array([0.0, 4.0])
    np.testing.assert_allclose(opt.update(g, jnp.ones(()))[0], [0.0, 8.0])
    np.testing.assert_allclose(jax.jacfwd(lambda x: opt.update(x, jnp.ones(()))[0])(g), [[0.0, 0.0], [0.0, 2.0]])
    assert safe_derivatives(opt) is opt
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation; got function"):
        safe_derivatives(lambda g: g)


def test_check_finite_names_the_non_finite_metrics_and_parameter_leaves(mlp_model, sine_tasks):
    poisoned = sine_tasks._replace(query_y=sine_tasks.query_y.at[0, 0, 0].set(jnp.nan))
    trainer = jmeta.meta_trainer(jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01), optax.adam(1e-3),
                                 check_finite=True)
    state = trainer.init(jax.random.key(0))
    with pytest.raises(NonFiniteError, match=r"meta-step 1 is not finite: grad_norm=nan, loss=nan; meta-gradient "
                       r"entries not finite: Dense_0/bias \(16 of its entries\), Dense_0/kernel \(16 of its entries\)"):
        trainer.step(state, poisoned)
    assert _finite(state.params)  # not donated: still the last finite state
    state, metrics = trainer.step(state, sine_tasks)
    assert int(state.step) == 1 and np.isfinite(metrics["loss"])
    with pytest.raises(TypeError, match="check_finite must be a bool"):
        jmeta.meta_trainer(jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01), optax.adam(1e-3), check_finite=1)
