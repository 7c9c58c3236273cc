"""MAML and first-order MAML: meta-gradients checked against finite differences and equivalent forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import first_task

import jmeta


def _to_f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize(
    "inner", [{"inner_lr": 0.1}, {"inner_optimizer": optax.sgd(0.05, momentum=0.9)}], ids=["sgd", "momentum"]
)
def test_second_order_meta_gradient_matches_central_differences(mlp_model, steps, inner):
    with jax.enable_x64(True):
        learner = jmeta.maml(mlp_model, jmeta.losses.mse, steps=steps, **inner)
        params, state = learner.init(jax.random.key(0))
        params = _to_f64(params)
        task = _to_f64(first_task(jmeta.tasks.sinusoid_tasks(jax.random.key(3), 2, shots=10, queries=10)))

        meta_loss = jax.jit(lambda p: learner.task_loss(p, state, task)[0])

        grad = jax.grad(meta_loss)(params)
        leaves, treedef = jax.tree.flatten(params)
        eps = 1e-6
        for i in range(4):
            keys = jax.random.split(jax.random.key(100 + i), len(leaves))
            direction = jax.tree.unflatten(
                treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
            )
            plus = meta_loss(jax.tree.map(lambda p, d: p + eps * d, params, direction))
            minus = meta_loss(jax.tree.map(lambda p, d: p - eps * d, params, direction))
            numeric = (plus - minus) / (2 * eps)
            pairs = zip(jax.tree.leaves(grad), jax.tree.leaves(direction), strict=True)
            analytic = sum(jnp.vdot(g, d) for g, d in pairs)
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)

        first_order = jmeta.fomaml(mlp_model, jmeta.losses.mse, steps=steps, **inner)
        fo_grad = jax.grad(lambda p: first_order.task_loss(p, state, task)[0])(params)
        gap = max(
            float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(fo_grad), strict=True)
        )
        assert gap > 1e-4, "second-order and first-order meta-gradients should differ"


@pytest.mark.parametrize("steps", [1, 3])
def test_first_order_meta_gradient_is_query_gradient_at_adapted_params(mlp_model, sine_tasks, steps):
    learner = jmeta.fomaml(mlp_model, jmeta.losses.mse, inner_lr=0.1, steps=steps)
    params, state = learner.init(jax.random.key(0))
    task = first_task(sine_tasks)
    meta_grad = jax.grad(lambda p: learner.task_loss(p, state, task)[0])(params)

    adapted = learner.adapt(params, state, task.support_x, task.support_y)
    expected = jax.grad(lambda p: jmeta.losses.mse(mlp_model.apply(p, state, task.query_x)[0], task.query_y))(adapted)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), meta_grad, expected)


def test_adapt_takes_the_inner_optimiser_steps_by_hand(mlp_model, sine_tasks):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1, steps=2)
    params, state = learner.init(jax.random.key(0))
    task = first_task(sine_tasks)

    def support_loss(p):
        return jmeta.losses.mse(mlp_model.apply(p, state, task.support_x)[0], task.support_y)

    expected = params
    for _ in range(2):
        expected = jax.tree.map(lambda p, g: p - 0.1 * g, expected, jax.grad(support_loss)(expected))
    adapted = learner.adapt(params, state, task.support_x, task.support_y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), adapted, expected)
    unchanged = learner.adapt(params, state, task.support_x, task.support_y, steps=0)
    jax.tree.map(np.testing.assert_array_equal, unchanged, params)


def test_remat_gives_the_same_meta_gradient(mlp_model, sine_tasks):
    task = first_task(sine_tasks)

    def meta_gradient(remat):
        learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1, steps=3, remat=remat)
        params, state = learner.init(jax.random.key(0))
        return jax.jit(jax.grad(lambda p: learner.task_loss(p, state, task)[0]))(params)

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), meta_gradient(False), meta_gradient(True)
    )


def test_metrics_are_reported_on_the_query_set(mlp_model, sine_tasks):
    learner = jmeta.maml(
        mlp_model, jmeta.losses.mse, inner_lr=0.1, metrics={"mae": lambda p, y: jnp.mean(jnp.abs(p - y))}
    )
    params, state = learner.init(jax.random.key(0))
    loss, output = learner.task_loss(params, state, first_task(sine_tasks))
    assert set(output.metrics) == {"loss", "mae"}
    assert output.metrics["loss"] == loss
