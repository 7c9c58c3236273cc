"""The episode sampler: shapes, distinct classes, disjoint support and query, uniformity, jit, errors."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jmeta.data.dataset import ClassDataset
from jmeta.tasks.episodes import Augment, EpisodeSampler, make_episode_sampler
from jmeta.tasks.task import Task

COUNTS = (3, 9, 4, 7, 5, 12, 6)  # unequal class sizes


def _identity_dataset() -> ClassDataset:
    """Float features whose single value is the example's own index, so episodes reveal what they drew."""
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    features = np.arange(len(labels), dtype=np.float32)[:, None]
    return ClassDataset(features, labels, tuple(f"class{c}" for c in range(len(COUNTS))))


def _drawn(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """The example indices of a task batch's support and query points."""
    return np.asarray(task.support_x[..., 0]).astype(int), np.asarray(task.query_x[..., 0]).astype(int)


def test_shapes_dtypes_and_labels_for_images():
    labels = np.repeat(np.arange(6), 5)
    images = np.full((30, 4, 3, 2), 255, np.uint8)
    sampler = make_episode_sampler(ClassDataset(images, labels, "abcdef"), ways=4, shots=2, queries=3)
    task = sampler(jax.random.key(0), 7)
    assert task.support_x.shape == (7, 8, 4, 3, 2) and task.support_y.shape == (7, 8)
    assert task.query_x.shape == (7, 12, 4, 3, 2) and task.query_y.shape == (7, 12)
    assert task.support_x.dtype == np.float32 and task.support_y.dtype == np.int32
    np.testing.assert_array_equal(task.support_x, 1.0)  # uint8 255 -> 1.0
    np.testing.assert_array_equal(task.support_y[0], np.repeat(np.arange(4), 2))
    np.testing.assert_array_equal(task.query_y[3], np.repeat(np.arange(4), 3))


WAYS, SHOTS, QUERIES, TASKS = 3, 1, 2, 400  # shots + queries = the smallest class's count


@pytest.fixture(scope="module")
def dataset() -> ClassDataset:
    return _identity_dataset()


@pytest.fixture(scope="module")
def sampler(dataset) -> EpisodeSampler:
    return make_episode_sampler(dataset, WAYS, SHOTS, QUERIES)


def test_classes_distinct_support_query_disjoint_and_within_own_class(dataset, sampler):
    support, query = _drawn(sampler(jax.random.key(1), TASKS))
    class_of = dataset.labels
    for s, q in zip(support, query, strict=True):
        assert not set(s) & set(q)
        assert len(set(s) | set(q)) == WAYS * (SHOTS + QUERIES)
        support_classes = class_of[s].reshape(WAYS, SHOTS)
        query_classes = class_of[q].reshape(WAYS, QUERIES)
        # Every point of a label comes from one class, the same in support and query; labels differ in class.
        assert (support_classes == support_classes[:, :1]).all()
        assert (query_classes == support_classes[:, :1]).all()
        assert len(set(support_classes[:, 0])) == WAYS


def test_labels_are_permuted_across_episodes(dataset, sampler):
    support, _ = _drawn(sampler(jax.random.key(2), TASKS))
    class_with_label = dataset.labels[support[:, :: SHOTS]]  # (tasks, ways)
    for label in range(WAYS):
        assert set(class_with_label[:, label].tolist()) == set(range(len(COUNTS)))


def test_uniform_over_classes_and_over_each_class_own_examples(dataset, sampler):
    rounds = 10
    keys = jax.random.split(jax.random.key(3), rounds)
    drawn = np.concatenate([np.concatenate(_drawn(sampler(key, TASKS)), axis=1) for key in keys])
    frequency = np.bincount(drawn.ravel(), minlength=len(dataset.labels))
    # Class c is in WAYS/7 of the episodes and then draws SHOTS + QUERIES of its COUNTS[c] examples.
    for c, count in enumerate(COUNTS):
        expected = rounds * TASKS * WAYS / len(COUNTS) * (SHOTS + QUERIES) / count
        own = frequency[dataset.offsets[c] : dataset.offsets[c] + count]
        assert np.all(np.abs(own - expected) < 5 * np.sqrt(expected)), (c, own, expected)


def test_the_smallest_class_is_drawn_whole(dataset, sampler):
    support, query = _drawn(sampler(jax.random.key(4), TASKS))
    smallest = set(range(COUNTS[0]))  # class 0's examples, exactly SHOTS + QUERIES of them
    episodes = 0
    for s, q in zip(support, query, strict=True):
        drawn = set(s) | set(q)
        if drawn & smallest:
            episodes += 1
            assert smallest <= drawn
    assert episodes > 0


def test_same_key_same_episode_and_different_key_different_episode(sampler):
    first, again, other = (sampler(jax.random.key(k), TASKS) for k in (7, 7, 8))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.support_x, other.support_x)


def test_works_inside_jit_with_the_sampler_as_an_argument(sampler):
    key = jax.random.key(9)
    inside = jax.jit(lambda s, k: s(k, TASKS))(sampler, key)
    for a, b in zip(inside, sampler(key, TASKS), strict=True):
        np.testing.assert_array_equal(a, b)


def test_works_with_a_raw_uint32_key(sampler):
    task = sampler(jax.random.PRNGKey(0), TASKS)
    assert task.query_x.shape == (TASKS, WAYS * QUERIES, 1)


def test_ways_larger_than_classes_is_rejected_with_the_fix():
    expected = r"ways must be at most the number of classes .*\(7\); got ways=8\. Lower"
    with pytest.raises(ValueError, match=expected):
        make_episode_sampler(_identity_dataset(), ways=8, shots=1, queries=1)


def test_shots_plus_queries_larger_than_smallest_class_is_rejected_with_the_fix():
    expected = r"smallest class of the dataset \(3\); got shots=2 \+ queries=2 = 4\. Lower.*'class0'"
    with pytest.raises(ValueError, match=expected):
        make_episode_sampler(_identity_dataset(), ways=2, shots=2, queries=2)


@pytest.mark.parametrize(
    ("ways", "shots", "queries", "name"),
    [(0, 1, 1, "ways"), (2, 0, 1, "shots"), (2, 1, 0, "queries"), (2.0, 1, 1, "ways"), (True, 1, 1, "ways")],
)
def test_non_positive_or_non_integer_sizes_are_rejected(ways, shots, queries, name):
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        make_episode_sampler(_identity_dataset(), ways, shots, queries)


def test_bad_num_tasks_and_bad_dataset_are_rejected():
    sampler = make_episode_sampler(_identity_dataset(), ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
        sampler(jax.random.key(0), 0)
    with pytest.raises(TypeError, match="dataset must be a jmeta.data.ClassDataset"):
        make_episode_sampler(np.zeros((4, 2)), ways=2, shots=1, queries=1)


# ---------------------------------------------------------------------------------------------------------
# Per-episode augmentation

# Each 5x5 image has one bright pixel at a place that names the rotation: after k quarter turns it sits at
# MARKS[k] (np.rot90's direction, as the Omniglot loader rotates).
UPRIGHT = np.zeros((5, 5))
UPRIGHT[0, 1] = 1
MARKS = {k: tuple(int(i) for i in np.argwhere(np.rot90(UPRIGHT, k))[0]) for k in range(4)}


def _marked_dataset(classes: int = 6, per_class: int = 4) -> ClassDataset:
    images = np.zeros((classes * per_class, 5, 5, 1), np.uint8)
    images[..., 0] = UPRIGHT * 255
    return ClassDataset(images, np.repeat(np.arange(classes), per_class), tuple(f"c{c}" for c in range(classes)))


def _turns(x: np.ndarray) -> np.ndarray:
    """The number of quarter turns of each marked image in x (..., 5, 5, 1)."""
    where = {mark: k for k, mark in MARKS.items()}
    flat = x.reshape(-1, 25).argmax(-1)
    return np.array([where[divmod(int(i), 5)] for i in flat]).reshape(x.shape[:-3])


def test_rotation_is_drawn_per_class_and_shared_by_its_support_and_query_images():
    key = jax.random.key(0)
    task = make_episode_sampler(_marked_dataset(), ways=3, shots=2, queries=2, augment="rot90")(key, 500)
    support = _turns(np.asarray(task.support_x)).reshape(500, 3, 2)
    query = _turns(np.asarray(task.query_x)).reshape(500, 3, 2)
    per_class = support[:, :, :1]
    assert (support == per_class).all() and (query == per_class).all()  # one rotation per class of an episode
    frequency = np.bincount(per_class.ravel(), minlength=4) / per_class.size
    assert np.all(np.abs(frequency - 0.25) < 0.04), frequency  # uniform over 0, 90, 180, 270 degrees
    assert (per_class[:, 0] != per_class[:, 1]).mean() > 0.6  # classes of one episode rotate independently
    # The same classes and examples as without augmentation, only turned.
    plain = make_episode_sampler(_marked_dataset(), ways=3, shots=2, queries=2)(key, 500)
    np.testing.assert_array_equal(plain.query_y, task.query_y)
    np.testing.assert_array_equal(_turns(np.asarray(plain.query_x)), 0)


def test_no_augmentation_draws_the_episodes_drawn_before_augmentation_existed(sampler):
    key = jax.random.key(11)
    for a, b in zip(
        sampler(key, TASKS), EpisodeSampler(sampler.arrays, WAYS, SHOTS, QUERIES, Augment())(key, TASKS), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_crops_and_flips_are_a_pure_function_of_the_key_and_jit():
    # A bright dot with a dimmer one to its right: crops move both by up to 2 pixels, flips swap their order.
    images = np.zeros((8, 7, 7, 1), np.uint8)
    images[:, 3, 2, 0], images[:, 3, 3, 0] = 255, 128
    sampler = make_episode_sampler(
        ClassDataset(images, np.repeat(np.arange(2), 4), ("a", "b")), 2, 2, 2, augment="crop2+flip"
    )
    key = jax.random.key(0)
    task = sampler(key, 200)
    x = np.asarray(task.support_x)[..., 0].reshape(-1, 49)
    bright_row, bright_col = np.divmod(x.argmax(-1), 7)
    dim_col = np.divmod(np.abs(x - 128 / 255).argmin(-1), 7)[1]
    assert set(bright_row) == {1, 2, 3, 4, 5}  # shifted by -2..2
    flipped = dim_col < bright_col
    assert 0.4 < flipped.mean() < 0.6 and set(np.abs(dim_col - bright_col)) == {1}
    assert set(bright_col[~flipped]) == {0, 1, 2, 3, 4} and set(bright_col[flipped]) == {2, 3, 4, 5, 6}
    for a, b in zip(task, jax.jit(lambda s, k: s(k, 200))(sampler, key), strict=True):
        np.testing.assert_array_equal(a, b)  # the same under the caller's jit
    assert not np.array_equal(task.support_x, sampler(jax.random.key(1), 200).support_x)


@pytest.mark.parametrize(
    ("augment", "shape", "message"),
    [
        ("rot45", (5, 5, 1), r"augment must be '' or parts joined by '\+'.*the part 'rot45'"),
        ("crop0", (5, 5, 1), "the part 'crop0'"),
        ("rot90", (5, 6, 1), r"rot90 needs square images; the dataset holds images of shape \(5, 6, 1\)"),
        ("flip", (4,), r"needs images \(H, W, C\)"),
    ],
)
def test_bad_augment_is_rejected(augment, shape, message):
    ds = ClassDataset(np.zeros((4, *shape), np.uint8 if len(shape) == 3 else np.float32), np.array([0, 0, 1, 1]), "ab")
    with pytest.raises(ValueError, match=message):
        make_episode_sampler(ds, ways=2, shots=1, queries=1, augment=augment)


def test_errors_name_the_split_they_counted():
    with pytest.raises(ValueError, match=r"number of classes in omniglot's val split \(7\); got ways=8"):
        make_episode_sampler(_identity_dataset(), ways=8, shots=1, queries=1, name="omniglot's val split")
