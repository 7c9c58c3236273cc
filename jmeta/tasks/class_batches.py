"""Batches of examples labelled with their class among *all* the training classes, for pre-training a network
with one softmax over every class (the "Baseline" of Chen et al. 2019, "A Closer Look at Few-shot
Classification", ICLR; the all-classes training of ``jmeta.systems.multitask``) through jmeta's episodic
trainer.

A :class:`ClassBatchSampler` is a task sampler like ``EpisodeSampler``: ``sampler(key, num_tasks) -> Task``.
Each "task" is a minibatch of ``points`` examples drawn uniformly with replacement from the whole training
set, split into a support half and a query half (a learner that pre-trains, e.g.
``jmeta.learners.baseline``, joins them into one minibatch). The ``"all-classes"`` task family
(``jmeta.pretraining``) draws them from a data set's training classes. Its targets are **one-hot** float32 rows over
the ``num_classes`` training classes, ``(points, num_classes)``, not integer labels: that tells such a
learner, from the shapes alone, that a task is a labelled minibatch and not an N-way episode, and keeps the
class indices from being checked against the ``ways`` outputs of a head fitted to an episode
(``jmeta.learners.labels``). ``jnp.argmax`` of a target row is the class.

Example::

    >>> import jax, numpy as np
    >>> from jmeta.data.dataset import ClassDataset
    >>> ds = ClassDataset(np.zeros((12, 2, 2, 1), np.uint8), np.repeat(np.arange(4), 3), "abcd")
    >>> tasks = make_class_batch_sampler(ds, points=6)(jax.random.key(0), 2)
    >>> tasks.support_x.shape, tasks.support_y.shape, tasks.query_y.shape
    ((2, 3, 2, 2, 1), (2, 3, 4), (2, 3, 4))
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jmeta.data.dataset import ClassDataset
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


def draw_examples(
    images: jax.Array, labels: jax.Array, key: jax.Array, shape: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """``shape`` examples drawn uniformly with replacement from ``images`` ``(examples, *input_shape)`` and
    their ``labels`` ``(examples,)``: returns ``x`` ``(*shape, *input_shape)`` float32 (uint8 images scaled
    to [0, 1]) and ``y`` ``(*shape,)``.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> x, y = draw_examples(jnp.arange(3.0)[:, None], jnp.arange(3), jax.random.key(0), (5,))
        >>> bool((x[:, 0] == y).all()), x.shape
        (True, (5, 1))
    """
    picks = jax.random.randint(key, shape, 0, labels.shape[0])
    x = images[picks]
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    return x, labels[picks]


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["images", "labels"], meta_fields=["num_classes", "points"]
)
@dataclasses.dataclass(frozen=True, eq=False)
class ClassBatchSampler:
    """Draws labelled minibatches over every class as tasks: ``sampler(key, num_tasks) -> Task`` with
    ``support_x`` ``(num_tasks, points // 2, *input_shape)`` float32, ``support_y`` ``(num_tasks, points // 2,
    num_classes)`` float32 one-hot, and the query set the other ``points - points // 2`` examples likewise.
    Build it with :func:`make_class_batch_sampler`; it is a pytree (pass it to jitted code as an argument).
    """

    images: jax.Array  # (examples, *input_shape)
    labels: jax.Array  # (examples,) int32
    num_classes: int
    points: int

    def __call__(self, key: jax.Array, num_tasks: int) -> Task:
        return _sample(self, key, positive_int("num_tasks", num_tasks))


def make_class_batch_sampler(dataset: ClassDataset, points: int) -> ClassBatchSampler:
    """The :class:`ClassBatchSampler` of every example of ``dataset`` (copied to the default device), drawing
    minibatches of ``points`` examples (at least 2: one support and one query point).

    Raises TypeError for a ``dataset`` that is not a ``jmeta.data.ClassDataset`` and ValueError for
    ``points`` below 2.

    Example::

        >>> import numpy as np
        >>> ds = ClassDataset(np.zeros((10, 3), np.float32), np.repeat(np.arange(5), 2), "abcde")
        >>> make_class_batch_sampler(ds, points=16).num_classes
        5
    """
    if not isinstance(dataset, ClassDataset):
        raise TypeError(f"dataset must be a jmeta.data.ClassDataset; got {type(dataset).__name__}.")
    if positive_int("points", points) < 2:
        raise ValueError(f"points must be at least 2 (one support and one query point); got {points}.")
    return ClassBatchSampler(
        jnp.asarray(dataset.images), jnp.asarray(dataset.labels, jnp.int32), dataset.num_classes, points
    )


@functools.partial(jax.jit, static_argnames="num_tasks")
def _sample(sampler: ClassBatchSampler, key: jax.Array, num_tasks: int) -> Task:
    x, y = draw_examples(sampler.images, sampler.labels, key, (num_tasks, sampler.points))
    y = jax.nn.one_hot(y, sampler.num_classes, dtype=jnp.float32)
    half = sampler.points // 2
    return Task(x[:, :half], y[:, :half], x[:, half:], y[:, half:])
