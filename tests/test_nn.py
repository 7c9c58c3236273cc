"""Model adapters: a Flax Linen and a Flax NNX module with the same weights give the same meta-learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen, nnx

import jmeta


class LinenNet(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.Dense(8)(x)
        x = linen.BatchNorm(use_running_average=False)(x)
        return linen.Dense(1)(linen.relu(x))


class NNXNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense_in = nnx.Linear(1, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, use_running_average=False, rngs=rngs)
        self.dense_out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.dense_out(nnx.relu(self.norm(self.dense_in(x))))


def _models_with_equal_weights():
    linen_model = jmeta.from_linen(LinenNet(), jnp.zeros((1, 1)))
    params, _ = linen_model.init(jax.random.key(0))
    module = NNXNet(nnx.Rngs(1))
    module.dense_in.kernel[...] = params["Dense_0"]["kernel"]
    module.dense_in.bias[...] = params["Dense_0"]["bias"]
    module.norm.scale[...] = params["BatchNorm_0"]["scale"]
    module.norm.bias[...] = params["BatchNorm_0"]["bias"]
    module.dense_out.kernel[...] = params["Dense_1"]["kernel"]
    module.dense_out.bias[...] = params["Dense_1"]["bias"]
    return linen_model, jmeta.from_nnx(module)


def _as_linen_names(nnx_tree):
    pure = nnx_tree.to_pure_dict() if hasattr(nnx_tree, "to_pure_dict") else nnx_tree
    return {
        "Dense_0": pure["dense_in"],
        "BatchNorm_0": {k: pure["norm"][k] for k in ("scale", "bias")},
        "Dense_1": pure["dense_out"],
    }


def test_linen_and_nnx_adapters_agree_on_outputs_state_and_meta_gradients():
    linen_model, nnx_model = _models_with_equal_weights()
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(2), 4, shots=5, queries=7)
    results = []
    for model in (linen_model, nnx_model):
        learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.05, steps=2)
        trainer = jmeta.meta_trainer(learner, optax.sgd(1.0))
        params, state = learner.init(jax.random.key(0))
        (loss, output), grads = jax.value_and_grad(trainer.loss, has_aux=True)(params, state, tasks)
        results.append((loss, grads, output.model_state))
    (linen_loss, linen_grads, linen_state), (nnx_loss, nnx_grads, nnx_state) = results
    np.testing.assert_allclose(linen_loss, nnx_loss, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        linen_grads,
        _as_linen_names(nnx_grads),
    )
    nnx_stats = nnx_state.to_pure_dict()["norm"]
    np.testing.assert_allclose(
        linen_state["batch_stats"]["BatchNorm_0"]["mean"], nnx_stats["mean"], rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        linen_state["batch_stats"]["BatchNorm_0"]["var"], nnx_stats["var"], rtol=1e-5, atol=1e-7
    )


def test_from_nnx_does_not_mutate_the_module():
    module = NNXNet(nnx.Rngs(0))
    before = np.asarray(module.norm.mean[...])
    model = jmeta.from_nnx(module)
    params, state = model.init(jax.random.key(0))
    model.apply(params, state, jnp.ones((5, 1)))
    np.testing.assert_array_equal(module.norm.mean[...], before)


def test_custom_model_from_plain_functions():
    def init(key):
        return {"w": jax.random.normal(key, (1, 1))}, {}

    def apply(params, state, x):
        return x @ params["w"], state

    learner = jmeta.maml(jmeta.Model(init, apply), jmeta.losses.mse, inner_lr=0.1)
    params, state = learner.init(jax.random.key(0))
    x = jnp.ones((4, 1))
    adapted = learner.adapt(params, state, x, 3 * x)
    assert float(jnp.abs(adapted["w"] - 3).squeeze()) < float(jnp.abs(params["w"] - 3).squeeze())
