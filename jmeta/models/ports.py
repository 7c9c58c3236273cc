"""Flax Linen ports of the networks in the source articles (``../shared/seeds`` beside the project), corrected.

Each class names its source file and what was wrong there. All of them return *logits* (or features):
the articles put a softmax inside the model and then gave it to a loss that expects logits or applied a
categorical loss to integer labels; in jmeta the softmax belongs to the loss (``jmeta.losses``).
Images are flattened first, so ``(batch, 28, 28, 1)`` and ``(batch, 784)`` inputs are the same.

Example::

    >>> import jax, jax.numpy as jnp
    >>> mlp = SourceMLP004()
    >>> variables = mlp.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> mlp.apply(variables, jnp.ones((2, 784))).shape
    (2, 10)
"""

from __future__ import annotations

import jax
from flax import linen

from jmeta.validation import positive_int


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


class _OneHiddenLayer(linen.Module):
    """Flatten, Dense(hidden) + ReLU, Dense(num_classes): logits. The ports below set its sizes."""

    hidden: int
    num_classes: int

    def __post_init__(self) -> None:
        positive_int("hidden", self.hidden)
        positive_int("num_classes", self.num_classes)
        super().__post_init__()

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = linen.relu(linen.Dense(self.hidden)(_flatten(x)))
        return linen.Dense(self.num_classes)(x)


class SourceMLP004(_OneHiddenLayer):
    """The MNIST MLP 784-1000-10 with a ReLU, from ``004_02928b0a6f262b05.txt``.

    The network itself is right; what the article got wrong is around it: the same plain SGD loop
    (``lr=1e-3``) is shown under the headings MAML, MAML++ and Reptile. Use this model with
    ``jmeta.maml`` (or another learner) to get the algorithm the heading names. Returns logits.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> variables = SourceMLP004(num_classes=5).init(jax.random.key(0), jnp.zeros((1, 784)))
        >>> variables["params"]["Dense_0"]["kernel"].shape
        (784, 1000)
    """

    hidden: int = 1000
    num_classes: int = 10


class ImageMLP000(linen.Module):
    """The image MLP 784-512-256 of ``000_833f75e73f6a9cba.txt``, with the output layer it lacked.

    The article's network ends with ``Linear(512, 256), ReLU()`` and hands those 256 non-negative
    features to ``CrossEntropyLoss`` as if they were class scores; here a ``Dense(num_classes)`` layer
    follows them and produces the logits. (Its loops also build ``inputs = (x, y)`` tuples and
    ``return`` outside a function; those belong to the training code, which jmeta replaces.)

    Example::

        >>> import jax, jax.numpy as jnp
        >>> model = ImageMLP000(num_classes=10)
        >>> model.apply(model.init(jax.random.key(0), jnp.zeros((1, 784))), jnp.ones((3, 784))).shape
        (3, 10)
    """

    num_classes: int = 10
    hidden: tuple[int, ...] = (512, 256)

    def __post_init__(self) -> None:
        positive_int("num_classes", self.num_classes)
        for width in self.hidden:
            positive_int("hidden widths", width)
        super().__post_init__()

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _flatten(x)
        for width in self.hidden:
            x = linen.relu(linen.Dense(width)(x))
        return linen.Dense(self.num_classes)(x)


class SharedTrunk002(linen.Module):
    """The "shared knowledge" network of ``002_f30f3d58d6380daa.txt``: Dense(64)+ReLU, then a head.

    Corrections: the article applies ``Dense(64)`` directly to ``(28, 28, 1)`` images, which in Keras
    acts on the last axis only (one pixel at a time); here the image is flattened first. Its
    ``shared_knowledge`` layer is defined but never used, and its softmax head sits inside the model;
    here the Dense(64) layer *is* the shared trunk, and the head returns logits.

    With ``num_classes=None`` the module is the trunk alone and returns the ``features`` ReLU features,
    for :mod:`jmeta.systems.multitask`, which keeps one head per training task on top of it; with
    ``num_classes=k`` it is the article's whole model (trunk and a single ``k``-way head).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> trunk = SharedTrunk002()
        >>> trunk.apply(trunk.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1))), jnp.ones((2, 784))).shape
        (2, 64)
    """

    features: int = 64
    num_classes: int | None = None

    def __post_init__(self) -> None:
        positive_int("features", self.features)
        if self.num_classes is not None:
            positive_int("num_classes", self.num_classes)
        super().__post_init__()

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = linen.relu(linen.Dense(self.features, name="trunk")(_flatten(x)))
        return x if self.num_classes is None else linen.Dense(self.num_classes, name="head")(x)


class IrisBaseModel003(_OneHiddenLayer):
    """The base-learner of ``003_95a7f28474b43b71.txt``: Dense(64)+ReLU, Dense(3), for Iris.

    Corrections: the article ends in a softmax and trains with ``categorical_crossentropy`` on integer
    labels (which needs one-hot targets); here the model returns logits for
    ``jmeta.losses.cross_entropy`` with integer labels. ``num_classes`` defaults to Iris's 3.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> model = IrisBaseModel003()
        >>> model.apply(model.init(jax.random.key(0), jnp.zeros((1, 4))), jnp.ones((5, 4))).shape
        (5, 3)
    """

    hidden: int = 64
    num_classes: int = 3


class LearningCurveLSTM003(linen.Module):
    """The meta-model of ``003_95a7f28474b43b71.txt``: LSTM(64) over learning curves, then Dense(k).

    Input ``(batch, time, learners)``: at each time step, the validation accuracy of every base learner
    (e.g. after training on a growing part of a task's data, see :mod:`jmeta.systems.selection`). Output
    ``(batch, num_learners)``: logits of which learner is best on the task. Corrections: the article
    feeds a Python list of one model's accuracies, copies a base model's weights into the LSTM
    (``set_weights``), fits against the Iris test *labels* and predicts from them; here the LSTM reads
    the curves of every learner of a task and is trained to name the best one. Its hidden state after
    the last step feeds the head.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> model = LearningCurveLSTM003(num_learners=5)
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 5)))
        >>> model.apply(variables, jnp.ones((2, 4, 5))).shape
        (2, 5)
    """

    num_learners: int
    hidden: int = 64

    def __post_init__(self) -> None:
        positive_int("num_learners", self.num_learners)
        positive_int("hidden", self.hidden)
        super().__post_init__()

    @linen.compact
    def __call__(self, curves: jax.Array) -> jax.Array:
        if curves.ndim != 3:
            raise ValueError(f"curves must have shape (batch, time, learners); got shape {curves.shape}.")
        (_, hidden), _ = linen.RNN(linen.OptimizedLSTMCell(self.hidden), return_carry=True)(curves)
        return linen.Dense(self.num_learners)(hidden)
