"""N-way K-shot episodes drawn on the device from a :class:`~jmeta.data.dataset.ClassDataset`.

An episode picks ``ways`` distinct classes uniformly at random, labels them ``0..ways-1`` in the random
order they were picked (so a class's label changes from episode to episode), and draws ``shots +
queries`` distinct examples of each class uniformly at random, the first ``shots`` for the support set
and the rest for the query set. Classes may have unequal numbers of examples: each class draws from its
own examples only: the ``shots + queries`` largest of i.i.d. uniform scores over the class's row of a
``-1``-padded index table, with the padding scored below every real example.

Sampling is a pure function of a PRNG key, jit-compiled, with no host round trip per episode. Support
and query points are grouped by label: ``support_y`` is ``[0]*shots + [1]*shots + ...``.

Per-episode augmentation (:class:`Augment`), also on the device and a pure function of the key:

* ``rot90``: each class of an episode is rotated by its own random multiple of 90 degrees, the same for
  all its support and query images, as MAML's reference code does for Omniglot (Finn et al. 2017, whose
  data generator draws a rotation per class of every task, following Santoro et al. 2016). jmeta's
  Omniglot loader instead adds rotated copies as new classes (``rotate``, Vinyals et al. 2016); use one
  or the other, not both.
* ``cropP``: each image is padded with ``P`` zero pixels on every side and a window of the original size
  is cut at a random place; ``flip``: each image is flipped left-right with probability 1/2. These are
  the usual mini-ImageNet augmentations of metric-based few-shot learners (e.g. Lee et al. 2019,
  MetaOptNet: random crops with 8 pixels of padding and horizontal flips).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmeta.data.dataset import ClassArrays, ClassDataset
from jmeta.tasks.task import Task
from jmeta.validation import positive_int


@dataclasses.dataclass(frozen=True)
class Augment:
    """Per-episode augmentation: ``rotate90`` (a random multiple of 90 degrees per class of an episode),
    ``crop_padding`` (random crops after padding by that many pixels; 0 = none), ``flip`` (random
    left-right flips per image). Build one from text with :meth:`parse`.

    Example::

        >>> Augment.parse("crop8+flip")
        Augment(rotate90=False, crop_padding=8, flip=True)
    """

    rotate90: bool = False
    crop_padding: int = 0
    flip: bool = False

    @classmethod
    def parse(cls, text: str) -> Augment:
        """``""`` (none), or ``+``-joined parts: ``rot90``, ``cropP`` (``P`` pixels of padding), ``flip``.

        Example::

            >>> Augment.parse("rot90")
            Augment(rotate90=True, crop_padding=0, flip=False)
        """
        if not isinstance(text, str):
            raise ValueError(f"augment must be a string such as 'rot90' or 'crop8+flip' ('' for none); got {text!r}.")
        rotate90, padding, flip = False, 0, False
        for part in filter(None, text.split("+")):
            if part == "rot90":
                rotate90 = True
            elif part == "flip":
                flip = True
            elif part.startswith("crop") and part[4:].isdigit() and int(part[4:]) > 0:
                padding = int(part[4:])
            else:
                raise ValueError(
                    f"augment must be '' or parts joined by '+': 'rot90', 'cropP' (P pixels of padding, e.g. "
                    f"crop8), 'flip'; got {text!r} (the part {part!r})."
                )
        return cls(rotate90, padding, flip)

    def __bool__(self) -> bool:
        return self.rotate90 or self.crop_padding > 0 or self.flip


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["arrays"], meta_fields=["ways", "shots", "queries", "augment"]
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
    augment: Augment = Augment()

    def __call__(self, key: jax.Array, num_tasks: int) -> Task:
        """Draws ``num_tasks`` episodes; every field has a leading task axis.

        Shapes: ``support_x`` ``(num_tasks, ways*shots, *input_shape)`` float32, ``support_y``
        ``(num_tasks, ways*shots)`` int32, and likewise ``query_x``/``query_y`` with ``ways*queries``.
        Images stored as uint8 come out scaled to [0, 1]; float32 features as they are.
        """
        return _sample(self, key, positive_int("num_tasks", num_tasks))


def make_episode_sampler(
    dataset: ClassDataset,
    ways: int,
    shots: int,
    queries: int,
    *,
    augment: Augment | str = "",
    name: str = "the dataset",
    keys: tuple[str, str, str] = ("ways", "shots", "queries"),
) -> EpisodeSampler:
    """Checks the episode shape against ``dataset`` and copies its arrays to the device.

    ``augment`` is an :class:`Augment` or its text (``"rot90"``, ``"crop8+flip"``, ``""`` for none);
    ``name`` says in errors which data the dataset is (e.g. ``"omniglot's val split"``) and ``keys`` the
    names under which the caller was given ``ways``, ``shots`` and ``queries`` (e.g. a config's
    ``("eval_ways", "eval_shots", "eval_queries")``). Raises ValueError, before anything is compiled,
    naming those keys, when there are fewer than ``ways`` classes, a class has fewer than ``shots +
    queries`` examples, an example is not finite (:meth:`ClassDataset.check_finite`), or ``augment`` does
    not fit the images (rotations need square images; every augmentation needs images ``(H, W, C)``).

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
    ways_key, shots_key, queries_key = keys
    ways = positive_int(ways_key, ways)
    shots = positive_int(shots_key, shots)
    queries = positive_int(queries_key, queries)
    if ways > dataset.num_classes:
        raise ValueError(
            f"{ways_key} must be at most the number of classes in {name} ({dataset.num_classes}); got "
            f"{ways_key}={ways}. Lower {ways_key}, or use a split with more classes."
        )
    smallest = int(dataset.counts.min())
    if shots + queries > smallest:
        small = [dataset.class_names[c] for c in (dataset.counts < shots + queries).nonzero()[0][:3]]
        raise ValueError(
            f"{shots_key} + {queries_key} must be at most the number of examples in the smallest class of {name} "
            f"({smallest}); got {shots_key}={shots} + {queries_key}={queries} = {shots + queries}. Lower "
            f"{shots_key} or {queries_key}, or drop the classes with fewer than {shots + queries} examples (such "
            f"as {small})."
        )
    dataset.check_finite(name)
    augment = augment if isinstance(augment, Augment) else Augment.parse(augment)
    shape = dataset.input_shape
    if augment and len(shape) != 3:
        raise ValueError(f"augment={augment} needs images (H, W, C); {name} holds examples of shape {shape}.")
    if augment.rotate90 and shape[0] != shape[1]:
        raise ValueError(f"augment rot90 needs square images; {name} holds images of shape {shape}.")
    return EpisodeSampler(dataset.device_arrays(), ways, shots, queries, augment)


class EpisodeKeys(NamedTuple):
    """The keys an episode batch is drawn with, one per purpose, from one split of the batch's key."""

    classes: jax.Array
    examples: jax.Array
    augment: jax.Array


def episode_keys(key: jax.Array) -> EpisodeKeys:
    """Splits a batch's key once into the keys that pick its classes, pick their examples and augment them.

    ``jax.random.split(key, 3)``: three distinct keys, none equal to ``key``. Its first two are those of
    ``jax.random.split(key)`` under partitionable threefry (JAX's default), so episodes without augmentation
    are the ones drawn before augmentation had a key of its own. (Augmentation formerly used ``fold_in(key,
    1)``, which under partitionable threefry *is* the example key, so its draws were derived from the key
    of the example draws; augmented episodes changed when it got this key of its own.)

    Example::

        >>> import jax
        >>> keys = episode_keys(jax.random.key(0))
        >>> len({tuple(jax.random.key_data(k).tolist()) for k in keys})
        3
    """
    return EpisodeKeys(*jax.random.split(key, 3))


def augment_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The keys of the rotations, crops and flips, split from an episode batch's augmentation key.

    Example::

        >>> import jax
        >>> len(augment_keys(jax.random.key(0)))
        3
    """
    rotate_key, crop_key, flip_key = jax.random.split(key, 3)
    return rotate_key, crop_key, flip_key


def _scores(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """I.i.d. uniform int32 scores in [0, 2**31): 31 random bits, so that ties (which top_k would break
    by position) are rare, unlike with float32's 23."""
    return (jax.random.bits(key, shape, jnp.uint32) >> 1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="num_tasks")
def _sample(sampler: EpisodeSampler, key: jax.Array, num_tasks: int) -> Task:
    images, index = sampler.arrays
    ways, shots, queries = sampler.ways, sampler.shots, sampler.queries
    num_classes, max_count = index.shape
    class_key, example_key, augment_key = episode_keys(key)
    # The ways largest of i.i.d. uniform scores: distinct classes, uniformly drawn, in random order.
    _, classes = jax.lax.top_k(_scores(class_key, (num_tasks, num_classes)), ways)
    rows = index[classes]  # (num_tasks, ways, max_count), -1 past each class's count
    # Padding scores -1, below every real example's score: since shots + queries <= each class's count,
    # only real examples are drawn, uniformly and without replacement.
    scores = jnp.where(rows >= 0, _scores(example_key, rows.shape), -1)
    _, picks = jax.lax.top_k(scores, shots + queries)
    x = images[jnp.take_along_axis(rows, picks, axis=-1)]  # (num_tasks, ways, shots + queries, *input_shape)
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    if sampler.augment:
        x = _augment(x, sampler.augment, augment_key)
    y = jnp.broadcast_to(jnp.arange(ways, dtype=jnp.int32)[:, None], (num_tasks, ways, shots + queries))
    input_shape = images.shape[1:]
    return Task(
        x[:, :, :shots].reshape(num_tasks, ways * shots, *input_shape),
        y[:, :, :shots].reshape(num_tasks, ways * shots),
        x[:, :, shots:].reshape(num_tasks, ways * queries, *input_shape),
        y[:, :, shots:].reshape(num_tasks, ways * queries),
    )


def _augment(x: jax.Array, augment: Augment, key: jax.Array) -> jax.Array:
    """Augments episodes ``x`` of shape ``(tasks, ways, examples, H, W, C)``."""
    rotate_key, crop_key, flip_key = augment_keys(key)
    if augment.rotate90:
        turns = jax.random.randint(rotate_key, (*x.shape[:2], 1, 1, 1, 1), 0, 4)
        rotated = [jnp.rot90(x, k, axes=(3, 4)) for k in range(4)]
        x = jnp.select([turns == k for k in range(4)], rotated)
    if augment.crop_padding:
        x = random_crops(crop_key, x, augment.crop_padding)
    if augment.flip:
        x = random_flips(flip_key, x)
    return x


def random_crops(key: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """Each image of ``images`` ``(..., H, W, C)`` padded with ``padding`` zero pixels on every side and cut
    back to ``(H, W)`` at a random place: a random shift of up to ``padding`` pixels in each direction, the
    pixels shifted out lost, zeros shifted in. The same shape and dtype out; a pure function of ``key``.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> out = random_crops(jax.random.key(0), jnp.ones((3, 4, 4, 1)), 2)
        >>> out.shape, float(out.max())
        ((3, 4, 4, 1), 1.0)
    """
    height, width, channels = images.shape[-3:]
    flat = images.reshape(-1, height, width, channels)
    padded = jnp.pad(flat, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    corners = jax.random.randint(key, (flat.shape[0], 2), 0, 2 * padding + 1)
    crop = jax.vmap(lambda image, c: jax.lax.dynamic_slice(image, (c[0], c[1], 0), (height, width, channels)))
    return crop(padded, corners).reshape(images.shape)


def random_flips(key: jax.Array, images: jax.Array) -> jax.Array:
    """Each image of ``images`` ``(..., H, W, C)`` flipped left-right with probability 1/2 (a pure function
    of ``key``).

    Example::

        >>> import jax, jax.numpy as jnp
        >>> random_flips(jax.random.key(0), jnp.ones((2, 3, 3, 1))).shape
        (2, 3, 3, 1)
    """
    flips = jax.random.bernoulli(key, 0.5, (*images.shape[:-3], 1, 1, 1))
    return jnp.where(flips, images[..., ::-1, :], images)
