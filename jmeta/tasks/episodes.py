"""N-way K-shot episodes drawn on the device from a :class:`~jmeta.data.dataset.ClassDataset`.

An episode picks ``ways`` distinct classes uniformly at random, labels them ``0..ways-1`` in the random
order they were picked (so a class's label changes from episode to episode), and draws ``shots +
queries`` distinct examples of each class uniformly at random, the first ``shots`` for the support set
and the rest for the query set. Classes may have unequal numbers of examples: each class draws from its
own examples only: the ``shots + queries`` largest of i.i.d. uniform scores over the class's row of a
``-1``-padded index table, with the padding scored below every real example.

Sampling is a pure function of a PRNG key, jit-compiled, with no host round trip per episode. Support
and query points are grouped by label: ``support_y`` is ``[0]*shots + [1]*shots + ...``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jmeta.data.dataset import ClassArrays, ClassDataset
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["arrays"], meta_fields=["ways", "shots", "queries"]
)
@dataclasses.dataclass(frozen=True, eq=False)
class EpisodeSampler:
    """Draws batches of N-way K-shot episodes: ``sampler(key, num_tasks) -> Task``.

    Build it with :func:`make_episode_sampler`, which checks the arguments against the data. The sampler
    is a pytree (its device arrays are leaves), so pass it as an argument to your own ``jax.jit``-ed
    step rather than closing over it: a closed-over sampler would be baked into the compiled program as
    constants.

    Example::

        >>> import jax, numpy as np
        >>> from jmeta.data.dataset import ClassDataset
        >>> ds = ClassDataset(np.zeros((12, 2, 2, 1), np.uint8), np.repeat(np.arange(4), 3), "abcd")
        >>> sampler = make_episode_sampler(ds, ways=2, shots=1, queries=2)
        >>> step = jax.jit(lambda s, key: s(key, 8).query_x.mean())
        >>> float(step(sampler, jax.random.key(0)))
        0.0
    """

    arrays: ClassArrays
    ways: int
    shots: int
    queries: int

    def __call__(self, key: jax.Array, num_tasks: int) -> Task:
        """Draws ``num_tasks`` episodes; every field has a leading task axis.

        Shapes: ``support_x`` ``(num_tasks, ways*shots, *input_shape)`` float32, ``support_y``
        ``(num_tasks, ways*shots)`` int32, and likewise ``query_x``/``query_y`` with ``ways*queries``.
        Images stored as uint8 come out scaled to [0, 1]; float32 features as they are.
        """
        return _sample(self, key, positive_int("num_tasks", num_tasks))


def make_episode_sampler(dataset: ClassDataset, ways: int, shots: int, queries: int) -> EpisodeSampler:
    """Checks the episode shape against ``dataset`` and copies its arrays to the device.

    Raises ValueError, before anything is compiled, when there are fewer than ``ways`` classes or a class
    has fewer than ``shots + queries`` examples.

    Example::

        >>> import jax, numpy as np
        >>> from jmeta.data.dataset import ClassDataset
        >>> ds = ClassDataset(np.zeros((12, 2, 2, 1), np.uint8), np.repeat(np.arange(4), 3), "abcd")
        >>> task = make_episode_sampler(ds, ways=3, shots=1, queries=2)(jax.random.key(0), num_tasks=5)
        >>> task.support_x.shape, task.query_y.shape
        ((5, 3, 2, 2, 1), (5, 6))
    """
    if not isinstance(dataset, ClassDataset):
        raise TypeError(
            f"dataset must be a jmeta.data.ClassDataset, e.g. jmeta.data.load('omniglot')['train']; got "
            f"{type(dataset).__name__}."
        )
    ways = positive_int("ways", ways)
    shots = positive_int("shots", shots)
    queries = positive_int("queries", queries)
    if ways > dataset.num_classes:
        raise ValueError(
            f"ways must be at most the number of classes in the dataset ({dataset.num_classes}); got "
            f"ways={ways}. Lower ways, or use a split with more classes."
        )
    smallest = int(dataset.counts.min())
    if shots + queries > smallest:
        small = [dataset.class_names[c] for c in (dataset.counts < shots + queries).nonzero()[0][:3]]
        raise ValueError(
            f"shots + queries must be at most the number of examples in the smallest class ({smallest}); got "
            f"shots={shots} + queries={queries} = {shots + queries}. Lower shots or queries, or drop the "
            f"classes with fewer than {shots + queries} examples (such as {small})."
        )
    return EpisodeSampler(dataset.device_arrays(), ways, shots, queries)


def _scores(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """I.i.d. uniform int32 scores in [0, 2**31): 31 random bits, so that ties (which top_k would break
    by position) are rare, unlike with float32's 23."""
    return (jax.random.bits(key, shape, jnp.uint32) >> 1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="num_tasks")
def _sample(sampler: EpisodeSampler, key: jax.Array, num_tasks: int) -> Task:
    images, index = sampler.arrays
    ways, shots, queries = sampler.ways, sampler.shots, sampler.queries
    num_classes, max_count = index.shape
    class_key, example_key = jax.random.split(key)
    # The ways largest of i.i.d. uniform scores: distinct classes, uniformly drawn, in random order.
    _, classes = jax.lax.top_k(_scores(class_key, (num_tasks, num_classes)), ways)
    rows = index[classes]  # (num_tasks, ways, max_count), -1 past each class's count
    # Padding scores -1, below every real example's score: since shots + queries <= each class's count,
    # only real examples are drawn, uniformly and without replacement.
    scores = jnp.where(rows >= 0, _scores(example_key, rows.shape), -1)
    _, picks = jax.lax.top_k(scores, shots + queries)
    x = images[jnp.take_along_axis(rows, picks, axis=-1)]  # (num_tasks, ways, shots + queries, *input_shape)
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    y = jnp.broadcast_to(jnp.arange(ways, dtype=jnp.int32)[:, None], (num_tasks, ways, shots + queries))
    input_shape = images.shape[1:]
    return Task(
        x[:, :, :shots].reshape(num_tasks, ways * shots, *input_shape),
        y[:, :, :shots].reshape(num_tasks, ways * shots),
        x[:, :, shots:].reshape(num_tasks, ways * queries, *input_shape),
        y[:, :, shots:].reshape(num_tasks, ways * queries),
    )
