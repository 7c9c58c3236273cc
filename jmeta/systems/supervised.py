"""Source 000: supervised image classification with the article's MLP 784-512-256 (``ImageMLP000``, with
the output layer it lacked) or 004's 784-1000-10, trained by SGD with momentum 0.9 as the article's loop.

:func:`supervised_split` gives the ten-class train and test examples of a data set, :func:`fit_classifier`
trains a classifier on them; :func:`program` is the ``supervised`` program of ``jmeta train``
(``experiments/seed000_image_mlp.py``).

Example::

    >>> (train_x, train_y), (test_x, test_y) = supervised_split("digits", "", seed=0)
    >>> train_x.dtype, train_x.shape[1:]
    (dtype('float32'), (8, 8, 1))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jmeta.data import load
from jmeta.evaluation import estimate
from jmeta.losses import cross_entropy
from jmeta.models.ports import ImageMLP000, SourceMLP004
from jmeta.nn import Model, PyTree, from_linen
from jmeta.systems.common import report, train_steps
from jmeta.validation import one_of, positive_int

# Ten-class sets with their own train and test examples, and those whose class halves are pooled and split.
OFFICIAL_SPLIT = ("mnist", "cifar10", "mnist-idx")
POOLED = ("digits", "mnist-sample")


def scaled(images: np.ndarray) -> np.ndarray:
    """Images as float32, uint8 grey levels scaled to [0, 1].

    Example::

        >>> scaled(np.array([0, 255], np.uint8)).tolist()
        [0.0, 1.0]
    """
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def supervised_split(task: str, data_dir: str, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``((train_x, train_y), (test_x, test_y))`` over all ten classes of ``task``.

    MNIST and CIFAR-10 (TFDS) and ``mnist-idx`` (MNIST's IDX files in ``data_dir``) use their official
    train and test examples (``split="official"``). scikit-learn's ``digits`` and ``mnist-sample`` (5,000
    real MNIST digits, ``pip install 'jmeta[mnist]'``) have no such split, so their two class halves (0-4 and
    5-9) are pooled back into ten classes and split 80/20 within each class, at random with ``seed``.

    Example::

        >>> (train_x, train_y), (test_x, test_y) = supervised_split("digits", "", seed=0)
        >>> len(train_x) + len(test_x), sorted(set(test_y.tolist())) == list(range(10))
        (1797, True)
    """
    one_of("task", task, OFFICIAL_SPLIT + POOLED)
    if task in OFFICIAL_SPLIT:
        data = load(task, data_dir or None, split="official")
        return tuple((scaled(data[s].images), np.asarray(data[s].labels)) for s in ("train", "test"))
    data = load(task, data_dir or None)
    images = np.concatenate([data["train"].images, data["test"].images])
    labels = np.concatenate([data["train"].labels, data["test"].labels + data["train"].num_classes])
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[: round(0.2 * len(members))]] = True
    return (scaled(images[~test]), labels[~test]), (scaled(images[test]), labels[test])


def fit_classifier(
    model: Model,
    params: PyTree,
    model_state: PyTree,
    x: np.ndarray,
    y: np.ndarray,
    key: jax.Array,
    *,
    steps: int,
    batch: int,
    lr: float,
) -> tuple[PyTree, float]:
    """Trains ``model`` (logits) from ``params`` on examples ``x`` ``(n, *input_shape)`` with integer
    labels ``y`` ``(n,)`` by ``steps`` steps of SGD with momentum 0.9 at ``lr`` on mini-batches of
    ``batch`` examples drawn uniformly with replacement (from ``key``), minimising the cross-entropy;
    returns the parameters and the last mini-batch's loss. ValueError for a non-positive count.

    Example::

        >>> import jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((2,)), jnp.zeros((1, 1)))
        >>> params, state = model.init(jax.random.key(0))
        >>> x, y = np.array([[-1.0], [1.0]], np.float32), np.array([0, 1])
        >>> params, loss = fit_classifier(model, params, state, x, y, jax.random.key(1), steps=200, batch=2, lr=0.5)
        >>> loss < 0.1
        True
    """
    optimizer = optax.sgd(lr, momentum=0.9)

    def draw(x: jax.Array, y: jax.Array, key: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
        picks = jax.random.randint(key, (size,), 0, len(y))
        return x[picks], y[picks]

    sample = jax.tree_util.Partial(draw, jnp.asarray(x), jnp.asarray(y))

    def update(carry: tuple[PyTree, optax.OptState], batch: tuple[jax.Array, jax.Array]) -> tuple[Any, dict]:
        params, opt_state = carry
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(model.apply(p, model_state, batch[0])[0], batch[1]))(
            params
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), {"loss": loss}

    steps, batch = positive_int("steps", steps), positive_int("batch", batch)
    (params, _), last = train_steps(update, (params, optimizer.init(params)), sample, key, steps=steps, batch=batch)
    return params, last["loss"]


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Trains ``config.model`` (``image_mlp_000`` or ``source_mlp_004``) on ``config.task``'s training
    examples by ``config.steps`` steps of SGD (``config.lr``, momentum 0.9) on mini-batches of
    ``config.meta_batch``; reports accuracy on ``config.eval_tasks`` test examples (all, or a random subset) with a 95%
    CI over examples (``1.96 * std / sqrt(n)`` of the per-example correctness)."""
    modules = {"image_mlp_000": ImageMLP000, "source_mlp_004": SourceMLP004}
    module = modules[one_of("model", config.model, tuple(modules))](num_classes=10)
    (train_x, train_y), (test_x, test_y) = supervised_split(config.task, config.data_dir, config.seed)
    model = from_linen(module, jnp.asarray(train_x[:1]))
    init_key, batch_key = jax.random.split(jax.random.key(config.seed))
    params, model_state = model.init(init_key)
    steps, batch = positive_int("steps", config.steps), positive_int("meta_batch", config.meta_batch)
    params, last_loss = fit_classifier(
        model, params, model_state, train_x, train_y, batch_key, steps=steps, batch=batch, lr=config.lr
    )
    count = min(positive_int("eval_tasks", config.eval_tasks), len(test_y))
    scored = np.random.default_rng(config.seed).permutation(len(test_y))[:count]
    logits, _ = jax.jit(model.apply)(params, model_state, jnp.asarray(test_x[scored]))
    correct = np.asarray(jnp.argmax(logits, -1) == jnp.asarray(test_y[scored]), np.float64)
    protocol = {
        "model": config.model,
        "tasks": count,
        "shots": "all training examples",
        "queries_per_task": 1,
        "inner_lr": config.lr,
        "checkpoint": f"last, step {steps} (SGD momentum 0.9, batch {batch}; final training loss {last_loss:.4g})",
        "ci": "95% over test examples, 1.96 * std / sqrt(examples)",
    }
    return report(config, {"test": {"accuracy": estimate(correct)}}, protocol)
