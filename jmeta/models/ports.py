"""Flax Linen ports of the networks in the source articles (``../shared/seeds`` beside the project), corrected.

Each class names its source file and what was wrong there. All of them return *logits* (or features):
the articles put a softmax inside the model and then gave it to a loss that expects logits or applied a
categorical loss to integer labels; in jmeta the softmax belongs to the loss (``jmeta.losses``).
Images are flattened first, so ``(batch, 28, 28, 1)`` and ``(batch, 784)`` inputs are the same.

Each port computes what its source framework's layers compute and, by default, starts from the weights that
framework would draw (``initialization``, one of :data:`INITIALIZATIONS`):

* ``"pytorch"`` (the PyTorch articles, 000 and 004): ``nn.Linear``'s weights and biases both
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. A PyTorch weight ``W`` ``(out, in)`` is this port's kernel
  ``W.T``: ``nn.Linear`` computes ``x @ W.T + b``;
* ``"keras"`` (the Keras articles, 002 and 003): ``Dense``'s Glorot-uniform kernel
  ``U(-sqrt(6 / (fan_in + fan_out)), ...)`` and zero bias; ``LSTM``'s Glorot-uniform input kernel,
  orthogonal recurrent kernel and zero bias but for the forget gate's, 1 (``unit_forget_bias``). The kernels
  have Keras's layout, so ``layer.get_weights()`` transfers as they are;
* ``"flax"``: Flax's defaults, LeCun-normal kernels and zero biases (orthogonal recurrent kernels).

Example::

    >>> import jax, jax.numpy as jnp
    >>> mlp = SourceMLP004()
    >>> variables = mlp.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> mlp.apply(variables, jnp.ones((2, 784))).shape
    (2, 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen

from jmeta.validation import one_of, positive_int

INITIALIZATIONS = ("pytorch", "keras", "flax")
Initializer = Callable[..., jax.Array]


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def _symmetric_uniform(bound: float) -> Initializer:
    def init(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense(features: int, fan_in: int, initialization: str, name: str | None = None) -> linen.Dense:
    """A ``linen.Dense(features)`` for inputs of width ``fan_in``, initialised as ``initialization`` says
    (see the module docstring).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> layer = dense(3, fan_in=4, initialization="keras")
        >>> layer.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]["bias"].tolist()
        [0.0, 0.0, 0.0]
    """
    one_of("initialization", initialization, INITIALIZATIONS)
    if initialization == "pytorch":
        uniform = _symmetric_uniform(1 / math.sqrt(fan_in))
        return linen.Dense(features, kernel_init=uniform, bias_init=uniform, name=name)
    keras = initialization == "keras"
    kernel_init = linen.initializers.xavier_uniform() if keras else linen.initializers.lecun_normal()
    return linen.Dense(features, kernel_init=kernel_init, name=name)


class _OneHiddenLayer(linen.Module):
    """Flatten, Dense(hidden) + ReLU, Dense(num_classes): logits. The ports below set its sizes."""

    hidden: int
    num_classes: int
    initialization: str

    def __post_init__(self) -> None:
        positive_int("hidden", self.hidden)
        positive_int("num_classes", self.num_classes)
        one_of("initialization", self.initialization, INITIALIZATIONS)
        super().__post_init__()

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _flatten(x)
        x = linen.relu(dense(self.hidden, x.shape[-1], self.initialization, name="Dense_0")(x))
        return dense(self.num_classes, self.hidden, self.initialization, name="Dense_1")(x)


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
    initialization: str = "pytorch"


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
    initialization: str = "pytorch"

    def __post_init__(self) -> None:
        positive_int("num_classes", self.num_classes)
        for width in self.hidden:
            positive_int("hidden widths", width)
        one_of("initialization", self.initialization, INITIALIZATIONS)
        super().__post_init__()

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _flatten(x)
        for i, width in enumerate(self.hidden):
            x = linen.relu(dense(width, x.shape[-1], self.initialization, name=f"Dense_{i}")(x))
        return dense(self.num_classes, x.shape[-1], self.initialization, name=f"Dense_{len(self.hidden)}")(x)


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
    initialization: str = "keras"

    def __post_init__(self) -> None:
        positive_int("features", self.features)
        if self.num_classes is not None:
            positive_int("num_classes", self.num_classes)
        one_of("initialization", self.initialization, INITIALIZATIONS)
        super().__post_init__()

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _flatten(x)
        x = linen.relu(dense(self.features, x.shape[-1], self.initialization, name="trunk")(x))
        return x if self.num_classes is None else dense(self.num_classes, self.features, self.initialization, "head")(x)


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
    initialization: str = "keras"


class LearningCurveLSTM003(linen.Module):
    """The meta-model of ``003_95a7f28474b43b71.txt``: LSTM(64) over learning curves, then Dense(k).

    Input ``(batch, time, learners)``: at each time step, the validation accuracy of every base learner
    (e.g. after training on a growing part of a task's data, see :mod:`jmeta.systems.selection`). Output
    ``(batch, num_learners)``: logits of which learner is best on the task. Corrections: the article
    feeds a Python list of one model's accuracies, copies a base model's weights into the LSTM
    (``set_weights``), fits against the Iris test *labels* and predicts from them; here the LSTM reads
    the curves of every learner of a task and is trained to name the best one. Its hidden state after
    the last step (:class:`KerasLSTM`, Keras's LSTM equations and parameter layout) feeds the head.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> model = LearningCurveLSTM003(num_learners=5)
        >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 5)))
        >>> model.apply(variables, jnp.ones((2, 4, 5))).shape
        (2, 5)
    """

    num_learners: int
    hidden: int = 64
    initialization: str = "keras"

    def __post_init__(self) -> None:
        positive_int("num_learners", self.num_learners)
        positive_int("hidden", self.hidden)
        one_of("initialization", self.initialization, INITIALIZATIONS)
        super().__post_init__()

    @linen.compact
    def __call__(self, curves: jax.Array) -> jax.Array:
        if curves.ndim != 3:
            raise ValueError(f"curves must have shape (batch, time, learners); got shape {curves.shape}.")
        hidden = KerasLSTM(self.hidden, self.initialization, name="LSTM_0")(curves)
        return dense(self.num_learners, self.hidden, self.initialization, name="Dense_0")(hidden)


class KerasLSTM(linen.Module):
    """Keras's ``LSTM(units)`` (``return_sequences=False``): the hidden state after the last step of
    ``x`` ``(batch, time, features)``, shape ``(batch, units)``, from zero initial states.

    Parameters in Keras's layout: ``kernel`` ``(features, 4 units)``, ``recurrent_kernel`` ``(units, 4
    units)``, ``bias`` ``(4 units,)``, gates in Keras's order i, f, c, o. Each step computes
    ``z = x_t @ kernel + h @ recurrent_kernel + bias``, ``c = sigmoid(z_f) c + sigmoid(z_i) tanh(z_c)`` and
    ``h = sigmoid(z_o) tanh(c)`` (Keras's defaults ``activation="tanh"``,
    ``recurrent_activation="sigmoid"``). ``initialization="keras"``: Glorot-uniform kernel, orthogonal
    recurrent kernel, zero bias with the forget gate's set to 1; ``"flax"``: as Flax's ``LSTMCell``
    (LeCun-normal, an orthogonal block per gate, zero bias); ``"pytorch"``: ``nn.LSTM``'s
    ``U(-1/sqrt(units), 1/sqrt(units))`` for everything (one bias, where PyTorch adds two).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> lstm = KerasLSTM(4)
        >>> params = lstm.init(jax.random.key(0), jnp.zeros((1, 3, 2)))["params"]
        >>> params["bias"].tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """

    units: int
    initialization: str = "keras"

    def __post_init__(self) -> None:
        positive_int("units", self.units)
        one_of("initialization", self.initialization, INITIALIZATIONS)
        super().__post_init__()

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        units, features = self.units, x.shape[-1]
        if self.initialization == "keras":
            kernel_init, recurrent_init = linen.initializers.xavier_uniform(), linen.initializers.orthogonal()
            bias_init = _forget_bias_one
        elif self.initialization == "flax":
            kernel_init, recurrent_init, bias_init = linen.initializers.lecun_normal(), _orthogonal_per_gate, None
        else:
            kernel_init = recurrent_init = bias_init = _symmetric_uniform(1 / math.sqrt(units))
        kernel = self.param("kernel", kernel_init, (features, 4 * units))
        recurrent = self.param("recurrent_kernel", recurrent_init, (units, 4 * units))
        bias = self.param("bias", bias_init or linen.initializers.zeros, (4 * units,))

        def step(carry: tuple[jax.Array, jax.Array], x_t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
            h, c = carry
            i, f, g, o = jnp.split(x_t @ kernel + h @ recurrent + bias, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            return (jax.nn.sigmoid(o) * jnp.tanh(c), c), None

        zeros = jnp.zeros((x.shape[0], units), kernel.dtype)
        (h, _), _ = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
        return h


def _forget_bias_one(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    units = shape[0] // 4
    return jnp.zeros(shape, dtype).at[units : 2 * units].set(1.0)


def _orthogonal_per_gate(key: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype = jnp.float32) -> jax.Array:
    units = shape[0]
    blocks = [linen.initializers.orthogonal()(k, (units, units), dtype) for k in jax.random.split(key, 4)]
    return jnp.concatenate(blocks, axis=1)
