"""ResNet-12, the deeper few-shot backbone of TADAM (Oreshkin et al. 2018) and MetaOptNet (Lee et al. 2019).

Four residual blocks, each of three 3x3 convolutions with batch normalisation and a leaky ReLU (slope 0.1),
a 1x1 convolution with batch normalisation on the shortcut, and a 2x2 max-pool; then a global average pool.
MetaOptNet's widths (64, 160, 320, 640) are the default; TADAM uses (64, 128, 256, 512). The DropBlock
regularisation of MetaOptNet's training recipe is not part of the architecture and is left out.
"""

from __future__ import annotations

import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.models.conv4 import check_batch_norm, check_images
from jmeta.validation import positive_int


class ResidualBlock(nn.Module):
    """One ResNet-12 block: 3 x [3x3 conv, BN], leaky ReLUs, a 1x1 conv + BN shortcut, a 2x2 max-pool.

    The third leaky ReLU comes after the shortcut is added, as in the references' code. Convolutions have
    no bias (the batch normalisation that follows each supplies the offset).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> block = ResidualBlock(features=8)
        >>> y, _ = block.init_with_output(jax.random.key(0), jnp.ones((2, 6, 6, 3)))
        >>> y.shape
        (2, 3, 3, 8)
    """

    features: int
    negative_slope: float = 0.1
    use_running_average: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Halves the height and width of ``x`` and maps its channels to ``features``."""

        def conv_bn(y: jax.Array, kernel: int, name: str) -> jax.Array:
            y = nn.Conv(self.features, (kernel, kernel), padding=kernel // 2, use_bias=False, name=name)(y)
            return nn.BatchNorm(
                use_running_average=self.use_running_average,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                name=f"{name}_bn",
            )(y)

        shortcut = conv_bn(x, 1, "shortcut")
        y = nn.leaky_relu(conv_bn(x, 3, "conv0"), self.negative_slope)
        y = nn.leaky_relu(conv_bn(y, 3, "conv1"), self.negative_slope)
        y = nn.leaky_relu(conv_bn(y, 3, "conv2") + shortcut, self.negative_slope)
        return nn.max_pool(y, (2, 2), strides=(2, 2), padding="VALID")


class ResNet12(nn.Module):
    """ResNet-12: residual blocks of widths ``channels``, a global average pool and an optional linear head.

    Input ``(batch, height, width, channels)`` floats, each side at least ``2 ** len(channels)``. Output
    ``(batch, num_classes)`` logits, or ``(batch, channels[-1])`` features when ``num_classes`` is None
    (the embedding of metric-based learners such as prototypical networks or MetaOptNet).
    ``use_running_average``, ``bn_momentum`` and ``bn_epsilon`` are as in :class:`jmeta.models.conv4.Conv4`:
    by default batch statistics are used, so ``apply`` needs ``mutable=["batch_stats"]``.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> model = ResNet12(num_classes=None, channels=(8, 8, 16, 16))
        >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 16, 16, 3)))
        >>> features, _ = model.apply(variables, jnp.ones((4, 16, 16, 3)), mutable=["batch_stats"])
        >>> features.shape
        (4, 16)
    """

    num_classes: int | None = None
    channels: tuple[int, ...] = (64, 160, 320, 640)
    negative_slope: float = 0.1
    use_running_average: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.num_classes is not None:
            positive_int("num_classes", self.num_classes)
        if not isinstance(self.channels, tuple) or not self.channels:
            raise ValueError(f"channels must be a non-empty tuple of positive ints; got {self.channels!r}.")
        for width in self.channels:
            positive_int("each entry of channels", width)
        slope = self.negative_slope
        if isinstance(slope, bool) or not isinstance(slope, numbers.Real) or not 0 <= slope < 1:
            raise ValueError(f"negative_slope must be in [0, 1); got {self.negative_slope!r}.")
        check_batch_norm(self.use_running_average, self.bn_momentum, self.bn_epsilon)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits, or features when ``num_classes`` is None, for images ``x`` ``(batch, h, w, c)``."""
        check_images(x, halvings=len(self.channels))
        for index, width in enumerate(self.channels):
            x = ResidualBlock(
                width,
                negative_slope=self.negative_slope,
                use_running_average=self.use_running_average,
                bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon,
                name=f"block{index}",
            )(x)
        x = jnp.mean(x, axis=(1, 2))
        return x if self.num_classes is None else nn.Dense(self.num_classes, name="head")(x)
