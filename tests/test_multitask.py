"""Multi-task shared representation: the group and example samplers, per-group heads, head fitting (against
scikit-learn's logistic regression), the from-scratch baseline (the same network), learning a trunk that
transfers to unseen classes on synthetic data and beats the baseline there, argument errors, and a smoke run on
real Omniglot."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmeta
from jmeta.data.dataset import ClassDataset
from jmeta.learners.baseline import Head
from jmeta.models.ports import SharedTrunk002
from jmeta.systems.common import comparison, paired_gain
from jmeta.systems.multitask import (
    GroupBatch,
    Teacher,
    augment_images,
    check_training_augment,
    make_example_sampler,
    make_group_sampler,
    multitask,
)
from jmeta.tasks.episodes import Augment, make_episode_sampler

OMNIGLOT_DIRS = (Path(__file__).parents[1] / ".." / "shared" / "data" / "omniglot",)
OMNIGLOT = next((d for d in OMNIGLOT_DIRS if (d / "images_background.zip").is_file()), None)
SIGNAL, NOISE = 4, 28


def blobs(num_classes: int, per_class: int, seed: int) -> ClassDataset:
    """Classes whose means differ in SIGNAL dimensions only, drowned in NOISE dimensions of larger noise:
    a trunk helps only once it has learnt which dimensions to read."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(num_classes, 1, SIGNAL))
    signal = means + 0.5 * rng.normal(size=(num_classes, per_class, SIGNAL))
    noise = 3.0 * rng.normal(size=(num_classes, per_class, NOISE))
    x = np.concatenate([signal, noise], -1).reshape(-1, SIGNAL + NOISE).astype(np.float32)
    return ClassDataset(x, np.repeat(np.arange(num_classes), per_class), tuple(f"c{i}" for i in range(num_classes)))


def mlp_trunk():
    x = jnp.zeros((1, SIGNAL + NOISE))
    return jmeta.from_linen(jmeta.models.MLP((32, 16)), x), x


def test_group_sampler_keeps_each_groups_classes_and_labels_fixed():
    # Every example of class c is the number c, so a point's value names its class.
    ds = ClassDataset(np.repeat(np.arange(7, dtype=np.float32), 4)[:, None], np.repeat(np.arange(7), 4), "abcdefg")
    sampler = make_group_sampler(ds, classes_per_group=3, examples=2, seed=1)
    assert sampler.num_groups == 2 and len(set(np.asarray(sampler.groups).ravel())) == 6
    batch = sampler(jax.random.key(0), 50)
    assert batch.x.shape == (50, 6, 1) and batch.y.shape == (50, 6)
    classes = np.asarray(sampler.groups)[np.asarray(batch.group)[:, None], np.asarray(batch.y)]
    np.testing.assert_array_equal(np.asarray(batch.x)[..., 0], classes)
    assert set(np.asarray(batch.group).tolist()) == {0, 1}


def test_example_sampler_labels_each_example_with_its_class():
    ds = ClassDataset(np.repeat(np.arange(5, dtype=np.float32), 3)[:, None], np.repeat(np.arange(5), 3), "abcde")
    batch = make_example_sampler(ds)(jax.random.key(0), 200)
    assert batch.group.tolist() == [0] and batch.x.shape == (1, 200, 1) and batch.y.shape == (1, 200)
    np.testing.assert_array_equal(np.asarray(batch.x)[0, :, 0], np.asarray(batch.y)[0])
    assert set(np.asarray(batch.y).ravel().tolist()) == set(range(5))


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` (H, W, C) moved down by ``dy`` and right by ``dx`` pixels, zeros shifted in."""
    out = np.zeros_like(image)
    height, width = image.shape[:2]
    out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = image[
        max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)
    ]
    return out


def test_augment_images_shifts_each_image_by_at_most_the_padding_and_is_a_function_of_the_key():
    images = np.random.default_rng(0).random((64, 7, 7, 1)).astype(np.float32)
    out = np.asarray(augment_images(jax.random.key(0), jnp.asarray(images), Augment(crop_padding=2)))
    assert out.shape == images.shape and out.dtype == images.dtype
    shifts = []
    for before, after in zip(images, out, strict=True):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.array_equal(shifted(before, dy, dx), after)]
        assert len(found) == 1, found  # random pixels: exactly one shift explains the output
        shifts.append(found[0])
    assert len(set(shifts)) > 10 and shifts.count((0, 0)) < 16  # 25 shifts, about 1 in 25 unmoved
    again = augment_images(jax.random.key(0), jnp.asarray(images), Augment(crop_padding=2))
    np.testing.assert_array_equal(np.asarray(again), out)
    other = augment_images(jax.random.key(1), jnp.asarray(images), Augment(crop_padding=2))
    assert not np.array_equal(np.asarray(other), out)
    flipped = np.asarray(augment_images(jax.random.key(0), jnp.asarray(images), Augment(flip=True)))
    is_flipped = [np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, images, strict=True)]
    unchanged = [np.array_equal(a, b) for a, b in zip(flipped, images, strict=True)]
    assert all(np.logical_or(is_flipped, unchanged)) and 16 < sum(is_flipped) < 48
    np.testing.assert_array_equal(np.asarray(augment_images(jax.random.key(0), jnp.asarray(images), Augment())), images)


def test_example_sampler_augments_each_drawn_image_and_keeps_its_label():
    # Class c is a 3x3 blob of value c + 1 at the centre of a 9x9 image: a shift of up to 2 keeps it whole.
    images = np.zeros((5, 9, 9, 1), np.float32)
    for c in range(5):
        images[c, 3:6, 3:6] = c + 1
    ds = ClassDataset(images, np.arange(5), "abcde")
    plain = make_example_sampler(ds)(jax.random.key(0), 100)
    np.testing.assert_array_equal(np.asarray(plain.x), images[np.asarray(plain.y)])  # no augmentation: as drawn
    sampler = make_example_sampler(ds, "crop2")
    batch = sampler(jax.random.key(0), 100)
    x, y = np.asarray(batch.x)[0], np.asarray(batch.y)[0]
    assert x.shape == (100, 9, 9, 1) and sampler.augment == Augment(crop_padding=2)
    np.testing.assert_array_equal(x.max(axis=(1, 2, 3)), y + 1)  # the label's blob, whole
    np.testing.assert_array_equal(x.sum(axis=(1, 2, 3)), 9 * (y + 1))
    moved = [not np.array_equal(a, images[label]) for a, label in zip(x, y, strict=True)]
    assert sum(moved) > 80  # 24 of 25 shifts move the blob
    np.testing.assert_array_equal(np.asarray(sampler(jax.random.key(0), 100).x), np.asarray(batch.x))
    groups = make_group_sampler(ds, classes_per_group=5, examples=1, augment="crop1")
    batch = groups(jax.random.key(0), 20)
    classes = np.asarray(groups.groups)[np.asarray(batch.group)[:, None], np.asarray(batch.y)]
    np.testing.assert_array_equal(np.asarray(batch.x).max(axis=(2, 3, 4)), classes + 1)
    assert not np.array_equal(np.asarray(batch.x), images[classes])


def test_training_augmentation_refuses_rotations_and_non_images():
    with pytest.raises(ValueError, match="rotations by 90 degrees are classes of their own"):
        make_example_sampler(ClassDataset(np.zeros((2, 4, 4, 1), np.uint8), np.arange(2), "ab"), "crop1+rot90")
    with pytest.raises(ValueError, match=r"needs images \(H, W, C\)"):
        make_group_sampler(blobs(4, 2, 0), classes_per_group=2, examples=1, augment="crop1")
    with pytest.raises(ValueError, match="augment must be '' or parts joined"):
        check_training_augment("shift2", blobs(4, 2, 0))


def test_step_with_a_teacher_minimises_the_distillation_loss_computed_by_hand():
    temperature, hard_weight, lr = 3.0, 0.25, 0.5
    trunk, x = mlp_trunk()
    mt = multitask(trunk, x, num_heads=3, num_classes=4, optimizer=optax.sgd(lr),
                   distill_temperature=temperature, distill_hard_weight=hard_weight)
    state = mt.init(jax.random.key(0))  # zero heads: the student's logits are all 0
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(3, 16, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    teacher_params, teacher_state = trunk.init(jax.random.key(1))
    teacher = Teacher(state.params._replace(trunk=teacher_params, heads=Head(
        jnp.asarray(kernel), jnp.asarray(bias))), teacher_state)
    points = rng.normal(size=(2, 6, SIGNAL + NOISE)).astype(np.float32)
    labels = np.array([[0, 1, 2, 3, 0, 1], [3, 3, 2, 1, 0, 0]])
    groups = np.array([2, 0])
    features = np.asarray(trunk.apply(state.params.trunk, state.model_state, points.reshape(12, -1))[0])
    teacher_features = np.asarray(trunk.apply(teacher_params, teacher_state, points.reshape(12, -1))[0])
    row_group = np.repeat(groups, 6)
    teacher_logits = np.einsum("pf,pfc->pc", teacher_features, kernel[row_group]) + bias[row_group]
    p_teacher = np.exp(teacher_logits / temperature)
    p_teacher /= p_teacher.sum(-1, keepdims=True)
    onehot = np.eye(4)[labels.ravel()]
    # the student's softmax is uniform: KL = sum p log p + log 4, cross-entropy = log 4
    kl = np.mean(np.sum(p_teacher * np.log(p_teacher), -1) + np.log(4))
    expected = (1 - hard_weight) * temperature**2 * kl + hard_weight * np.log(4)
    new_state, metrics = mt.step(state, GroupBatch(jnp.asarray(groups), jnp.asarray(points), jnp.asarray(labels)),
                                 teacher)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    # d loss / d logits = ((1 - h) * T * (1/4 - p_teacher) + h * (1/4 - onehot)) / points
    d_logits = ((1 - hard_weight) * temperature * (0.25 - p_teacher) + hard_weight * (0.25 - onehot)) / 12
    for g in range(3):
        rows = row_group == g
        np.testing.assert_allclose(np.asarray(new_state.params.heads.kernel[g]),
                                   -lr * features[rows].T @ d_logits[rows], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="teacher must hold parameters and model state of the student's shapes"):
        mt.step(new_state, GroupBatch(jnp.asarray(groups), jnp.asarray(points), jnp.asarray(labels)),
                Teacher(teacher.params._replace(heads=Head(
                    jnp.zeros((3, 16, 5)), jnp.zeros((3, 5)))), teacher_state))


def test_step_updates_only_the_heads_of_the_groups_in_the_batch():
    trunk, x = mlp_trunk()
    mt = multitask(trunk, x, num_heads=4, num_classes=2, optimizer=optax.sgd(0.1))
    state = mt.init(jax.random.key(0))
    points = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, SIGNAL + NOISE)), jnp.float32)
    batch = GroupBatch(jnp.array([1, 3]), points, jnp.array([[0, 1, 0, 1]] * 2))
    state, metrics = mt.step(state, batch)
    moved = np.abs(np.asarray(state.params.heads.kernel)).sum(axis=(1, 2)) > 0
    assert moved.tolist() == [False, True, False, True]
    assert int(state.step) == 1 and np.isclose(float(metrics["loss"]), np.log(2), atol=1e-6)


def test_fit_head_separates_the_support_set_and_zero_steps_is_the_zero_head():
    trunk, x = mlp_trunk()
    mt = multitask(trunk, x, num_heads=1, num_classes=3, optimizer=optax.sgd(0.1), head_steps=200, head_lr=0.5)
    params, state = trunk.init(jax.random.key(0))
    support = jnp.asarray(np.random.default_rng(0).normal(size=(6, SIGNAL + NOISE)), jnp.float32)
    labels = jnp.array([0, 0, 1, 1, 2, 2])
    head = mt.fit_head(params, state, support, labels)
    assert head.kernel.shape == (16, 3) and head.bias.shape == (3,)
    np.testing.assert_array_equal(jnp.argmax(mt.predict(params, state, head, support), -1), labels)
    zero = mt.fit_head(params, state, support, labels, steps=0)
    assert not np.any(np.asarray(zero.kernel)) and not np.any(np.asarray(zero.bias))


def test_fit_head_is_scikit_learns_l2_regularised_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 6)).astype(np.float32)
    labels = np.array([0, 1, 2] * 4)
    identity = jmeta.Model(lambda key: ({}, {}), lambda params, state, x: (x, state))
    head_l2 = 0.5
    mt = multitask(identity, jnp.zeros((1, 6)), num_heads=1, num_classes=3, optimizer=optax.sgd(0.1),
                   head_steps=3000, head_lr=0.2, head_l2=head_l2)
    head = mt.fit_head({}, {}, jnp.asarray(features), jnp.asarray(labels))
    ours = jax.nn.softmax(mt.predict({}, {}, head, jnp.asarray(features)))
    # scikit-learn minimises 0.5 |W|^2 + C * sum of cross-entropies, i.e. ours times C * points
    reference = sklearn.LogisticRegression(C=1.0 / (head_l2 * len(labels)), tol=1e-10, max_iter=10_000)
    reference.fit(features, labels)
    np.testing.assert_allclose(ours, reference.predict_proba(features), atol=1e-4)
    np.testing.assert_allclose(np.asarray(head.kernel), reference.coef_.T, atol=1e-3)


def test_scratch_baseline_trains_the_same_network_from_fresh_parameters():
    trunk, x = mlp_trunk()
    mt = multitask(trunk, x, num_heads=3, num_classes=4, ways=5, optimizer=optax.sgd(0.1), scratch_steps=30,
                   scratch_optimizer=optax.adam(1e-2), feature_scale=5.0)
    (trunk_params, head), model_state = mt.scratch.init(jax.random.key(0))
    fresh = mt.init(jax.random.key(0)).params.trunk
    assert jax.tree.structure(trunk_params) == jax.tree.structure(fresh)
    assert jax.tree.map(jnp.shape, trunk_params) == jax.tree.map(jnp.shape, fresh)
    assert head.kernel.shape == (16, 5) and head.bias.shape == (5,)
    support = jnp.asarray(np.random.default_rng(0).normal(size=(5, SIGNAL + NOISE)), jnp.float32)
    labels = jnp.arange(5)
    adapted = mt.scratch.adapt((trunk_params, head), model_state, support, labels)
    trunk_moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), adapted[0], trunk_params)
    assert min(jax.tree.leaves(trunk_moved)) > 0  # every trunk parameter is trained, not only the head
    logits, _ = mt.scratch.predict(adapted, model_state, support)
    np.testing.assert_array_equal(jnp.argmax(logits, -1), labels)
    # the network it trains is the system's: trunk, normalised features, linear head
    features, _ = trunk.apply(adapted[0], model_state, support)
    features = 5.0 * features / jnp.linalg.norm(features, axis=-1, keepdims=True)
    np.testing.assert_allclose(logits, features @ adapted[1].kernel + adapted[1].bias, rtol=1e-4, atol=1e-4)


def test_trained_trunk_transfers_to_unseen_classes():
    train, test = blobs(40, 20, seed=0), blobs(10, 20, seed=1)
    trunk, x = mlp_trunk()
    groups = make_group_sampler(train, classes_per_group=4, examples=5)
    mt = multitask(trunk, x, num_heads=groups.num_groups, num_classes=4, optimizer=optax.adam(3e-3), ways=5,
                   head_steps=20, head_lr=1.0, feature_scale=5.0)
    state = mt.init(jax.random.key(0))
    episodes = make_episode_sampler(test, ways=5, shots=1, queries=10)

    def accuracy(state) -> float:
        results = jmeta.evaluate(mt.learner, state.params.trunk, state.model_state, episodes, jax.random.key(2),
                                 num_tasks=200, steps=(20,))
        return results[20]["accuracy"].mean

    before = accuracy(state)
    for i in range(300):
        state, _ = mt.step(state, groups(jax.random.fold_in(jax.random.key(1), i), 8))
    after = accuracy(state)
    assert after > before + 0.15 and after > 0.6, (before, after)
    # the comparison the program reports: the same tasks for the system and the from-scratch baseline
    scratch_params, scratch_state = mt.scratch.init(jax.random.key(3))
    system = jmeta.evaluation.per_task_metrics(mt.learner, state.params.trunk, state.model_state, episodes,
                                               jax.random.key(2), num_tasks=200, steps=(20,))[20]["accuracy"]
    baseline = jmeta.evaluation.per_task_metrics(mt.scratch, scratch_params, scratch_state, episodes,
                                                 jax.random.key(2), num_tasks=200, steps=(100,))[100]["accuracy"]
    assert system.shape == baseline.shape == (200,) and np.isclose(system.mean(), after)
    entry = comparison("shared trunk", "from scratch", paired_gain(system, baseline))
    assert entry["gain"]["tasks"] == 200 and entry["gain"]["mean"] - entry["gain"]["ci95"] > 0, entry


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 0}, "num_heads must be a positive integer"),
        ({"head_lr": -1.0}, "head_lr must be a finite number > 0; got -1.0"),
        ({"feature_scale": 0.0}, "feature_scale must be a finite number > 0"),
        ({"optimizer": "adam"}, "optimizer must be an optax.GradientTransformation"),
        ({"scratch_optimizer": 0.1}, "scratch_optimizer must be an optax.GradientTransformation; got float"),
        ({"head_l2": -0.5}, "head_l2 must be a finite number >= 0; got -0.5"),
        ({"test_feature_scale": 0.0}, "test_feature_scale must be a finite number > 0"),
        ({"scratch_steps": 0}, "scratch_steps must be a positive integer"),
        ({"test_trunk": "conv4"}, "test_trunk"),
        ({"distill_temperature": 0.0}, "distill_temperature must be a finite number > 0"),
        ({"distill_hard_weight": 1.5}, r"distill_hard_weight must be a number in \[0, 1\]; got 1.5"),
    ],
)
def test_argument_errors(kwargs, message):
    trunk, x = mlp_trunk()
    arguments = {"num_heads": 2, "num_classes": 2, "optimizer": optax.sgd(0.1), **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        multitask(trunk, x, **arguments)


def test_bad_batches_and_trunks_are_refused():
    trunk, x = mlp_trunk()
    mt = multitask(trunk, x, num_heads=2, num_classes=2, optimizer=optax.sgd(0.1))
    state = mt.init(jax.random.key(0))
    with pytest.raises(ValueError, match="head indices below num_heads=2"):
        mt.step(state, GroupBatch(jnp.array([2]), jnp.ones((1, 2, SIGNAL + NOISE)), jnp.zeros((1, 2), int)))
    with pytest.raises(ValueError, match="same number of points"):
        mt.step(state, GroupBatch(jnp.array([0]), jnp.ones((1, 3, SIGNAL + NOISE)), jnp.zeros((1, 2), int)))
    images = jmeta.from_linen(jmeta.models.MLP((4,)), jnp.zeros((1, 3)))
    not_flat = jmeta.Model(images.init, lambda p, s, x: (images.apply(p, s, x)[0][:, None], s))
    with pytest.raises(ValueError, match=r"trunk must return features of shape \(points, features\)"):
        multitask(not_flat, jnp.zeros((1, 3)), num_heads=1, num_classes=2, optimizer=optax.sgd(0.1)).init(
            jax.random.key(0)
        )
    with pytest.raises(ValueError, match="examples must be at most"):
        make_group_sampler(blobs(3, 4, 0), classes_per_group=2, examples=5)


@pytest.mark.skipif(OMNIGLOT is None, reason=f"real Omniglot zips absent from {[str(d) for d in OMNIGLOT_DIRS]}")
def test_omniglot_5_way_1_shot_beats_chance_after_short_training():
    data = jmeta.data.load("omniglot", OMNIGLOT)
    x = jnp.zeros((1, 28, 28, 1))
    groups = make_group_sampler(data["train"], classes_per_group=5, examples=5)
    mt = multitask(jmeta.from_linen(SharedTrunk002(), x), x, num_heads=groups.num_groups, num_classes=5,
                   optimizer=optax.adam(1e-3), head_steps=10, head_lr=1.0, feature_scale=10.0)
    state = mt.init(jax.random.key(0))
    for i in range(600):
        state, _ = mt.step(state, groups(jax.random.fold_in(jax.random.key(1), i), 16))
    episodes = make_episode_sampler(data["test"], ways=5, shots=1, queries=15)
    results = jmeta.evaluate(mt.learner, state.params.trunk, state.model_state, episodes, jax.random.key(2),
                             num_tasks=300, steps=(10,))
    accuracy = results[10]["accuracy"]
    assert accuracy.mean - accuracy.ci95 > 0.45, accuracy
