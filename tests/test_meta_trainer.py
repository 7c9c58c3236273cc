"""The meta-training step: jit, task batching strategies, determinism, multi-device sharding."""

import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO

import jmeta


def _trainer(model, batching="vmap", steps=1):
    learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.1, steps=steps)
    return jmeta.meta_trainer(learner, optax.adam(1e-3), batching=batching)


def test_jit_equals_no_jit(mlp_model, sine_tasks):
    trainer = _trainer(mlp_model, steps=2)
    eager_state, eager_metrics = trainer.update(trainer.init(jax.random.key(0)), sine_tasks)
    jit_state, jit_metrics = trainer.step(trainer.init(jax.random.key(0)), sine_tasks)
    chex.assert_trees_all_close(eager_state, jit_state, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(eager_metrics, jit_metrics, rtol=1e-5)


@pytest.mark.parametrize("batching", ["vmap", "map", "unroll"])
def test_batching_strategies_equal_a_python_loop_over_tasks(mlp_model, sine_tasks, batching):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1, steps=2)
    params, state = learner.init(jax.random.key(0))

    def loop_loss(p):
        losses = [learner.task_loss(p, state, jax.tree.map(lambda a, i=i: a[i], sine_tasks))[0] for i in range(6)]
        return jnp.mean(jnp.stack(losses))

    trainer = jmeta.meta_trainer(learner, optax.sgd(1.0), batching=batching)
    loss, grads = jax.jit(jax.value_and_grad(lambda p: trainer.loss(p, state, sine_tasks)[0]))(params)
    expected_loss, expected_grads = jax.jit(jax.value_and_grad(loop_loss))(params)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    chex.assert_trees_all_close(grads, expected_grads, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("batching", "chunk_size"), [("vmap", None), ("unroll", None), ("accumulate", None), ("accumulate", 4)]
)
def test_mean_grad_over_tasks_equals_a_python_loop_over_tasks(mlp_model, sine_tasks, batching, chunk_size):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1, steps=2)
    params, state = learner.init(jax.random.key(0))

    def loop_loss(p):
        losses = [learner.task_loss(p, state, jax.tree.map(lambda a, i=i: a[i], sine_tasks))[0] for i in range(6)]
        return jnp.mean(jnp.stack(losses))

    batched = jmeta.batching.over_tasks_with_mean_grad(learner.task_loss, batching, chunk_size)
    (losses, outputs), grads = jax.jit(batched)(params, state, sine_tasks)
    expected_loss, expected_grads = jax.jit(jax.value_and_grad(loop_loss))(params)
    assert losses.shape == (6,) and outputs.metrics["loss"].shape == (6,)  # 4 + a remainder of 2 for chunks of 4
    np.testing.assert_allclose(losses.mean(), expected_loss, rtol=1e-5)
    chex.assert_trees_all_close(grads, expected_grads, rtol=1e-4, atol=1e-6)


def test_accumulated_step_equals_the_vmapped_step_with_batch_norm_state():
    from flax import linen

    class WithBatchNorm(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.BatchNorm(use_running_average=False, momentum=0.5)(linen.Dense(8)(x))
            return linen.Dense(1)(linen.relu(x))

    model = jmeta.from_linen(WithBatchNorm(), jnp.zeros((1, 1)))
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 5, shots=5, queries=7)
    learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.1)
    vmapped, accumulated = (jmeta.meta_trainer(learner, optax.sgd(0.1), batching=b) for b in ("vmap", "accumulate"))
    expected = vmapped.step(vmapped.init(jax.random.key(0)), tasks)
    got = accumulated.step(accumulated.init(jax.random.key(0)), tasks)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-7)


def test_map_with_chunks_equals_vmap(mlp_model, sine_tasks):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1)
    params, state = learner.init(jax.random.key(0))
    vmapped = jmeta.meta_trainer(learner, optax.sgd(1.0), batching="vmap").loss(params, state, sine_tasks)[0]
    chunked = jmeta.meta_trainer(learner, optax.sgd(1.0), batching="map", chunk_size=4).loss(
        params, state, sine_tasks
    )[0]
    np.testing.assert_allclose(vmapped, chunked, rtol=1e-6)


def test_same_key_same_result(mlp_model):
    def run():
        trainer = _trainer(mlp_model)
        state = trainer.init(jax.random.key(42))
        for i in range(3):
            state, metrics = trainer.step(
                state, jmeta.tasks.sinusoid_tasks(jax.random.key(i), 6, shots=5, queries=5)
            )
        return state, metrics

    first, second = run(), run()
    jax.tree.map(np.testing.assert_array_equal, first, second)


def test_step_is_compiled_once(mlp_model, sine_tasks):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1)
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-3))
    traced = chex.assert_max_traces(trainer.update, n=1)
    step = jax.jit(traced)
    state = trainer.init(jax.random.key(0))
    for _ in range(3):
        state, _ = step(state, sine_tasks)


def test_auto_batching_on_cpu_unrolls_convolutions_accumulates_large_tasks_and_vmaps_small_ones(mlp_model, sine_tasks):
    from flax import linen

    class TinyConv(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.Conv(4, (3, 3))(x)
            return linen.Dense(2)(x.mean((1, 2)))

    conv_model = jmeta.from_linen(TinyConv(), jnp.zeros((1, 8, 8, 1)))
    conv_learner = jmeta.maml(conv_model, jmeta.losses.cross_entropy, inner_lr=0.1)
    images = jmeta.Task(
        jnp.zeros((2, 5, 8, 8, 1)),
        jnp.zeros((2, 5), jnp.int32),
        jnp.zeros((2, 5, 8, 8, 1)),
        jnp.zeros((2, 5), jnp.int32),
    )
    mlp_learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1)
    assert jmeta.batching.resolve(conv_learner.task_loss, *conv_learner.init(jax.random.key(0)), images) == "unroll"
    assert jmeta.batching.resolve(mlp_learner.task_loss, *mlp_learner.init(jax.random.key(0)), sine_tasks) == "vmap"
    patch_model = jmeta.from_linen(jmeta.models.Conv4(5, conv="patches"), jnp.zeros((1, 28, 28, 1)))
    patch_learner = jmeta.maml(patch_model, jmeta.losses.cross_entropy, inner_lr=0.4)
    omniglot_shaped = jmeta.Task(
        jnp.zeros((2, 5, 28, 28, 1)),
        jnp.zeros((2, 5), jnp.int32),
        jnp.zeros((2, 75, 28, 28, 1)),
        jnp.zeros((2, 75), jnp.int32),
    )
    assert (
        jmeta.batching.resolve(patch_learner.task_loss, *patch_learner.init(jax.random.key(0)), omniglot_shaped)
        == "accumulate"
    )


def test_matmul_flops_counts_scan_trips():
    def three_products(w, x):
        return jax.lax.scan(lambda x, _: (x @ w, None), x, length=3)[0]

    jaxpr = jax.make_jaxpr(three_products)(jnp.ones((4, 4)), jnp.ones((2, 4))).jaxpr
    assert jmeta.batching.matmul_flops(jaxpr) == 3 * 2 * 2 * 4 * 4


def test_batch_norm_state_is_updated_and_averaged_over_tasks():
    from flax import linen

    class WithBatchNorm(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.BatchNorm(use_running_average=False, momentum=0.0)(linen.Dense(8)(x))
            return linen.Dense(1)(linen.relu(x))

    model = jmeta.from_linen(WithBatchNorm(), jnp.zeros((1, 1)))
    trainer = _trainer(model)
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 4, shots=5, queries=7)
    state = trainer.init(jax.random.key(0))
    before = jax.tree.map(np.asarray, state.model_state)  # the step donates (frees) its input state
    after, _ = trainer.step(state, tasks)
    chex.assert_trees_all_equal_structs(before, after.model_state)
    assert not np.allclose(
        before["batch_stats"]["BatchNorm_0"]["mean"], after.model_state["batch_stats"]["BatchNorm_0"]["mean"]
    )


def test_eight_simulated_devices_give_the_one_device_result():
    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax, jax.numpy as jnp, numpy as np, optax, jmeta
        assert jax.device_count() == 8, jax.devices()
        model = jmeta.from_linen(jmeta.models.MLP((16, 16, 1)), jnp.zeros((1, 1)))
        learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.1, steps=2)
        tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 32, shots=10, queries=10)
        mesh = jmeta.parallel.task_mesh()
        sharded = jmeta.parallel.shard_tasks(tasks, mesh)
        assert len(sharded.support_x.sharding.device_set) == 8
        for batching, chunk_size in (("vmap", None), ("accumulate", 8)):
            trainer = jmeta.meta_trainer(learner, optax.adam(1e-2), batching=batching, chunk_size=chunk_size)
            one, one_metrics = trainer.step(trainer.init(jax.random.key(0)), tasks)
            replicated = jmeta.parallel.replicate(trainer.init(jax.random.key(0)), mesh)
            eight, eight_metrics = trainer.step(replicated, sharded)
            assert len(jax.tree.leaves(eight.params)[0].sharding.device_set) == 8
            for a, b in zip(jax.tree.leaves((one, one_metrics)), jax.tree.leaves((eight, eight_metrics))):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        try:
            jmeta.parallel.shard_tasks(jmeta.tasks.sinusoid_tasks(jax.random.key(1), 12, shots=2, queries=2), mesh)
        except ValueError as error:
            assert "multiple of the number of devices (8)" in str(error)
        else:
            raise AssertionError("12 tasks on 8 devices should be refused")
        print("same result on 8 devices")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "same result on 8 devices" in done.stdout
