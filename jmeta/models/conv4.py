"""The four-block convolutional network of MAML (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks", sec. 5.2), the standard backbone of few-shot image classification.

Each block is a 3x3 convolution with ``hidden`` filters, batch normalisation and a ReLU. The spatial size is
halved in every block, either by the convolution's stride (the Omniglot variant, 64 filters) or by a 2x2
max-pool after a stride-1 convolution (the mini-ImageNet variant, 32 filters in the paper).
"""

from __future__ import annotations

import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp

from jmeta.models.layers import PatchConv
from jmeta.validation import one_of, positive_float, positive_int

DOWNSAMPLES = ("stride", "maxpool")
POOLS = ("mean", "flatten")
CONVS = ("auto", "xla", "patches")


class Conv4(nn.Module):
    """MAML's Conv4: 4 x [3x3 conv, BatchNorm, ReLU, halve the spatial size], then a linear head.

    Input ``(batch, height, width, channels)`` floats; output ``(batch, num_classes)`` logits.

    Fields:
        num_classes: outputs of the linear head (the "ways" of a task); ``None``: no head, the network returns
            the pooled features (an embedding, e.g. for Prototypical Networks).
        hidden: filters in every convolution.
        downsample: ``"stride"``: 3x3 convolution with stride 2 and padding 1 (Omniglot);
            ``"maxpool"``: 3x3 convolution with stride 1 and padding 1, then a 2x2 max-pool (mini-ImageNet).
        pool: ``"mean"``: average the last feature map over space before the head (MAML's code for
            Omniglot); ``"flatten"``: flatten it (MAML's code for mini-ImageNet, giving 5*5*hidden features
            for 84x84 inputs).
        use_running_average: ``False`` (the default) normalises with the statistics of the current batch,
            as MAML's reference code does at training *and* test time. At test time this is transductive:
            a query point's prediction depends on the other query points in its batch. ``True`` uses the
            stored running statistics instead (the usual inductive evaluation).
        bn_momentum: decay of the running statistics, ``running = momentum * running + (1 - momentum) *
            batch``; 0.9 matches PyTorch's ``BatchNorm2d(momentum=0.1)``.
        bn_epsilon: added to the variance before normalising; 1e-5 matches PyTorch.
        conv: how convolutions are computed: ``"xla"`` (``flax.linen.Conv``), ``"patches"``
            (``jmeta.models.layers.PatchConv``, a matrix product over patches, which ``vmap`` over tasks turns
            into batched matrix products rather than grouped convolutions) or ``"auto"``: patches on CPU,
            XLA's convolution elsewhere. The parameters are the same either way.

    With ``use_running_average=False`` the running statistics are still updated, so ``apply`` must be
    called with ``mutable=["batch_stats"]`` (the updated statistics can be discarded).

    With the defaults the network is exactly the PyTorch workload ``4 x [Conv2d(c, 64, 3, stride=2,
    padding=1), BatchNorm2d(64) in train mode, ReLU]``, mean over space, ``Linear(64, num_classes)``
    (convolutions with biases, BatchNorm with a learnt scale and offset; PyTorch stores the *unbiased*
    batch variance in its running statistics where Flax stores the biased one, which only matters once
    ``use_running_average=True``).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> model = Conv4(num_classes=5)
        >>> variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28, 1)))
        >>> logits, _ = model.apply(variables, jnp.ones((10, 28, 28, 1)), mutable=["batch_stats"])
        >>> logits.shape
        (10, 5)
    """

    num_classes: int | None
    hidden: int = 64
    downsample: str = "stride"
    pool: str = "mean"
    use_running_average: bool = False
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    conv: str = "auto"

    def __post_init__(self) -> None:
        if self.num_classes is not None:
            positive_int("num_classes", self.num_classes)
        positive_int("hidden", self.hidden)
        one_of("downsample", self.downsample, DOWNSAMPLES)
        one_of("pool", self.pool, POOLS)
        one_of("conv", self.conv, CONVS)
        check_batch_norm(self.use_running_average, self.bn_momentum, self.bn_epsilon)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for images ``x`` of shape ``(batch, height, width, channels)``."""
        check_images(x, halvings=4 if self.downsample == "maxpool" else 0)
        stride = 2 if self.downsample == "stride" else 1
        use_patches = self.conv == "patches" or (self.conv == "auto" and jax.default_backend() == "cpu")
        for block in range(4):
            if use_patches:
                x = PatchConv(self.hidden, kernel_size=3, strides=stride, padding=1, name=f"conv{block}")(x)
            else:
                x = nn.Conv(self.hidden, (3, 3), strides=stride, padding=1, name=f"conv{block}")(x)
            x = nn.BatchNorm(
                use_running_average=self.use_running_average,
                momentum=self.bn_momentum,
                epsilon=self.bn_epsilon,
                name=f"bn{block}",
            )(x)
            x = nn.relu(x)
            if self.downsample == "maxpool":
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = jnp.mean(x, axis=(1, 2)) if self.pool == "mean" else x.reshape(x.shape[0], -1)
        return x if self.num_classes is None else nn.Dense(self.num_classes, name="head")(x)


def check_images(x: jax.Array, halvings: int = 0) -> None:
    """Raises unless ``x`` is a float batch of images that ``halvings`` 2x2 max-pools leave non-empty.

    Example::

        >>> import jax.numpy as jnp
        >>> check_images(jnp.zeros((2, 8, 8, 3)), halvings=4)
        Traceback (most recent call last):
        ValueError: x's height and width must be at least 16 to be max-pooled 4 times; got 8x8.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (batch, height, width, channels); got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array; got dtype {x.dtype}.")
    smallest = 2**halvings
    if min(x.shape[1:3]) < smallest:
        raise ValueError(
            f"x's height and width must be at least {smallest} to be max-pooled {halvings} times; "
            f"got {x.shape[1]}x{x.shape[2]}."
        )


def check_batch_norm(use_running_average: bool, bn_momentum: float, bn_epsilon: float) -> None:
    """Raises unless the batch-normalisation settings are a bool, a momentum in [0, 1) and an epsilon > 0.

    Example::

        >>> check_batch_norm(False, 1.5, 1e-5)
        Traceback (most recent call last):
        ValueError: bn_momentum must be a number in [0, 1); got 1.5.
    """
    if not isinstance(use_running_average, bool):
        raise TypeError(f"use_running_average must be a bool; got {use_running_average!r}.")
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, numbers.Real) or not 0 <= bn_momentum < 1:
        raise ValueError(f"bn_momentum must be a number in [0, 1); got {bn_momentum!r}.")
    positive_float("bn_epsilon", bn_epsilon)
