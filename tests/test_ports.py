"""Ports of the source articles' networks: shapes and parameter counts (from jax.eval_shape, without
compiling init), the LSTM meta-model reading the last hidden state, argument errors, and a port used by
jmeta.maml."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.models.ports import ImageMLP000, IrisBaseModel003, LearningCurveLSTM003, SharedTrunk002, SourceMLP004


def shapes(module: nn.Module, x_shape: tuple[int, ...]):
    """The shapes of ``module``'s parameters and of its output for inputs of shape ``x_shape``."""

    def init_and_apply(x):
        variables = module.init(jax.random.key(0), x)
        return variables["params"], module.apply(variables, x)

    return jax.eval_shape(init_and_apply, jax.ShapeDtypeStruct(x_shape, jnp.float32))


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    ("module", "x_shape", "out_shape", "parameters"),
    [
        (SourceMLP004(), (2, 28, 28, 1), (2, 10), 784 * 1000 + 1000 + 1000 * 10 + 10),
        (ImageMLP000(), (2, 784), (2, 10), 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10),
        (ImageMLP000(num_classes=5, hidden=(32,)), (2, 28, 28, 1), (2, 5), 784 * 32 + 32 + 32 * 5 + 5),
        (SharedTrunk002(), (3, 28, 28, 1), (3, 64), 784 * 64 + 64),
        (SharedTrunk002(num_classes=10), (3, 28, 28, 1), (3, 10), 784 * 64 + 64 + 64 * 10 + 10),
        (IrisBaseModel003(), (5, 4), (5, 3), 4 * 64 + 64 + 64 * 3 + 3),
        (LearningCurveLSTM003(num_learners=5), (2, 7, 5), (2, 5), 4 * (5 * 64 + 64 * 64 + 64) + 64 * 5 + 5),
    ],
)
def test_shapes_and_parameter_counts(module, x_shape, out_shape, parameters):
    params, y = shapes(module, x_shape)
    assert y.shape == out_shape and count(params) == parameters


def test_image_mlps_flatten_images():
    module = SourceMLP004(hidden=8, num_classes=3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6, 6, 1)), jnp.float32)
    variables = module.init(jax.random.key(0), x)
    np.testing.assert_allclose(module.apply(variables, x), module.apply(variables, x.reshape(4, 36)), rtol=1e-6)


def test_lstm_head_reads_the_hidden_state_after_the_last_step():
    module = LearningCurveLSTM003(num_learners=3, hidden=8)
    curves = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 4, 3)), jnp.float32)
    params = module.init(jax.random.key(0), curves)["params"]
    cell = nn.OptimizedLSTMCell(8)
    carry = cell.initialize_carry(jax.random.key(1), curves[:, 0].shape)
    for t in range(curves.shape[1]):
        carry, _ = cell.apply({"params": params["OptimizedLSTMCell_0"]}, carry, curves[:, t])
    head = params["Dense_0"]
    expected = carry[1] @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(module.apply({"params": params}, curves), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SourceMLP004(num_classes=0), "num_classes must be a positive integer"),
        (lambda: ImageMLP000(hidden=(512, -1)), "hidden widths must be a positive integer"),
        (lambda: SharedTrunk002(features=0), "features must be a positive integer"),
        (lambda: IrisBaseModel003(hidden=2.5), "hidden must be a positive integer"),
        (lambda: LearningCurveLSTM003(num_learners=0), "num_learners must be a positive integer"),
    ],
)
def test_argument_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_lstm_refuses_curves_without_a_time_axis():
    with pytest.raises(ValueError, match=r"curves must have shape \(batch, time, learners\)"):
        jax.eval_shape(lambda x: LearningCurveLSTM003(num_learners=2).init(jax.random.key(0), x),
                       jax.ShapeDtypeStruct((3, 2), jnp.float32))


def test_a_port_adapts_with_maml():
    model = jmeta.from_linen(SourceMLP004(hidden=16, num_classes=3), jnp.zeros((1, 8, 8, 1)))
    learner = jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.5, steps=5)
    params, state = model.init(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 8, 8, 1)), jnp.float32)
    y = jnp.array([0, 1, 2] * 2)
    before = jmeta.losses.cross_entropy(model.apply(params, state, x)[0], y)
    after = jmeta.losses.cross_entropy(model.apply(learner.adapt(params, state, x, y), state, x)[0], y)
    assert after < before
