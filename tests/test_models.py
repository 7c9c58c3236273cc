"""Conv4 and ResNet12: shapes, parameter counts, batch-norm statistics and argument checks.

Shapes and counts come from ``jax.eval_shape`` (tracing only). Numerical tests fill the variables with NumPy
random numbers instead of calling ``model.init``, whose per-shape random-number kernels take seconds to
compile on CPU; the forward passes themselves are jitted and small.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jmeta.models.conv4 import Conv4
from jmeta.models.resnet12 import ResNet12

KEY = jax.random.key(0)


def count(tree) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(tree))


def images(shape: tuple[int, ...], seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def shapes(model: nn.Module, x_shape: tuple[int, ...]) -> tuple[dict, jax.ShapeDtypeStruct]:
    """The shapes of ``model``'s variables and of its output for inputs of shape ``x_shape``."""

    def init_and_apply(x: jax.Array) -> tuple[dict, jax.Array]:
        variables = model.init(KEY, x)
        return variables, model.apply(variables, x, mutable=["batch_stats"])[0]

    return jax.eval_shape(init_and_apply, jax.ShapeDtypeStruct(x_shape, jnp.float32))


def variables_for(model: nn.Module, x: jax.Array, seed: int = 2) -> dict:
    """Random parameters (scaled normals) and the initial running statistics (mean 0, variance 1)."""
    structure, _ = shapes(model, x.shape)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), structure["params"])
    stats = jax.tree_util.tree_map_with_path(
        lambda path, s: jnp.ones(s.shape) if path[-1].key == "var" else jnp.zeros(s.shape),
        structure["batch_stats"],
    )
    return {"params": params, "batch_stats": stats}


def forward(model: nn.Module, variables: dict, x: jax.Array) -> tuple[jax.Array, dict]:
    """Jitted ``apply`` returning the output and the updated running statistics."""
    return jax.jit(lambda v, x: model.apply(v, x, mutable=["batch_stats"]))(variables, x)


def conv_params(c_in: int, c_out: int) -> int:
    """A 3x3 convolution's kernel and bias."""
    return 3 * 3 * c_in * c_out + c_out


def test_conv4_omniglot_shapes_and_parameter_count() -> None:
    variables, logits = shapes(Conv4(num_classes=5), (10, 28, 28, 1))
    assert logits.shape == (10, 5)
    batch_norm = 2 * 64  # scale and offset
    head = 64 * 5 + 5
    expected = conv_params(1, 64) + 3 * conv_params(64, 64) + 4 * batch_norm + head
    assert count(variables["params"]) == expected == 112_261
    assert count(variables["batch_stats"]) == 4 * 2 * 64  # running mean and variance, not trained


def test_conv4_miniimagenet_maml_variant() -> None:
    # MAML's mini-ImageNet network: 32 filters, stride-1 convolutions, 2x2 max-pools, flattened 5x5 map.
    model = Conv4(num_classes=5, hidden=32, downsample="maxpool", pool="flatten")
    variables, logits = shapes(model, (4, 84, 84, 3))
    assert logits.shape == (4, 5)
    assert variables["params"]["head"]["kernel"].shape == (5 * 5 * 32, 5)
    expected = conv_params(3, 32) + 3 * conv_params(32, 32) + 4 * 2 * 32 + 800 * 5 + 5
    assert count(variables["params"]) == expected == 32_901


def test_conv4_stride_variant_on_miniimagenet_sizes() -> None:
    # 84 -> 42 -> 21 -> 11 -> 6 with stride 2 and padding 1; the mean head does not depend on the size.
    variables, logits = shapes(Conv4(num_classes=3), (2, 84, 84, 3))
    assert logits.shape == (2, 3) and variables["params"]["head"]["kernel"].shape == (64, 3)
    flat, _ = shapes(Conv4(num_classes=3, pool="flatten"), (2, 84, 84, 3))
    assert flat["params"]["head"]["kernel"].shape == (6 * 6 * 64, 3)


def test_conv4_forward_is_finite_and_padding_is_symmetric_like_pytorch() -> None:
    # PyTorch's Conv2d(padding=1) pads one pixel on every side, whereas XLA's "SAME" pads (0, 1) for even
    # sizes with stride 2. With a kernel that copies the centre tap, the first convolution returns the input
    # at even pixels only under the symmetric padding.
    model = Conv4(num_classes=2, hidden=1)
    x = images((3, 8, 8, 1))
    variables = variables_for(model, x)
    logits, _ = forward(model, variables, x)
    assert logits.shape == (3, 2) and np.all(np.isfinite(logits))
    centre = jnp.zeros((3, 3, 1, 1)).at[1, 1, 0, 0].set(1.0)
    variables["params"]["conv0"] = {"kernel": centre, "bias": jnp.zeros(1)}
    _, state = model.apply(variables, x, mutable=["batch_stats", "intermediates"], capture_intermediates=True)
    np.testing.assert_allclose(state["intermediates"]["conv0"]["__call__"][0], x[:, ::2, ::2, :], rtol=1e-6)


def logits_with_right_and_wrong_statistics(use_running_average: bool) -> tuple[jax.Array, jax.Array]:
    """Logits with the initial running statistics and with deliberately wrong ones."""
    model = Conv4(num_classes=5, hidden=8, use_running_average=use_running_average)
    x = images((6, 28, 28, 1))
    variables = variables_for(model, x)
    wrong = {**variables, "batch_stats": jax.tree.map(lambda s: s + 3.0, variables["batch_stats"])}
    return forward(model, variables, x)[0], forward(model, wrong, x)[0]


def test_batch_statistics_ignore_the_running_averages() -> None:
    right, wrong = logits_with_right_and_wrong_statistics(use_running_average=False)
    np.testing.assert_array_equal(right, wrong)


def test_running_averages_are_used_when_asked() -> None:
    right, wrong = logits_with_right_and_wrong_statistics(use_running_average=True)
    assert not np.allclose(right, wrong, atol=1e-3)


def test_batch_statistics_make_test_time_predictions_transductive() -> None:
    model = Conv4(num_classes=5, hidden=8)
    x = images((6, 28, 28, 1))
    variables = variables_for(model, x)
    alone = forward(model, variables, x[:3])[0]
    together = forward(model, variables, x)[0][:3]
    assert not np.allclose(alone, together, atol=1e-4)
    inductive = Conv4(num_classes=5, hidden=8, use_running_average=True)
    alone, together = forward(inductive, variables, x[:3])[0], forward(inductive, variables, x)[0][:3]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


def test_running_averages_are_updated_with_the_momentum() -> None:
    model = Conv4(num_classes=5, hidden=8, bn_momentum=0.9)
    x = images((6, 28, 28, 1))
    variables = variables_for(model, x)
    _, updated = forward(model, variables, x)
    # bn0's new running mean: 0.9 * 0 (initial) + 0.1 * the first convolution's mean over batch and space.
    conv0 = jax.lax.conv_general_dilated(
        x,
        variables["params"]["conv0"]["kernel"],
        (2, 2),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    batch_mean = (conv0 + variables["params"]["conv0"]["bias"]).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(updated["batch_stats"]["bn0"]["mean"], 0.1 * batch_mean, rtol=1e-4, atol=1e-6)


def test_resnet12_features_and_logits() -> None:
    x = images((2, 16, 16, 3))
    extractor = ResNet12(channels=(4, 8, 8, 16))
    variables = variables_for(extractor, x)
    assert set(variables["params"]) == {f"block{i}" for i in range(4)}
    block = variables["params"]["block0"]
    assert block["conv0"]["kernel"].shape == (3, 3, 3, 4) and "bias" not in block["conv0"]
    assert block["shortcut"]["kernel"].shape == (1, 1, 3, 4)
    features, _ = forward(extractor, variables, x)
    assert features.shape == (2, 16) and np.all(np.isfinite(features))
    assert shapes(ResNet12(num_classes=5, channels=(4, 8, 8, 16)), x.shape)[1].shape == (2, 5)


def test_resnet12_miniimagenet_shapes_and_parameter_count() -> None:
    variables, logits = shapes(ResNet12(num_classes=5), (2, 84, 84, 3))
    assert logits.shape == (2, 5)
    widths = (3, 64, 160, 320, 640)
    per_block = [
        9 * c_in * c_out + 2 * 9 * c_out * c_out + c_in * c_out + 4 * 2 * c_out  # 3x3 convs, 1x1, 4 BNs
        for c_in, c_out in zip(widths, widths[1:], strict=False)
    ]
    assert count(variables["params"]) == sum(per_block) + 640 * 5 + 5 == 12_427_525  # ~12.4M as reported


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Conv4(num_classes=0), "num_classes must be a positive integer"),
        (lambda: Conv4(num_classes=5, hidden=-1), "hidden must be a positive integer"),
        (lambda: Conv4(num_classes=5, downsample="avgpool"), "downsample must be one of 'stride', 'maxpool'"),
        (lambda: Conv4(num_classes=5, pool="max"), "pool must be one of 'mean', 'flatten'"),
        (lambda: Conv4(num_classes=5, bn_momentum=1.0), r"bn_momentum must be a number in \[0, 1\)"),
        (lambda: Conv4(num_classes=5, bn_epsilon=0.0), "bn_epsilon must be a finite number > 0"),
        (lambda: ResNet12(channels=()), "channels must be a non-empty tuple"),
        (lambda: ResNet12(channels=(8, 0)), "each entry of channels must be a positive integer"),
        (lambda: ResNet12(num_classes=0), "num_classes must be a positive integer"),
        (lambda: ResNet12(negative_slope=1.5), r"negative_slope must be in \[0, 1\)"),
    ],
)
def test_bad_fields_raise(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise() -> None:
    with pytest.raises(TypeError, match="use_running_average must be a bool"):
        Conv4(num_classes=5, use_running_average="yes")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, height, width, channels\)"):
        shapes(Conv4(num_classes=5), (28, 28, 1))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        jax.eval_shape(Conv4(num_classes=5).init, KEY, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.uint8))
    with pytest.raises(ValueError, match="at least 16 to be max-pooled 4 times; got 8x8"):
        shapes(ResNet12(channels=(4, 4, 4, 4)), (1, 8, 8, 3))


@pytest.mark.parametrize("stride", [1, 2])
def test_patch_convolution_equals_flax_convolution_with_the_same_parameters(stride):
    from flax import linen

    from jmeta.models.layers import PatchConv

    x = jax.random.normal(jax.random.key(0), (3, 13, 11, 4))
    variables = PatchConv(6, strides=stride).init(jax.random.key(1), x)
    native = linen.Conv(6, (3, 3), strides=stride, padding=1).apply(variables, x)
    np.testing.assert_allclose(PatchConv(6, strides=stride).apply(variables, x), native, rtol=1e-5, atol=1e-5)


def test_conv4_gives_the_same_logits_with_either_convolution():
    x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    variables = Conv4(num_classes=5, conv="xla").init(jax.random.key(1), x)
    outputs = [
        Conv4(num_classes=5, conv=conv).apply(variables, x, mutable=["batch_stats"])[0] for conv in ("xla", "patches")
    ]
    np.testing.assert_allclose(*outputs, rtol=1e-4, atol=1e-5)


def test_mlp_init_std_draws_truncated_normal_weights_as_maml_code():
    from jmeta.models import MLP

    params = MLP((200, 1), init_std=0.01).init(jax.random.key(0), jnp.zeros((1, 50)))["params"]
    kernel = np.asarray(params["Dense_0"]["kernel"])
    assert np.abs(kernel).max() <= 0.02 + 1e-7  # truncated at two standard deviations
    assert 0.007 < kernel.std() < 0.0095  # a normal truncated at 2 std has std ~0.88 of the untruncated
    np.testing.assert_array_equal(params["Dense_0"]["bias"], 0.0)
