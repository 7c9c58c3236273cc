"""Multi-layer perceptron, e.g. MAML's sinusoid regressor 1-40-40-1 (Finn et al. 2017, sec. 5.1)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen


class MLP(linen.Module):
    """Dense layers of the given widths with ReLU between them (none after the last).

    Weights start from Flax's LeCun normal, or, with ``init_std``, from a normal truncated at two standard
    deviations with that std, as MAML's reference code does (std 0.01); biases start at zero.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> mlp = MLP((40, 40, 1))
        >>> variables = mlp.init(jax.random.key(0), jnp.zeros((1, 1)))
        >>> mlp.apply(variables, jnp.ones((5, 1))).shape
        (5, 1)
    """

    features: Sequence[int]
    init_std: float | None = None

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        kernel_init = (
            linen.initializers.lecun_normal()
            if self.init_std is None
            else linen.initializers.truncated_normal(self.init_std)
        )
        for i, width in enumerate(self.features):
            x = linen.Dense(width, kernel_init=kernel_init)(x)
            if i < len(self.features) - 1:
                x = linen.relu(x)
        return x
