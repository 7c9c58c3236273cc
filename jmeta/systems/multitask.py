"""A shared trunk trained on all training classes, then a new head per new task (source article
``002_f30f3d58d6380daa.txt``, "shared knowledge": knowledge shared across tasks lets new tasks be learnt faster).

Training, one of two forms, both one optimiser step (any optax optimiser) on the trunk and heads together:

* *all classes*: one softmax head over every training class, on batches of examples drawn at random
  (:func:`make_example_sampler`): many-way supervised pre-training, the "good embedding" of Tian et al.
  (ECCV 2020, "Rethinking few-shot image classification: a good embedding is all you need");
* *groups*: the training classes are dealt, once, into fixed groups of ``num_classes`` classes; each
  group is a training task with its own linear head on the shared trunk (Caruana 1997, "Multitask
  Learning"), and a batch holds points of several groups (:func:`make_group_sampler`).

Both feed :func:`multitask` a :class:`GroupBatch`; the first is the second with one group of every class.
Two options from Tian et al. 2020: the samplers' ``augment`` shifts (and flips) every training image at
random (:func:`augment_images`), and a step given a :class:`Teacher` (a trained generation) minimises the
distillation loss against it (Born-again self-distillation, their sec. 3.3).

Test: the trunk is frozen (``test_trunk``: the same parameters, e.g. with BatchNorm's running averages).
For a new few-shot task a fresh linear head (zeros) is fitted to the trunk's features of the support set
by ``head_steps`` steps of full-batch gradient descent on the mean cross-entropy plus ``head_l2 / 2`` times
the squared norm of the head's weights (``jmeta.learners.baseline.fit_head``, the head fitting of the
Baseline learners too): L2-regularised multinomial logistic regression, scikit-learn's
``LogisticRegression(C=1 / (head_l2 * support points))``. Its first step from zeros already points each
class's weights along its mean feature vector minus the overall mean. The query set is scored by trunk and
head.

The baseline the system claims to beat is :attr:`Multitask.scratch`: the same network (trunk and linear
head) trained from fresh parameters on each support set alone, ``scratch_steps`` steps of
``scratch_optimizer`` on every parameter.

:func:`multitask` returns the pure functions of both phases. Its ``learner`` is the test phase as a
``jmeta.Learner`` (``adapt`` fits a head; ``steps`` counts head steps, and 0 leaves the zero head), so
``jmeta.evaluate(mt.learner, state.params.trunk, state.model_state, episodes, key, steps=(...,))``
gives meta-test accuracy with confidence intervals. Its ``task_loss`` is differentiable with respect
to the trunk, through the head fitting.

Example::

    >>> import jax, jax.numpy as jnp, optax, jmeta
    >>> x = jnp.zeros((1, 28, 28, 1))
    >>> trunk = jmeta.from_linen(SharedTrunk002(), x)
    >>> mt = multitask(trunk, x, num_heads=10, num_classes=5, optimizer=optax.adam(1e-3))
    >>> state = mt.init(jax.random.key(0))
    >>> state.params.heads.kernel.shape
    (10, 64, 5)
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jmeta import losses
from jmeta.data import load
from jmeta.data.dataset import ClassArrays, ClassDataset
from jmeta.evaluation import estimate, per_task_metrics
from jmeta.learners.base import Learner, TaskOutput, call_apply, query_metrics, steps_or_default
from jmeta.learners.baseline import Head, fit_head, head_logits, init_head, normalize
from jmeta.learners.maml import maml
from jmeta.models.conv4 import Conv4
from jmeta.models.ports import SharedTrunk002
from jmeta.nn import Model, PyTree, check_model, from_linen
from jmeta.systems.common import comparison, few_shot_protocol, paired_gain, report
from jmeta.systems.distill import distillation_loss, unit_interval
from jmeta.tasks.class_batches import draw_examples
from jmeta.tasks.episodes import Augment, augment_keys, make_episode_sampler, random_crops, random_flips
from jmeta.tasks.task import Task
from jmeta.validation import one_of, positive_float, positive_int


class MultitaskParams(NamedTuple):
    """The shared trunk's parameters and the stacked heads of the training groups."""

    trunk: PyTree
    heads: Head


class MultitaskState(NamedTuple):
    """Everything multi-task training carries from one step to the next."""

    step: jax.Array
    params: MultitaskParams
    model_state: PyTree
    opt_state: optax.OptState


class GroupBatch(NamedTuple):
    """Training points of several groups: ``group`` ``(batch,)`` says which head scores each row;
    ``x`` ``(batch, points, *input_shape)``; ``y`` ``(batch, points)`` labels within the group."""

    group: jax.Array
    x: jax.Array
    y: jax.Array


class Teacher(NamedTuple):
    """A trained generation that teaches the next (Born-again self-distillation): its
    :class:`MultitaskParams` and model state, applied as at test (``test_trunk``)."""

    params: MultitaskParams
    model_state: PyTree


class Adapted(NamedTuple):
    """The task parameters of :attr:`Multitask.learner`: the frozen trunk and the head fitted to a task."""

    trunk: PyTree
    head: Head


class Multitask(NamedTuple):
    """The pure functions of multi-task training and few-shot testing (see :func:`multitask`)."""

    init: Callable[[jax.Array], MultitaskState]
    step: Callable[..., tuple[MultitaskState, dict[str, jax.Array]]]
    fit_head: Callable[..., Head]
    predict: Callable[[PyTree, PyTree, Head, jax.Array], jax.Array]
    learner: Learner
    scratch: Learner


def multitask(
    trunk: Model,
    example_x: jax.Array,
    *,
    num_heads: int,
    num_classes: int,
    optimizer: optax.GradientTransformation,
    ways: int | None = None,
    head_steps: int = 100,
    head_lr: float = 0.1,
    head_l2: float = 0.0,
    feature_scale: float | None = None,
    test_feature_scale: float | None = None,
    test_trunk: Model | None = None,
    scratch_steps: int = 100,
    scratch_optimizer: optax.GradientTransformation | None = None,
    distill_temperature: float = 4.0,
    distill_hard_weight: float = 0.5,
) -> Multitask:
    """Builds multi-task training of ``trunk`` with ``num_heads`` heads of ``num_classes`` classes, and
    few-shot testing with heads of ``ways`` classes (default ``num_classes``) fitted on frozen features.

    ``trunk`` maps a batch ``(points, *input_shape)`` to features ``(points, features)``, e.g.
    ``jmeta.from_linen(SharedTrunk002(), example_x)``; ``example_x`` is a batch of one input, used to
    find the feature width. ``test_trunk`` is the trunk as applied at test, to the same parameters and
    model state (default ``trunk``), e.g. ``Conv4(None, use_running_average=True)`` where ``trunk`` is
    ``Conv4(None)``: then a query point's features do not depend on the other points of its batch.
    ``head_steps``, ``head_lr`` and ``head_l2`` set the gradient descent that fits a test head (see the
    module docstring); ``scratch_steps`` and ``scratch_optimizer`` (default ``optax.adam(1e-3)``) train
    the baseline :attr:`Multitask.scratch`. With ``feature_scale=s`` the trunk's features are divided by
    their L2 norm and multiplied by ``s`` before every head, in training and at test, so that heads score
    cosine similarities (the cosine classifier of Gidaris & Komodakis 2018 and of "Baseline++" in Chen et
    al. 2019). ``test_feature_scale`` (default ``feature_scale``) does the same for the test heads only,
    as Tian et al. (2020) normalise the features of the logistic regression they fit at test.
    ``distill_temperature`` and ``distill_hard_weight`` set the loss of a step given a ``teacher``
    (``jmeta.systems.distill.distillation_loss``: the KL divergence from the teacher's outputs softened by the
    temperature, weight ``1 - distill_hard_weight``, plus the cross-entropy on the labels, weight
    ``distill_hard_weight``): the self-distillation ("Born-again networks", Furlanello et al. 2018) of Tian
    et al. 2020, sec. 3.3, where a student of the same network learns from the previous generation.

    Returns a :class:`Multitask` of pure functions:

    * ``init(key) -> MultitaskState`` (heads start at zero);
    * ``step(state, batch, teacher=None) -> (state, metrics)``: one jit-compiled optimiser step on a
      :class:`GroupBatch` (``metrics``: ``loss``, ``accuracy``); it donates ``state``'s buffers. Given a
      :class:`Teacher` (a trained state's parameters and model state, of the same shapes), the loss is the
      distillation loss against the teacher's logits on the same batch (its trunk applied as ``test_trunk``,
      no gradient into it) instead of the cross-entropy;
    * ``fit_head(trunk_params, model_state, support_x, support_y, steps=None) -> Head``;
    * ``predict(trunk_params, model_state, head, x) -> logits``;
    * ``learner``: the test phase as a ``jmeta.Learner`` (meta-parameters: the trunk's);
    * ``scratch``: the baseline as a ``jmeta.Learner``: ``init(key)`` gives fresh parameters
      ``(trunk, Head)`` of the same network (zero head of ``ways`` classes), ``adapt`` trains all of them
      on the support set, ``predict`` applies ``trunk`` (not ``test_trunk``) and the head. Evaluate it
      from ``scratch.init(key)``: nothing is meta-learnt.

    Raises ValueError or TypeError naming the argument for a bad argument, and ValueError when the trunk
    does not return ``(points, features)``.

    Example::

        >>> import jax.numpy as jnp, optax, jmeta
        >>> trunk = jmeta.from_linen(jmeta.models.MLP((32, 16)), jnp.zeros((1, 4)))
        >>> mt = multitask(trunk, jnp.zeros((1, 4)), num_heads=3, num_classes=2, optimizer=optax.sgd(0.1))
    """
    trunk = check_model(trunk, "trunk")
    test_trunk = trunk if test_trunk is None else check_model(test_trunk, "test_trunk")
    num_heads = positive_int("num_heads", num_heads)
    num_classes = positive_int("num_classes", num_classes)
    ways = num_classes if ways is None else positive_int("ways", ways)
    default_head_steps = positive_int("head_steps", head_steps, allow_zero=True)
    head_lr = positive_float("head_lr", head_lr)
    if isinstance(head_l2, bool) or not isinstance(head_l2, numbers.Real) or not 0 <= head_l2 < float("inf"):
        raise ValueError(f"head_l2 must be a finite number >= 0; got {head_l2!r}.")
    scratch_steps = positive_int("scratch_steps", scratch_steps)
    distill_temperature = positive_float("distill_temperature", distill_temperature)
    distill_hard_weight = unit_interval("distill_hard_weight", distill_hard_weight)
    if feature_scale is not None:
        feature_scale = positive_float("feature_scale", feature_scale)
    test_feature_scale = feature_scale if test_feature_scale is None else positive_float(
        "test_feature_scale", test_feature_scale
    )
    scratch_optimizer = optax.adam(1e-3) if scratch_optimizer is None else scratch_optimizer
    for name, value in (("optimizer", optimizer), ("scratch_optimizer", scratch_optimizer)):
        if not isinstance(value, optax.GradientTransformation):
            raise TypeError(f"{name} must be an optax.GradientTransformation; got {type(value).__name__}.")
    example_x = jnp.asarray(example_x)

    def features_of(
        trunk_params: PyTree,
        model_state: PyTree,
        x: jax.Array,
        model: Model = trunk,
        scale: float | None = feature_scale,
    ) -> tuple[jax.Array, PyTree]:
        features, new_state = call_apply(model.apply, trunk_params, model_state, x)
        if features.ndim != 2:
            raise ValueError(
                f"trunk must return features of shape (points, features); got shape {features.shape}. Flatten "
                "or pool its output, or use a trunk without a classifier head (e.g. SharedTrunk002())."
            )
        return features if scale is None else scale * normalize(features), new_state

    def init(key: jax.Array) -> MultitaskState:
        trunk_params, model_state = trunk.init(key)
        features = jax.eval_shape(features_of, trunk_params, model_state, example_x)[0].shape[-1]
        heads = Head(jnp.zeros((num_heads, features, num_classes)), jnp.zeros((num_heads, num_classes)))
        params = MultitaskParams(trunk_params, heads)
        return MultitaskState(jnp.zeros((), jnp.int32), params, model_state, optimizer.init(params))

    def group_logits(
        params: MultitaskParams, model_state: PyTree, batch: GroupBatch, model: Model = trunk
    ) -> tuple[jax.Array, PyTree]:
        """Logits ``(groups * points, classes)`` of every point of ``batch`` under its group's head."""
        tasks, points = batch.y.shape
        flat_x = batch.x.reshape(tasks * points, *batch.x.shape[2:])
        features, new_state = features_of(params.trunk, model_state, flat_x, model)
        features = features.reshape(tasks, points, -1)
        heads = jax.tree.map(lambda a: a[batch.group], params.heads)
        logits = jnp.einsum("tpf,tfc->tpc", features, heads.kernel) + heads.bias[:, None]
        return logits.reshape(tasks * points, -1), new_state

    def batch_loss(
        params: MultitaskParams, model_state: PyTree, batch: GroupBatch, teacher: Teacher | None
    ) -> tuple[jax.Array, tuple[PyTree, dict[str, jax.Array]]]:
        logits, new_state = group_logits(params, model_state, batch)
        labels = batch.y.reshape(-1)
        if teacher is None:
            loss = losses.cross_entropy(logits, labels)
        else:
            teacher_logits, _ = group_logits(teacher.params, teacher.model_state, batch, test_trunk)
            loss = distillation_loss(logits, teacher_logits, labels, distill_temperature, distill_hard_weight)
        return loss, (new_state, {"loss": loss, "accuracy": losses.accuracy(logits, labels)})

    @functools.partial(jax.jit, donate_argnums=0)
    def compiled_step(
        state: MultitaskState, batch: GroupBatch, teacher: Teacher | None
    ) -> tuple[MultitaskState, dict[str, jax.Array]]:
        grads, (model_state, metrics) = jax.grad(batch_loss, has_aux=True)(
            state.params, state.model_state, batch, teacher
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return MultitaskState(state.step + 1, params, model_state, opt_state), metrics

    def step(
        state: MultitaskState, batch: GroupBatch, teacher: Teacher | None = None
    ) -> tuple[MultitaskState, dict[str, jax.Array]]:
        check_group_batch(batch, num_heads)
        if teacher is not None:
            check_teacher(teacher, state)
        return compiled_step(state, batch, teacher)

    def fit_head_to(
        trunk_params: PyTree, model_state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None
    ) -> Head:
        features, _ = features_of(trunk_params, model_state, x, test_trunk, test_feature_scale)
        zero = init_head(None, features.shape[-1], ways, cosine=False)
        return fit_head(features, y, zero, steps=steps_or_default(steps, default_head_steps),
                        optimizer=optax.sgd(head_lr), l2=head_l2)

    def predict(trunk_params: PyTree, model_state: PyTree, head: Head, x: jax.Array) -> jax.Array:
        features, _ = features_of(trunk_params, model_state, x, test_trunk, test_feature_scale)
        return head_logits(head, features)

    def adapt(trunk_params: PyTree, model_state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None) -> Any:
        return Adapted(trunk_params, fit_head_to(trunk_params, model_state, x, y, steps))

    def learner_predict(adapted: Adapted, model_state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        return predict(adapted.trunk, model_state, adapted.head, x), model_state

    def task_loss(
        trunk_params: PyTree, model_state: PyTree, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        logits, _ = learner_predict(adapt(trunk_params, model_state, task.support_x, task.support_y, steps),
                                    model_state, task.query_x)
        loss, values = query_metrics(losses.cross_entropy, {"accuracy": losses.accuracy}, logits, task.query_y)
        return loss, TaskOutput(values, model_state)

    def network_init(key: jax.Array) -> tuple[tuple[PyTree, Head], PyTree]:
        trunk_params, model_state = trunk.init(key)
        features = jax.eval_shape(features_of, trunk_params, model_state, example_x)[0].shape[-1]
        return (trunk_params, init_head(None, features, ways, cosine=False)), model_state

    def network_apply(params: tuple[PyTree, Head], model_state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        features, new_state = features_of(params[0], model_state, x)
        return head_logits(params[1], features), new_state

    learner = Learner(init=trunk.init, adapt=adapt, predict=learner_predict, task_loss=task_loss)
    scratch = maml(
        Model(network_init, network_apply),
        losses.cross_entropy,
        steps=scratch_steps,
        inner_optimizer=scratch_optimizer,
        remat=True,  # keeps the loop of scratch_steps rolled: one step compiled, not scratch_steps
        metrics={"accuracy": losses.accuracy},
    )
    return Multitask(init=init, step=step, fit_head=fit_head_to, predict=predict, learner=learner, scratch=scratch)


def check_group_batch(batch: GroupBatch, num_heads: int) -> None:
    """Raises, before tracing, unless ``batch`` is a :class:`GroupBatch` of consistent shapes.

    Example::

        >>> import jax.numpy as jnp
        >>> check_group_batch(GroupBatch(jnp.zeros(2, int), jnp.zeros((2, 4, 1)), jnp.zeros((2, 3), int)), 5)
        Traceback (most recent call last):
        ValueError: batch.x and batch.y must have the same number of points (axis 1); got (2, 4, 1) and (2, 3).
    """
    if not isinstance(batch, GroupBatch):
        raise TypeError(f"batch must be a jmeta.systems.multitask.GroupBatch; got {type(batch).__name__}.")
    group, x, y = (jnp.shape(a) for a in batch)
    if len(group) != 1 or len(y) != 2 or len(x) < 3 or not group[0] == x[0] == y[0]:
        raise ValueError(
            "batch.group, batch.x and batch.y must have the same number of rows (axis 0); got shapes "
            f"{group}, {x} and {y}."
        )
    if x[1] != y[1]:
        raise ValueError(f"batch.x and batch.y must have the same number of points (axis 1); got {x} and {y}.")
    if not isinstance(batch.group, jax.core.Tracer) and np.any(np.asarray(batch.group) >= num_heads):
        raise ValueError(f"batch.group must hold head indices below num_heads={num_heads}; got {batch.group}.")


def check_teacher(teacher: Teacher, state: MultitaskState) -> None:
    """Raises, before tracing, unless ``teacher`` is a :class:`Teacher` whose parameters and model state have
    the structure and shapes of ``state``'s (a trained generation of the same network).

    Example::

        >>> import jax.numpy as jnp
        >>> heads = Head(jnp.zeros((1, 2, 3)), jnp.zeros((1, 3)))
        >>> state = MultitaskState(jnp.zeros((), jnp.int32), MultitaskParams({"w": jnp.zeros(2)}, heads), {}, ())
        >>> check_teacher(Teacher(MultitaskParams({"w": jnp.zeros(3)}, heads), {}), state)
        Traceback (most recent call last):
        ValueError: teacher must hold parameters and model state of the student's shapes ...
    """
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher must be a jmeta.systems.multitask.Teacher or None; got {type(teacher).__name__}.")
    student = jax.tree.map(jnp.shape, (state.params, state.model_state))
    given = jax.tree.map(jnp.shape, (teacher.params, teacher.model_state))
    if jax.tree.structure(student) != jax.tree.structure(given) or student != given:
        raise ValueError(
            "teacher must hold parameters and model state of the student's shapes (a trained generation of the "
            f"same network); got shapes {given}, expected {student}."
        )


def check_training_augment(augment: Augment | str, dataset: ClassDataset) -> Augment:
    """``augment`` (an ``Augment`` or its text, e.g. ``"crop2"``) for training batches of ``dataset``'s
    images: random crops (shifts) and flips only. Raises ValueError for a rotation (on Omniglot, rotations
    by 90 degrees are classes of their own: ``rotate``), or for augmentation of examples that are not
    images ``(H, W, C)``.

    Example::

        >>> import numpy as np
        >>> ds = ClassDataset(np.zeros((4, 5, 5, 1), np.uint8), np.arange(4), "abcd")
        >>> check_training_augment("crop2", ds)
        Augment(rotate90=False, crop_padding=2, flip=False)
        >>> check_training_augment("rot90", ds)
        Traceback (most recent call last):
        ValueError: augment='rot90': training batches take random crops and flips only ('cropP', 'flip'); ...
    """
    if not isinstance(dataset, ClassDataset):
        raise TypeError(f"dataset must be a jmeta.data.ClassDataset; got {type(dataset).__name__}.")
    parsed = augment if isinstance(augment, Augment) else Augment.parse(augment)
    if parsed.rotate90:
        raise ValueError(
            f"augment={augment!r}: training batches take random crops and flips only ('cropP', 'flip'); rotations "
            "by 90 degrees are classes of their own here (the data set's rotate option)."
        )
    if parsed and len(dataset.input_shape) != 3:
        raise ValueError(f"augment={augment!r} needs images (H, W, C); the examples have shape {dataset.input_shape}.")
    return parsed


def augment_images(key: jax.Array, images: jax.Array, augment: Augment) -> jax.Array:
    """``images`` ``(..., H, W, C)`` with ``augment``'s random crops (a shift of up to ``crop_padding``
    pixels each way, zeros shifted in) and left-right flips, each image its own, a pure function of
    ``key`` (the augmentation of pre-training batches in Tian et al. 2020; ``jmeta.tasks.episodes``'s
    ``random_crops`` and ``random_flips``). No augmentation returns ``images`` unchanged.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> augment_images(jax.random.key(0), jnp.ones((2, 3, 4, 4, 1)), Augment(crop_padding=1)).shape
        (2, 3, 4, 4, 1)
    """
    _, crop_key, flip_key = augment_keys(key)
    if augment.crop_padding:
        images = random_crops(crop_key, images, augment.crop_padding)
    if augment.flip:
        images = random_flips(flip_key, images)
    return images


def _draw_and_augment_keys(key: jax.Array, augment: Augment) -> tuple[jax.Array, jax.Array]:
    """The key of a batch's draws and that of its augmentation; without augmentation the draws take ``key``
    itself, as before augmentation existed."""
    if not augment:
        return key, key
    draw_key, augment_key = jax.random.split(key)
    return draw_key, augment_key


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["arrays", "groups"], meta_fields=["examples", "augment"]
)
@dataclasses.dataclass(frozen=True, eq=False)
class GroupSampler:
    """Draws :class:`GroupBatch` es: ``sampler(key, num_groups) -> GroupBatch``, ``num_groups`` groups
    drawn uniformly with replacement and ``examples`` distinct examples of each of a group's classes.

    Row ``g`` of ``groups`` lists group ``g``'s classes; a point's label is its class's position in that
    row. Images stored as uint8 come out scaled to [0, 1], then augmented (:func:`augment_images`). Build it
    with :func:`make_group_sampler`; it is a pytree, so pass it into your jitted code as an argument.

    Example::

        >>> import jax, numpy as np
        >>> ds = ClassDataset(np.zeros((12, 2, 2, 1), np.uint8), np.repeat(np.arange(4), 3), "abcd")
        >>> batch = make_group_sampler(ds, classes_per_group=2, examples=3)(jax.random.key(0), 5)
        >>> batch.x.shape, batch.y.shape
        ((5, 6, 2, 2, 1), (5, 6))
    """

    arrays: ClassArrays
    groups: jax.Array
    examples: int
    augment: Augment = Augment()

    @property
    def num_groups(self) -> int:
        """The number of groups, i.e. of training heads."""
        return self.groups.shape[0]

    def __call__(self, key: jax.Array, num_groups: int) -> GroupBatch:
        return _sample_groups(self, key, positive_int("num_groups", num_groups))


def make_group_sampler(
    dataset: ClassDataset, classes_per_group: int, examples: int, seed: int = 0, augment: Augment | str = ""
) -> GroupSampler:
    """Deals ``dataset``'s classes at random (``seed``) into ``num_classes // classes_per_group`` fixed
    groups (the remainder is left out) and returns their sampler, whose batches are augmented as
    ``augment`` says (:func:`check_training_augment`; ``""`` none).

    Example::

        >>> import numpy as np
        >>> ds = ClassDataset(np.zeros((10, 3), np.float32), np.repeat(np.arange(5), 2), "abcde")
        >>> make_group_sampler(ds, classes_per_group=2, examples=1).num_groups
        2
    """
    if not isinstance(dataset, ClassDataset):
        raise TypeError(f"dataset must be a jmeta.data.ClassDataset; got {type(dataset).__name__}.")
    classes_per_group = positive_int("classes_per_group", classes_per_group)
    examples = positive_int("examples", examples)
    seed = positive_int("seed", seed, allow_zero=True)
    augment = check_training_augment(augment, dataset)
    if classes_per_group > dataset.num_classes:
        raise ValueError(
            f"classes_per_group must be at most the number of classes ({dataset.num_classes}); got {classes_per_group}."
        )
    if examples > dataset.counts.min():
        raise ValueError(
            f"examples must be at most the number of examples in the smallest class ({dataset.counts.min()}); "
            f"got {examples}."
        )
    num_groups = dataset.num_classes // classes_per_group
    order = np.random.default_rng(seed).permutation(dataset.num_classes)[: num_groups * classes_per_group]
    groups = jnp.asarray(order.reshape(num_groups, classes_per_group))
    return GroupSampler(dataset.device_arrays(), groups, examples, augment)


@functools.partial(jax.jit, static_argnames="num_groups")
def _sample_groups(sampler: GroupSampler, key: jax.Array, num_groups: int) -> GroupBatch:
    images, index = sampler.arrays
    key, augment_key = _draw_and_augment_keys(key, sampler.augment)
    group_key, example_key = jax.random.split(key)
    group = jax.random.randint(group_key, (num_groups,), 0, sampler.num_groups)
    rows = index[sampler.groups[group]]  # (num_groups, classes, max_count), -1 past each class's count
    scores = jnp.where(rows >= 0, jax.random.uniform(example_key, rows.shape), -1.0)
    _, picks = jax.lax.top_k(scores, sampler.examples)
    x = images[jnp.take_along_axis(rows, picks, axis=-1)]  # (num_groups, classes, examples, *input_shape)
    x = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    x = augment_images(augment_key, x, sampler.augment)
    classes = rows.shape[1]
    y = jnp.broadcast_to(jnp.arange(classes, dtype=jnp.int32)[:, None], (num_groups, classes, sampler.examples))
    points = classes * sampler.examples
    return GroupBatch(group, x.reshape(num_groups, points, *images.shape[1:]), y.reshape(num_groups, points))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["images", "labels"], meta_fields=["augment"])
@dataclasses.dataclass(frozen=True, eq=False)
class ExampleSampler:
    """Draws batches of examples for one softmax over every class: ``sampler(key, points) -> GroupBatch``
    with one row (group 0) of ``points`` examples drawn uniformly with replacement from the whole data set,
    each labelled with its class (``0 .. num_classes - 1``). Images stored as uint8 come out scaled to
    [0, 1], then augmented (:func:`augment_images`). Build it with :func:`make_example_sampler`; it is a pytree.

    Example::

        >>> import jax, numpy as np
        >>> ds = ClassDataset(np.zeros((12, 2, 2, 1), np.uint8), np.repeat(np.arange(4), 3), "abcd")
        >>> batch = make_example_sampler(ds)(jax.random.key(0), 8)
        >>> batch.group.tolist(), batch.x.shape, batch.y.shape
        ([0], (1, 8, 2, 2, 1), (1, 8))
    """

    images: jax.Array  # (examples, *input_shape)
    labels: jax.Array  # (examples,) int32
    augment: Augment = Augment()

    def __call__(self, key: jax.Array, points: int) -> GroupBatch:
        return _sample_examples(self, key, positive_int("points", points))


def make_example_sampler(dataset: ClassDataset, augment: Augment | str = "") -> ExampleSampler:
    """The :class:`ExampleSampler` of every example of ``dataset`` (copied to the default device), for
    :func:`multitask` with ``num_heads=1, num_classes=dataset.num_classes``; its batches are augmented as
    ``augment`` says (:func:`check_training_augment`: ``"cropP"``, ``"flip"``, ``"crop2+flip"``; ``""`` none).

    Example::

        >>> import numpy as np
        >>> ds = ClassDataset(np.zeros((10, 3), np.float32), np.repeat(np.arange(5), 2), "abcde")
        >>> make_example_sampler(ds).labels.tolist()
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    """
    if not isinstance(dataset, ClassDataset):
        raise TypeError(f"dataset must be a jmeta.data.ClassDataset; got {type(dataset).__name__}.")
    augment = check_training_augment(augment, dataset)
    return ExampleSampler(jnp.asarray(dataset.images), jnp.asarray(dataset.labels, jnp.int32), augment)


@functools.partial(jax.jit, static_argnames="points")
def _sample_examples(sampler: ExampleSampler, key: jax.Array, points: int) -> GroupBatch:
    key, augment_key = _draw_and_augment_keys(key, sampler.augment)
    x, y = draw_examples(sampler.images, sampler.labels, key, (1, points))
    return GroupBatch(jnp.zeros((1,), jnp.int32), augment_images(augment_key, x, sampler.augment), y)


# ---------------------------------------------------------------------------------------------------------
# The `multitask` program of `jmeta train`


TRUNKS = ("conv4", "dense64")
TRAINING = ("all-classes", "groups")
SYSTEM, BASELINE = "shared trunk, fitted head", "same network from scratch"


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Trains a shared trunk on the Omniglot training characters, then compares, on the same
    ``config.eval_tasks`` test tasks, a head fitted on its frozen features with the same network trained
    from scratch on each support set.

    Config keys: ``model``: ``"conv4"`` (MAML's Conv-4, ``hidden`` filters, ``downsample``, ``pool``;
    BatchNorm with batch statistics in training and its running averages at test) or ``"dense64"`` (the
    article's ``SharedTrunk002``, ``features`` ReLU units); ``training``: ``"all-classes"`` (one softmax over
    every training class, ``meta_batch`` examples per step) or ``"groups"`` (one head per fixed group of
    ``ways`` classes, ``meta_batch`` groups of ``examples`` examples per class per step); ``steps`` Adam
    steps from ``meta_lr``, cosine-decayed to 0; ``feature_scale``, ``test_feature_scale`` (0: no
    normalisation), ``head_steps``, ``head_lr``, ``head_l2``: the features and the test head
    (:func:`multitask`); ``scratch_steps`` Adam steps of ``scratch_lr`` for the baseline; test tasks of
    ``ways`` classes, ``eval_shots`` and ``eval_queries`` per class; ``rotate``: the splits whose characters
    also count rotated by 90, 180 and 270 degrees as classes of their own (``()`` or ``("train",)``);
    ``augment``: the training batches' random crops and flips (:func:`check_training_augment`, e.g.
    ``"crop2"``; ``""`` none); ``distill_generations``: Born-again self-distillation (Tian et al. 2020, sec.
    3.3), that many further generations, each the same network trained from fresh parameters for ``steps``
    steps on the distillation loss against the previous generation (``distill_temperature``,
    ``distill_hard_weight``; :func:`multitask`); 0 (the default when the key is absent): one generation.

    Results: one row per learner (the system is the last generation; with self-distillation, each earlier
    generation has a row of its own, on the same test tasks), and ``comparison`` (the paired per-task gain in
    accuracy of the system over the baseline; with self-distillation also ``distillation``, the last
    generation's paired gain over the first); ``protocol.training_example_passes`` counts the forward and
    backward passes of training examples over all generations (a teacher's forward passes not counted), for
    matching compute with other meta-learners.
    """
    model, training = one_of("model", config.model, TRUNKS), one_of("training", config.training, TRAINING)
    data = load("omniglot", config.data_dir or None, split=config.split, rotate=tuple(config.rotate))
    example = jnp.zeros((1, *data["train"].input_shape))
    if model == "conv4":
        module = functools.partial(Conv4, None, hidden=config.hidden, downsample=config.downsample, pool=config.pool)
        trunk, test_trunk = from_linen(module(), example), from_linen(module(use_running_average=True), example)
    else:
        trunk, test_trunk = from_linen(SharedTrunk002(features=config.features), example), None
    augment = config.get("augment", "")
    if training == "all-classes":
        sampler = make_example_sampler(data["train"], augment)
        heads, classes, passes_per_step = 1, data["train"].num_classes, config.meta_batch
    else:
        sampler = make_group_sampler(data["train"], config.ways, config.examples, seed=config.seed, augment=augment)
        heads, classes = sampler.num_groups, config.ways
        passes_per_step = config.meta_batch * config.ways * config.examples
    steps = positive_int("steps", config.steps)
    generations = 1 + positive_int("distill_generations", config.get("distill_generations", 0), allow_zero=True)
    mt = multitask(
        trunk,
        example,
        num_heads=heads,
        num_classes=classes,
        ways=config.ways,
        optimizer=optax.adam(optax.cosine_decay_schedule(positive_float("meta_lr", config.meta_lr), steps)),
        head_steps=config.head_steps,
        head_lr=config.head_lr,
        head_l2=config.head_l2,
        feature_scale=config.feature_scale or None,
        test_feature_scale=config.test_feature_scale or None,
        test_trunk=test_trunk,
        scratch_steps=config.scratch_steps,
        scratch_optimizer=optax.adam(positive_float("scratch_lr", config.scratch_lr)),
        distill_temperature=config.get("distill_temperature", 4.0),
        distill_hard_weight=config.get("distill_hard_weight", 0.5),
    )
    init_key, train_key, test_key, scratch_key = jax.random.split(jax.random.key(config.seed), 4)
    test = make_episode_sampler(data["test"], config.ways, config.eval_shots, config.eval_queries)
    accuracy, training_seconds, final_losses, teacher = {}, [], [], None
    for generation in range(generations):
        # Generation 0 is the system without self-distillation, drawn from the keys it always had.
        generation_init, generation_train = (jax.random.fold_in(k, generation) if generation else k
                                             for k in (init_key, train_key))
        state = mt.init(generation_init)
        start = time.perf_counter()
        for step in range(steps):
            batch = sampler(jax.random.fold_in(generation_train, step), config.meta_batch)
            state, metrics = mt.step(state, batch, teacher)
        jax.block_until_ready(state)
        training_seconds.append(round(time.perf_counter() - start, 1))
        final_losses.append(f"{float(metrics['loss']):.4g}")
        name = SYSTEM if generation == generations - 1 else f"{SYSTEM}, generation {generation}"
        accuracy[name] = _accuracies(mt.learner, state.params.trunk, state.model_state, test, test_key,
                                     config.head_steps, config.eval_tasks)
        done = estimate(accuracy[name])
        print(f"multitask: generation {generation} of {generations}: {steps} steps in {training_seconds[-1]} s, "
              f"final training loss {final_losses[-1]}, test accuracy {done.mean:.4f} ± {done.ci95:.4f}",
              file=sys.stderr, flush=True)  # a long run's generations, as they finish
        teacher = Teacher(state.params, state.model_state)
    scratch_params, scratch_state = mt.scratch.init(scratch_key)
    accuracy[BASELINE] = _accuracies(mt.scratch, scratch_params, scratch_state, test, test_key, config.scratch_steps,
                                     config.eval_tasks)
    protocol = {
        **few_shot_protocol(config, f"last, step {steps} (final training loss {', '.join(final_losses)}"
                                    + (" by generation)" if generations > 1 else ")")),
        "inner_steps": {SYSTEM: config.head_steps, BASELINE: config.scratch_steps},
        "inner_lr": f"head: gradient descent {config.head_lr}, from scratch: Adam {config.scratch_lr}",
        "model": model,
        "training": training,
        "training_rotations": "train" in config.rotate,
        "training_heads": heads,
        "training_classes_per_head": classes,
        "training_augment": augment or "none",
        "training_generations": generations,
        "training_example_passes": generations * steps * passes_per_step,
        "training_seconds": round(sum(training_seconds), 1),
        "training_seconds_by_generation": training_seconds,
    }
    rows = {name: {"accuracy": estimate(values)} for name, values in accuracy.items()}
    gain = paired_gain(accuracy[SYSTEM], accuracy[BASELINE])
    details = {"comparison": comparison(SYSTEM, BASELINE, gain)}
    if generations > 1:
        first = f"{SYSTEM}, generation 0"
        details["distillation"] = comparison(SYSTEM, first, paired_gain(accuracy[SYSTEM], accuracy[first]))
    return report(config, rows, protocol, **details)


def _accuracies(
    learner: Learner, params: PyTree, model_state: PyTree, test: Any, key: jax.Array, steps: int, tasks: int
) -> np.ndarray:
    """Per-task query accuracies after ``steps`` inner steps; the same tasks for the same ``test`` and ``key``."""
    return per_task_metrics(learner, params, model_state, test, key, num_tasks=tasks, steps=(steps,))[steps]["accuracy"]
