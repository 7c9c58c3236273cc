"""Bad input gets a clear error naming the argument, what was given and what is allowed, before compiling."""

import jax
import jax.numpy as jnp
import optax
import pytest

import jmeta


def test_non_positive_steps(mlp_model):
    with pytest.raises(ValueError, match=r"steps must be a positive integer \(>= 1\); got 0"):
        jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1, steps=0)
    with pytest.raises(ValueError, match=r"steps must be a positive integer \(>= 1\); got 1.5"):
        jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1, steps=1.5)


@pytest.mark.parametrize("inner_lr", [0.0, -0.01, float("nan"), "0.1"])
def test_non_positive_inner_learning_rate(mlp_model, inner_lr):
    with pytest.raises(ValueError, match="inner_lr must be a finite number > 0; got"):
        jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=inner_lr)


def test_inner_learning_rate_and_optimiser_are_exclusive(mlp_model):
    with pytest.raises(ValueError, match="give exactly one of inner_lr"):
        jmeta.maml(mlp_model, jmeta.losses.mse)
    with pytest.raises(ValueError, match="give exactly one of inner_lr"):
        jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1, inner_optimizer=optax.sgd(0.1))
    with pytest.raises(
        TypeError, match="inner_optimizer must be an optax.GradientTransformation; got function"
    ):
        jmeta.maml(mlp_model, jmeta.losses.mse, inner_optimizer=lambda g: g)


def test_apply_of_the_wrong_signature():
    model = jmeta.Model(lambda key: ({}, {}), lambda params, x: x)
    with pytest.raises(
        TypeError, match=r"model.apply must accept 3 positional arguments, apply\(params, state, x\)"
    ):
        jmeta.maml(model, jmeta.losses.mse, inner_lr=0.1)
    with pytest.raises(TypeError, match="model must be a jmeta.Model"):
        jmeta.maml(lambda p, s, x: x, jmeta.losses.mse, inner_lr=0.1)


def test_apply_that_does_not_return_a_pair(sine_tasks):
    model = jmeta.Model(lambda key: ({"w": jnp.ones((1, 1))}, {}), lambda params, state, x: x @ params["w"])
    learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.1)
    trainer = jmeta.meta_trainer(learner, optax.sgd(0.1))
    with pytest.raises(TypeError, match=r"must return a pair \(predictions, new_state\)"):
        trainer.step(trainer.init(jax.random.key(0)), sine_tasks)


def test_mismatched_task_shapes(mlp_model, sine_tasks):
    trainer = jmeta.meta_trainer(jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1), optax.sgd(0.1))
    state = trainer.init(jax.random.key(0))
    fewer_targets = sine_tasks._replace(support_y=sine_tasks.support_y[:, :9])
    with pytest.raises(
        ValueError, match=r"tasks.support_x and tasks.support_y must have the same number of points"
    ):
        trainer.step(state, fewer_targets)
    fewer_tasks = sine_tasks._replace(query_x=sine_tasks.query_x[:5])
    with pytest.raises(ValueError, match=r"same number of tasks \(axis 0\)"):
        trainer.step(state, fewer_tasks)
    flat_targets = sine_tasks._replace(
        support_y=sine_tasks.support_y[..., 0], query_y=sine_tasks.query_y[..., 0]
    )
    with pytest.raises(
        ValueError, match=r"mse needs predictions and targets of the same shape; got \(10, 1\) and \(10,\)"
    ):
        trainer.step(state, flat_targets)
    with pytest.raises(TypeError, match="tasks must be a jmeta.Task; got tuple"):
        trainer.step(state, tuple(sine_tasks))


def test_more_shots_than_points():
    x = jnp.zeros((2, 10, 1))
    with pytest.raises(
        ValueError, match=r"shots must be smaller than the number of points per task \(10\).*got shots=10"
    ):
        jmeta.tasks.split_points(x, x, shots=10)
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        jmeta.tasks.sinusoid_tasks(jax.random.key(0), 4, shots=0, queries=5)


def test_unknown_batching(mlp_model):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1)
    with pytest.raises(
        ValueError, match=r"batching must be one of 'auto', 'vmap', 'map', 'unroll', 'accumulate'; got 'pmap'"
    ):
        jmeta.meta_trainer(learner, optax.sgd(0.1), batching="pmap")
    with pytest.raises(ValueError, match="chunk_size only applies to batching='map' or 'accumulate'"):
        jmeta.meta_trainer(learner, optax.sgd(0.1), batching="vmap", chunk_size=4)
