"""Ports of the source articles' networks: shapes and parameter counts (from jax.eval_shape, without
compiling init); outputs against the source framework's equations written out in NumPy on weights in that
framework's layout (PyTorch's ``x @ W.T + b``, Keras's LSTM gates i, f, c, o); the initial weights'
statistics per framework; argument errors, and a port used by jmeta.maml."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.models.ports import (
    ImageMLP000,
    IrisBaseModel003,
    KerasLSTM,
    LearningCurveLSTM003,
    SharedTrunk002,
    SourceMLP004,
)


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


RNG = np.random.default_rng(0)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def torch_linear(fan_in: int, fan_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights in PyTorch's layout: ``nn.Linear(fan_in, fan_out).weight`` is ``(out, in)``."""
    return RNG.normal(size=(fan_out, fan_in)), RNG.normal(size=fan_out)


def transferred(layers: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """PyTorch ``(weight, bias)`` per layer name as Flax params: the kernel is ``weight.T``."""
    return {"params": {name: {"kernel": w.T, "bias": b} for name, (w, b) in layers.items()}}


def test_pytorch_mlps_compute_torch_linear_equations_on_transferred_weights():
    x = RNG.normal(size=(5, 784))
    w0, b0 = torch_linear(784, 1000)
    w1, b1 = torch_linear(1000, 10)
    expected = relu(x @ w0.T + b0) @ w1.T + b1  # nn.Sequential(Linear, ReLU, Linear)
    got = SourceMLP004().apply(transferred({"Dense_0": (w0, b0), "Dense_1": (w1, b1)}), x.reshape(5, 28, 28, 1))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    layers = {f"Dense_{i}": torch_linear(a, b) for i, (a, b) in enumerate([(784, 512), (512, 256), (256, 10)])}
    (w0, b0), (w1, b1), (w2, b2) = layers.values()
    expected = relu(relu(x @ w0.T + b0) @ w1.T + b1) @ w2.T + b2
    np.testing.assert_allclose(ImageMLP000().apply(transferred(layers), x), expected, rtol=1e-4, atol=1e-3)


def test_keras_dense_ports_compute_keras_equations_on_transferred_weights():
    # Keras's Dense kernel is (in, out) already: `x @ kernel + bias`.
    x = RNG.normal(size=(4, 28, 28, 1))
    trunk, head = (RNG.normal(size=(784, 64)), RNG.normal(size=64)), (RNG.normal(size=(64, 10)), RNG.normal(size=10))
    params = {"params": {"trunk": {"kernel": trunk[0], "bias": trunk[1]}, "head": {"kernel": head[0], "bias": head[1]}}}
    expected = relu(x.reshape(4, -1) @ trunk[0] + trunk[1]) @ head[0] + head[1]
    got = SharedTrunk002(num_classes=10).apply(params, x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def keras_lstm_numpy(x: np.ndarray, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras's LSTM (activation tanh, recurrent_activation sigmoid, gates i, f, c, o): the last h."""
    units = recurrent.shape[0]
    h = c = np.zeros((x.shape[0], units))
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        i, f, g, o = (z[:, k * units : (k + 1) * units] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    return h


def test_lstm_computes_keras_equations_on_transferred_weights():
    learners, units = 3, 8
    curves = RNG.uniform(size=(2, 5, learners))
    kernel, recurrent = RNG.normal(size=(learners, 4 * units)) / 2, RNG.normal(size=(units, 4 * units)) / 2
    bias, head = RNG.normal(size=4 * units), (RNG.normal(size=(units, learners)), RNG.normal(size=learners))
    params = {
        "LSTM_0": {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias},  # layer.get_weights() order
        "Dense_0": {"kernel": head[0], "bias": head[1]},
    }
    expected = keras_lstm_numpy(curves, kernel, recurrent, bias) @ head[0] + head[1]
    params = jax.tree.map(lambda a: a.astype(np.float32), params)
    got = LearningCurveLSTM003(num_learners=learners, hidden=units).apply({"params": params}, curves.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def initial_params(module: nn.Module, x_shape: tuple[int, ...], seed: int = 0) -> dict:
    return jax.jit(module.init)(jax.random.key(seed), jnp.zeros(x_shape))["params"]


def check_uniform(values: np.ndarray, bound: float) -> None:
    """Values of U(-bound, bound): inside the bound, reaching near it, with std bound / sqrt(3) (within 5%)."""
    values = np.asarray(values).ravel()
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.95 * bound
    assert abs(values.mean()) < 0.05 * bound
    np.testing.assert_allclose(values.std(), bound / np.sqrt(3), rtol=0.05)


def test_pytorch_ports_start_as_torch_nn_linear():
    params = initial_params(SourceMLP004(), (1, 784))
    for name, fan_in in (("Dense_0", 784), ("Dense_1", 1000)):
        check_uniform(params[name]["kernel"], 1 / np.sqrt(fan_in))
        assert np.abs(np.asarray(params[name]["bias"])).max() <= 1 / np.sqrt(fan_in)
    check_uniform(params["Dense_0"]["bias"], 1 / np.sqrt(784))  # 1000 biases: enough for the statistics
    params = initial_params(ImageMLP000(), (1, 784))
    for name, fan_in in (("Dense_0", 784), ("Dense_1", 512), ("Dense_2", 256)):
        check_uniform(params[name]["kernel"], 1 / np.sqrt(fan_in))


def test_keras_ports_start_as_keras_dense():
    for module, x_shape, layers in (
        (SharedTrunk002(num_classes=10), (1, 784), {"trunk": (784, 64), "head": (64, 10)}),
        (IrisBaseModel003(), (1, 4), {"Dense_0": (4, 64), "Dense_1": (64, 3)}),
    ):
        params = initial_params(module, x_shape)
        for name, (fan_in, fan_out) in layers.items():
            bound = np.sqrt(6 / (fan_in + fan_out))  # glorot_uniform
            assert np.abs(np.asarray(params[name]["kernel"])).max() <= bound
            if fan_in * fan_out >= 1000:
                check_uniform(params[name]["kernel"], bound)
            np.testing.assert_array_equal(params[name]["bias"], 0.0)


def test_lstm_starts_as_keras_lstm():
    units, learners = 64, 5
    params = initial_params(LearningCurveLSTM003(num_learners=learners, hidden=units), (1, 3, learners))["LSTM_0"]
    check_uniform(params["kernel"], np.sqrt(6 / (learners + 4 * units)))  # glorot over the fused (in, 4u) kernel
    recurrent = np.asarray(params["recurrent_kernel"], np.float64)
    assert recurrent.shape == (units, 4 * units)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(units), atol=1e-5)  # orthogonal rows
    bias = np.asarray(params["bias"]).reshape(4, units)
    np.testing.assert_array_equal(bias, np.stack([np.zeros(units), np.ones(units), np.zeros(units), np.zeros(units)]))


def test_flax_initialization_is_an_option():
    params = initial_params(SourceMLP004(hidden=256, initialization="flax"), (1, 784))
    np.testing.assert_array_equal(params["Dense_0"]["bias"], 0.0)
    kernel = np.asarray(params["Dense_0"]["kernel"])
    np.testing.assert_allclose(kernel.std(), 1 / np.sqrt(784), rtol=0.05)  # LeCun normal: std 1/sqrt(fan_in)
    assert np.abs(kernel).max() > 1 / np.sqrt(784) * 1.8  # normal tails, beyond a uniform's sqrt(3) sigma
    lstm = initial_params(KerasLSTM(16, initialization="flax"), (1, 3, 2))
    np.testing.assert_array_equal(lstm["bias"], 0.0)
    for block in np.split(np.asarray(lstm["recurrent_kernel"], np.float64), 4, axis=1):
        np.testing.assert_allclose(block @ block.T, np.eye(16), atol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SourceMLP004(num_classes=0), "num_classes must be a positive integer"),
        (lambda: ImageMLP000(hidden=(512, -1)), "hidden widths must be a positive integer"),
        (lambda: SharedTrunk002(features=0), "features must be a positive integer"),
        (lambda: IrisBaseModel003(hidden=2.5), "hidden must be a positive integer"),
        (lambda: LearningCurveLSTM003(num_learners=0), "num_learners must be a positive integer"),
        (lambda: SourceMLP004(initialization="torch"), "initialization must be one of 'pytorch', 'keras', 'flax'"),
        (lambda: KerasLSTM(0), "units must be a positive integer"),
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
