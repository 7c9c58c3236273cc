"""Layers with the parameters of their Flax counterparts but a computation that batches better over tasks.

``PatchConv`` is a 2-D convolution computed as one matrix product over extracted patches (im2col). Under
``vmap`` over tasks with per-task kernels (MAML's adapted weights), XLA turns a native convolution into a
grouped convolution, which XLA:CPU runs ~35x slower than task by task; the patch form becomes a batched
matrix product instead. Measured on the ``omniglot-maml`` workload (2-core CPU): see docs/batching.md.

Example::

    >>> import jax, jax.numpy as jnp
    >>> layer = PatchConv(8, strides=2)
    >>> variables = layer.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> layer.apply(variables, jnp.ones((2, 28, 28, 1))).shape
    (2, 14, 14, 8)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen


class PatchConv(linen.Module):
    """A square ``kernel_size`` convolution with symmetric zero ``padding`` and ``strides``, NHWC.

    Its parameters are those of ``flax.linen.Conv`` (``kernel`` HWIO and ``bias``, same initialisers), so
    the two are interchangeable in a checkpoint; outputs agree to float rounding.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    padding: int = 1

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p = self.kernel_size, self.strides, self.padding
        channels = x.shape[-1]
        kernel = self.param("kernel", linen.initializers.lecun_normal(), (k, k, channels, self.features))
        bias = self.param("bias", linen.initializers.zeros_init(), (self.features,))
        padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        out_h, out_w = (padded.shape[1] - k) // s + 1, (padded.shape[2] - k) // s + 1
        patches = jnp.concatenate(
            [
                padded[:, i : i + s * (out_h - 1) + 1 : s, j : j + s * (out_w - 1) + 1 : s, :]
                for i in range(k)
                for j in range(k)
            ],
            axis=-1,
        )
        return patches @ kernel.reshape(k * k * channels, self.features) + bias
