"""Inner loops: rolled scans at any number of steps, and `remat=True` keeping the meta-step's memory flat.

Memory is XLA's compiled memory of one meta-step (arguments + outputs + temporaries, as `jmeta bench --memory`
prints it): deterministic for a given program, so it can be asserted.
"""

import functools
from math import prod

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmeta
from jmeta import bench
from jmeta.batching import _equations
from jmeta.learners.remat import scan_steps, segments


def mlp_workload(steps: int, remat: bool) -> bench.Workload:
    """MAML, MLP (256, 256, 1), 64 support and 64 query points per task, 4 tasks per meta-step."""
    model = jmeta.from_linen(jmeta.models.MLP((256, 256, 1)), jnp.zeros((1, 1)))
    learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01, steps=steps, remat=remat)
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-3), batching="accumulate")
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 4, shots=64, queries=64)
    return bench.Workload(trainer, trainer.init(jax.random.key(0)), tasks)


def test_remat_keeps_mlp_meta_step_memory_flat_in_inner_steps():
    five, hundred = (bench.step_memory(mlp_workload(k, remat=True)).total for k in (5, 100))
    assert hundred <= 1.5 * five, (five, hundred)
    # Without remat every step keeps its residuals: the same figure grows past 10x.
    assert bench.step_memory(mlp_workload(100, remat=False)).total > 10 * five


@pytest.mark.slow  # compiles two Conv-4 meta-steps of 32 tasks: minutes on 2 busy cores
def test_remat_keeps_conv4_meta_step_memory_flat_in_inner_steps():
    five, hundred = (bench.memory("omniglot-maml", inner_steps=k, remat=True).total for k in (5, 100))
    assert hundred <= 1.5 * five, (five, hundred)


@pytest.mark.parametrize("steps", [1, 4, 7, 18])
def test_scan_steps_with_remat_matches_the_plain_scan_and_its_gradient(steps):
    def step(w, x):
        return jnp.tanh(w * x + 0.1), w.sum() * x

    xs = jnp.linspace(-1.0, 1.0, steps)

    def final(w, remat):
        carry, ys = scan_steps(step, w, xs, steps, remat=remat)
        return (carry**2).sum() + ys.sum(), ys

    w = jnp.array([0.3, -0.7, 1.1])
    (plain, plain_ys), (checkpointed, checkpointed_ys) = final(w, False), final(w, True)
    np.testing.assert_allclose(checkpointed, plain, rtol=1e-6)
    np.testing.assert_allclose(checkpointed_ys, plain_ys, rtol=1e-6)
    grads = [jax.grad(lambda w, r=r: final(w, r)[0])(w) for r in (False, True)]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5)


def test_segments_cover_the_steps_with_a_logarithmic_number_of_stored_carries():
    for steps in (1, 2, 5, 7, 18, 100, 101, 997, 5000):
        shape = segments(steps)
        assert prod(shape) >= steps and prod(shape[1:]) < steps or steps == 1, (steps, shape)
    assert sum(segments(100)) == 14 and sum(segments(5000)) <= 30


def meta_gradient(make_learner, remat, task):
    learner = make_learner(remat=remat)
    params, state = learner.init(jax.random.key(0))
    return jax.grad(lambda p: learner.task_loss(p, state, task)[0])(params)


@pytest.mark.parametrize("name", ["maml", "maml_adam", "metasgd", "mamlpp_msl"])
def test_meta_gradients_with_and_without_remat_agree(name, mlp_model, sine_tasks):
    task = jax.tree.map(lambda a: a[0], sine_tasks)
    loss = jmeta.losses.mse
    make = {
        "maml": functools.partial(jmeta.maml, mlp_model, loss, 0.1, 7),
        "maml_adam": functools.partial(jmeta.maml, mlp_model, loss, steps=7, inner_optimizer=optax.adam(0.01)),
        "metasgd": functools.partial(jmeta.learners.metasgd, mlp_model, loss, 0.1, 7),
        "mamlpp_msl": functools.partial(jmeta.learners.mamlpp, mlp_model, loss, 0.1, 7, msl_steps=10),
    }[name]
    plain, checkpointed = meta_gradient(make, False, task), meta_gradient(make, True, task)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(checkpointed), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_the_inner_loop_stays_rolled_at_any_number_of_steps(mlp_model, sine_tasks):
    """The program does not grow with the inner steps (it did when the loop was unrolled: 200 steps took
    6.5 minutes to compile): without remat, 20 and 2000 steps trace to the same equations; with remat, to a
    few more per level of nesting (2 levels for 20 steps, 6 for 2000)."""
    task = jax.tree.map(lambda a: a[0], sine_tasks)

    def equations(steps, remat):
        learner = jmeta.maml(mlp_model, jmeta.losses.mse, 0.01, steps, remat=remat)
        params, state = learner.init(jax.random.key(0))
        jaxpr = jax.make_jaxpr(jax.grad(lambda p: learner.task_loss(p, state, task)[0]))(params).jaxpr
        return sum(1 for _ in _equations(jaxpr))

    assert equations(20, False) == equations(2000, False)
    assert equations(2000, True) <= 3 * equations(20, True)
