"""Knowledge distillation: the loss against an independent NumPy computation, its gradient in closed form,
argument errors, a tiny meta-training run in which the student comes to agree with its teacher, and students
trained with and without a teacher from the same starts."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmeta
from jmeta.learners.base import Learner, TaskOutput
from jmeta.systems.distill import distill, distillation_loss, fit_students, scarce_subsets

WAYS, SHOTS, QUERIES = 3, 5, 10


def random_logits(seed: int, shape: tuple[int, int] = (6, 4), scale: float = 2.0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(scale=scale, size=shape), jnp.float32)


def numpy_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_loss_at_temperature_one_without_labels_is_kl_teacher_to_student():
    student, teacher = random_logits(0), random_logits(1)
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    p, q = numpy_softmax(np.asarray(teacher, np.float64)), numpy_softmax(np.asarray(student, np.float64))
    expected = np.mean(np.sum(p * np.log(p / q), axis=-1))
    got = distillation_loss(student, teacher, labels, temperature=1.0, hard_weight=0.0)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_loss_mixes_scaled_soft_term_and_hard_cross_entropy():
    student, teacher, labels = random_logits(2), random_logits(3), jnp.array([3, 2, 1, 0, 0, 1])
    t, h = 3.0, 0.25
    p, q = numpy_softmax(np.asarray(teacher) / t), numpy_softmax(np.asarray(student) / t)
    soft = t**2 * np.mean(np.sum(p * np.log(p / q), axis=-1))
    hard = -np.mean(np.log(numpy_softmax(np.asarray(student))[np.arange(6), np.asarray(labels)]))
    got = distillation_loss(student, teacher, labels, temperature=t, hard_weight=h)
    np.testing.assert_allclose(float(got), (1 - h) * soft + h * hard, rtol=1e-5)


def test_gradient_is_hintons_closed_form_and_does_not_reach_the_teacher():
    student, teacher, labels = random_logits(4), random_logits(5), jnp.array([0, 1, 2, 3, 0, 1])
    t, h, n = 4.0, 0.3, student.shape[0]
    grad_student, grad_teacher = jax.grad(distillation_loss, argnums=(0, 1))(student, teacher, labels, t, h)
    soft = t * (jax.nn.softmax(student / t) - jax.nn.softmax(teacher / t)) / n
    hard = (jax.nn.softmax(student) - jax.nn.one_hot(labels, 4)) / n
    np.testing.assert_allclose(grad_student, (1 - h) * soft + h * hard, atol=1e-6)
    np.testing.assert_array_equal(grad_teacher, 0.0)
    zero = jax.grad(distillation_loss)(teacher, teacher, labels, t, 0.0)
    np.testing.assert_allclose(zero, 0.0, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature must be a finite number > 0; got 0.0"),
        ({"hard_weight": 1.5}, r"hard_weight must be a number in \[0, 1\]; got 1.5"),
        ({"teacher_logits": jnp.zeros((6, 3))}, "must both have shape"),
        ({"labels": jnp.zeros((5,), jnp.int32)}, r"labels must have shape \(6,\)"),
    ],
)
def test_loss_argument_errors(kwargs, message):
    arguments = {"student_logits": jnp.zeros((6, 4)), "teacher_logits": jnp.zeros((6, 4)), "labels": jnp.zeros(6, int)}
    with pytest.raises(ValueError, match=message):
        distillation_loss(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------------------------------------
# End to end: a nearest-centroid teacher and an MLP student on 2-D Gaussian blobs.


def centroid_teacher() -> Learner:
    """Adapts by taking class means of the support set; logits are negative squared distances."""

    def adapt(params, state, x, y, steps=None):
        one_hot = jax.nn.one_hot(y, WAYS)
        return (one_hot.T @ x) / one_hot.sum(0)[:, None]

    def predict(centroids, state, x):
        return -jnp.sum((x[:, None] - centroids[None]) ** 2, -1), state

    def task_loss(params, state, task, steps=None):
        logits, _ = predict(adapt(params, state, task.support_x, task.support_y), state, task.query_x)
        loss = jmeta.losses.cross_entropy(logits, task.query_y)
        return loss, TaskOutput({"loss": loss}, state)

    return Learner(lambda key: ({}, {}), adapt, predict, task_loss)


@functools.partial(jax.jit, static_argnums=1)
def blob_tasks(key: jax.Array, n: int) -> jmeta.Task:
    """Each task: WAYS classes with means ~ N(0, 2^2 I) in 2-D and unit-variance points around them."""
    mean_key, noise_key = jax.random.split(key)
    means = 2.0 * jax.random.normal(mean_key, (n, WAYS, 1, 2))
    points = means + jax.random.normal(noise_key, (n, WAYS, SHOTS + QUERIES, 2))
    labels = jnp.broadcast_to(jnp.arange(WAYS)[:, None], (n, WAYS, SHOTS + QUERIES))

    def part(a: jax.Array, lo: int, hi: int) -> jax.Array:
        return a[:, :, lo:hi].reshape(n, WAYS * (hi - lo), *a.shape[3:])

    support, query = (0, SHOTS), (SHOTS, SHOTS + QUERIES)
    return jmeta.Task(part(points, *support), part(labels, *support), part(points, *query), part(labels, *query))


def test_meta_trained_student_agrees_with_teacher_better_than_before():
    student = jmeta.from_linen(jmeta.models.MLP((32, 32, WAYS)), jnp.zeros((1, 2)))
    learner = distill(
        student, centroid_teacher(), {}, {}, inner_lr=0.3, steps=1, temperature=2.0, hard_weight=0.0
    )
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-2))
    state = trainer.init(jax.random.key(0))
    held_out = blob_tasks(jax.random.key(123), 200)
    measure = jax.jit(lambda params: trainer.loss(params, state.model_state, held_out)[1].metrics)
    before = {name: float(v) for name, v in measure(state.params).items()}
    for i in range(300):
        state, _ = trainer.step(state, blob_tasks(jax.random.fold_in(jax.random.key(1), i), 16))
    after = {name: float(v) for name, v in measure(state.params).items()}
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert after["agreement"] > before["agreement"] + 0.1, (before, after)


def student_problem(tasks: int = 3):
    student = jmeta.from_linen(jmeta.models.MLP((8, 3)), jnp.zeros((1, 4)))
    x = jax.random.normal(jax.random.key(0), (tasks, 6, 4))
    y = jnp.tile(jnp.array([0, 1, 2, 0, 1, 2]), (tasks, 1))
    return student, jax.random.split(jax.random.key(1), tasks), x, y


def test_students_without_teacher_are_the_same_students_at_hard_weight_one():
    student, keys, x, y = student_problem()
    soft = jax.random.normal(jax.random.key(2), (3, 6, 3))
    labels_only, _ = fit_students(student, keys, x, y, steps=5, lr=0.1)
    all_hard, _ = fit_students(student, keys, x, y, steps=5, lr=0.1, teacher_logits=soft, hard_weight=1.0)
    distilled, _ = fit_students(student, keys, x, y, steps=5, lr=0.1, teacher_logits=soft, hard_weight=0.0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), labels_only, all_hard)
    assert not np.allclose(distilled["Dense_1"]["kernel"], labels_only["Dense_1"]["kernel"])
    # each task starts from student.init(keys[t]) and trains on its own examples
    first, _ = fit_students(student, keys[:1], x[:1], y[:1], steps=5, lr=0.1)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6), labels_only, first)


def test_fully_soft_students_come_to_match_their_teacher():
    student, keys, x, y = student_problem()
    soft = 3.0 * jax.random.normal(jax.random.key(2), (3, 6, 3))
    params, state = fit_students(student, keys, x, y, steps=300, lr=0.05, teacher_logits=soft, hard_weight=0.0)
    logits = jax.vmap(lambda p, s, x: student.apply(p, s, x)[0])(params, state, x)
    assert float(jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(soft, -1))) == 1.0


def test_fit_students_and_scarce_subsets_refuse_bad_input():
    student, keys, x, y = student_problem()
    with pytest.raises(ValueError, match="tasks = len\\(keys\\) = 3"):
        fit_students(student, keys, x[:2], y[:2], steps=1, lr=0.1)
    with pytest.raises(ValueError, match="teacher_logits must have shape"):
        fit_students(student, keys, x, y, steps=1, lr=0.1, teacher_logits=jnp.zeros((3, 5, 3)))
    with pytest.raises(ValueError, match="hard_weight must be a number in \\[0, 1\\]; got 2"):
        fit_students(student, keys, x, y, steps=1, lr=0.1, teacher_logits=jnp.zeros((3, 6, 3)), hard_weight=2)
    with pytest.raises(ValueError, match="shots must be at most the smallest class's examples \\(2\\); got 3"):
        scarce_subsets(np.array([0, 0, 1, 1, 1]), shots=3, tasks=2, seed=0)
    subsets = scarce_subsets(np.array([0, 0, 1, 1, 1, 2, 2]), shots=2, tasks=4, seed=0)
    assert subsets.shape == (4, 6)
    assert all(sorted(np.array([0, 0, 1, 1, 1, 2, 2])[s].tolist()) == [0, 0, 1, 1, 2, 2] for s in subsets)
