"""Baseline, Baseline++ and fine-tuning (Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot
Classification", ICLR 2019), and the parts they share with ``jmeta.systems.multitask``: linear and cosine
classifier heads (:class:`Head`, :func:`head_logits`) and fitting a head to a support set's features by
minibatch gradient descent (:func:`fit_head`, :func:`descend`).

The methods (Chen et al. 2019, sec. 3.1-3.2). *Pre-training*: a network (the embedding ``model``) and a
classifier over **all** ``num_classes`` training classes are trained with one softmax cross-entropy on
labelled minibatches. Baseline's classifier is linear, ``W^T f(x) + b``; Baseline++'s is a cosine classifier,
``s * cos(f(x), w_k)`` (no bias), with ``s = 2`` for at most 200 classes and ``s = 10`` above (the scale
factor of the authors' released code, ``backbone.distLinear``; the code also learns a norm per class by
weight normalisation, which this cosine classifier leaves out). *Test*: the pre-training classifier is
dropped and a new one of ``ways`` classes (of the same kind) is trained on the support set's features
(the network frozen); with ``finetune=True`` the whole network is trained with it ("fine-tuning").

The test-time fit follows the authors' protocol: "we use the entire support set to train a new classifier
for 100 iterations with a batch size of 4" (Chen et al. 2019, sec. 4.1), which their code
(``methods/baselinefinetune.py``) runs as 100 epochs over the support set shuffled into batches of 4, with
``torch.optim.SGD(lr=0.01, momentum=0.9, dampening=0.9, weight_decay=0.001)`` (:func:`chen_sgd`). Here a
*step* is such an epoch: ``steps`` passes over the support set in batches of ``batch_size``. The shuffles
come from a fixed ``seed`` (``adapt`` takes no key), so a task's result is deterministic.

Pre-training through jmeta's episodic trainer. ``jmeta.meta_trainer`` and ``jmeta.train`` differentiate
``task_loss`` over task batches, and ``jmeta.evaluate`` calls the same ``task_loss`` on N-way episodes. So
``task_loss`` tells the two kinds of task apart by their targets' shapes, statically:

* a task whose targets are one-hot rows ``(points, num_classes)`` (drawn by
  ``jmeta.tasks.class_batches.ClassBatchSampler``, e.g. through the ``"all-classes"`` task family of
  ``jmeta.pretraining``) is a labelled minibatch of training examples: its support and query points are
  joined into one minibatch, and the loss is the softmax cross-entropy of the pre-training classifier (the
  metrics: ``loss`` and the family's metrics of the class indices ``argmax`` of the targets);
* a task whose targets are integer labels ``(points,)`` is an episode: ``adapt`` fits a new head on its
  support set, and the loss and metrics are those of the query set (as for every jmeta learner).

So ``meta_trainer(learner, ...)`` fed class batches pre-trains, and validation and test on episodes
measure few-shot accuracy after fitting heads, with the number of head epochs as the inner steps
(``evaluate(..., steps=(100,))``; 0 leaves the initial head). Chen et al. pre-train with minibatches of 16
drawn by epochs over the training set (sec. 4.1: 400 epochs, Adam 1e-3); the sampler draws them with
replacement. One task of ``points`` examples per meta-batch is one of their minibatches; ``meta_batch``
tasks are a minibatch ``meta_batch`` times larger, except that BatchNorm normalises each task by its own
statistics.

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((16, 8)), jnp.zeros((1, 4)))
    >>> learner = jmeta.learners.baseline(model, jnp.zeros((1, 4)), num_classes=20, ways=5, cosine=True)
    >>> params, state = learner.init(jax.random.key(0))
    >>> params.classifier.kernel.shape, params.classifier.bias
    ((8, 20), None)
    >>> x, y = jnp.ones((10, 4)), jnp.arange(10) % 5
    >>> logits, _ = learner.predict(learner.adapt(params, state, x, y, steps=2), state, x)
    >>> logits.shape
    (10, 5)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.learners.base import Learner, LossFn, TaskOutput, steps_or_default
from jmeta.learners.common import check_bool, non_negative_float, query_pass
from jmeta.learners.protonet import embed
from jmeta.losses import check_labels
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.registry import register_learner
from jmeta.tasks.class_batches import ClassBatchSampler
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int


class Head(NamedTuple):
    """A classifier on features ``(points, features)``: ``kernel`` ``(features, classes)`` and ``bias``
    ``(classes,)`` for a linear head, ``bias=None`` for a cosine head (see :func:`head_logits`). A stack of
    heads has a leading head axis on both."""

    kernel: jax.Array
    bias: jax.Array | None


def normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """``x`` divided by its L2 norm along ``axis`` (``rsqrt(|x|^2 + 1e-12)``: finite values and gradients at 0).

    Example::

        >>> import jax.numpy as jnp
        >>> normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]]))
        Array([[0.6, 0.8],
               [0. , 0. ]], dtype=float32)
    """
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axis, keepdims=True) + 1e-12)


def cosine_scale(classes: int) -> float:
    """The scale of a cosine classifier of ``classes`` outputs in Chen et al.'s code: 2 up to 200 classes,
    10 above (their ``backbone.distLinear``; "in omniglot, a larger scale factor is required to handle >1000
    output classes").

    Example::

        >>> cosine_scale(5), cosine_scale(4800)
        (2.0, 10.0)
    """
    return 2.0 if positive_int("classes", classes) <= 200 else 10.0


def head_logits(head: Head, features: jax.Array) -> jax.Array:
    """Logits ``(points, classes)`` of ``features`` ``(points, dim)``: ``features @ kernel + bias`` for a linear
    head; for a cosine head (``bias is None``) ``cosine_scale(classes)`` times the cosine similarity of each
    feature vector to each column of ``kernel``.

    Example::

        >>> import jax.numpy as jnp
        >>> head_logits(Head(jnp.array([[1.0, 0.0], [0.0, 2.0]]), None), jnp.array([[5.0, 0.0]]))
        Array([[2., 0.]], dtype=float32)
    """
    if head.bias is None:
        return cosine_scale(head.kernel.shape[-1]) * normalize(features) @ normalize(head.kernel, axis=0)
    return features @ head.kernel + head.bias


def init_head(key: jax.Array | None, features: int, classes: int, cosine: bool) -> Head:
    """A fresh head: with ``key``, entries uniform in ``+-1/sqrt(features)`` (PyTorch's ``nn.Linear``, which
    Chen et al.'s code uses); with ``key=None``, zeros (a linear head only: a cosine head has no direction
    at zero). ``cosine`` gives ``bias=None``.

    Raises ValueError for ``key=None`` with ``cosine=True``.

    Example::

        >>> init_head(None, 3, 2, cosine=False).kernel.shape
        (3, 2)
    """
    if key is None:
        if cosine:
            raise ValueError("a cosine head cannot start at zero (it has no direction); give init_head a key.")
        return Head(jnp.zeros((features, classes)), jnp.zeros((classes,)))
    bound = 1.0 / features**0.5
    kernel_key, bias_key = jax.random.split(key)
    kernel = jax.random.uniform(kernel_key, (features, classes), minval=-bound, maxval=bound)
    return Head(kernel, None if cosine else jax.random.uniform(bias_key, (classes,), minval=-bound, maxval=bound))


def chen_sgd(
    learning_rate: float = 0.01, momentum: float = 0.9, dampening: float = 0.9, weight_decay: float = 1e-3
) -> optax.GradientTransformation:
    """Stochastic gradient descent as ``torch.optim.SGD(lr, momentum, dampening, weight_decay)`` steps: the
    gradient ``g`` plus ``weight_decay`` times the parameter (every parameter, biases too), a velocity ``v = g``
    at the first step and ``v = momentum * v + (1 - dampening) * g`` after, and the update ``-lr * v``.
    The defaults are Chen et al.'s test-time head optimiser (``methods/baselinefinetune.py`` of their code).

    Raises ValueError naming the argument for a learning rate that is not > 0, or a momentum, dampening or
    weight decay that is not a finite number >= 0.

    Example::

        >>> import jax.numpy as jnp
        >>> opt = chen_sgd(0.5, momentum=0.5, dampening=0.5, weight_decay=0.0)
        >>> state = opt.init(jnp.zeros(1))
        >>> u1, state = opt.update(jnp.ones(1), state)
        >>> u2, state = opt.update(jnp.ones(1), state)
        >>> float(u1[0]), float(u2[0])  # -0.5 * 1, then -0.5 * (0.5 * 1 + 0.5 * 1)
        (-0.5, -0.5)
    """
    learning_rate = positive_float("learning_rate", learning_rate)
    momentum, dampening = non_negative_float("momentum", momentum), non_negative_float("dampening", dampening)
    weight_decay = non_negative_float("weight_decay", weight_decay)

    def init(params: PyTree) -> tuple[jax.Array, PyTree]:
        return jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params)

    def update(grads: PyTree, state: tuple[jax.Array, PyTree], params: PyTree = None) -> tuple[PyTree, Any]:
        count, velocity = state
        if weight_decay:
            grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
        first = count == 0
        velocity = jax.tree.map(lambda v, g: jnp.where(first, g, momentum * v + (1 - dampening) * g), velocity, grads)
        return jax.tree.map(lambda v: -learning_rate * v, velocity), (count + 1, velocity)

    return optax.GradientTransformation(init, update)


def descend(
    loss: Callable[[PyTree, jax.Array, jax.Array], jax.Array],
    params: PyTree,
    x: jax.Array,
    targets: jax.Array,
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    batch_size: int | None = None,
    key: jax.Array | None = None,
) -> PyTree:
    """``steps`` epochs of ``optimizer`` on ``loss(params, x_batch, targets_batch)`` from ``params``: each epoch
    one step on the whole set (``batch_size=None``, or at least the number of points), else one step per
    batch of ``batch_size`` points of a fresh shuffle drawn from ``key`` (the last batch holds the
    remainder). A rolled ``jax.lax.scan`` over epochs, differentiable with respect to ``params``, ``x`` and
    ``targets``.

    Raises ValueError for a negative ``steps``, a ``batch_size`` below 1, or minibatches without a ``key``.

    Example::

        >>> import jax.numpy as jnp, optax
        >>> fit = descend(lambda w, x, y: jnp.mean((x * w - y) ** 2), jnp.zeros(()), jnp.ones(4), 2 * jnp.ones(4),
        ...               steps=50, optimizer=optax.sgd(0.1))
        >>> round(float(fit), 3)
        2.0
    """
    steps = positive_int("steps", steps, allow_zero=True)
    points = x.shape[0]
    if batch_size is not None and positive_int("batch_size", batch_size) < points and key is None:
        raise ValueError(f"minibatches (batch_size={batch_size} < {points} points) need a key to shuffle with.")
    full = batch_size is None or batch_size >= points
    batches = [(0, points)] if full else [(i, min(i + batch_size, points)) for i in range(0, points, batch_size)]

    def epoch(carry: tuple[PyTree, Any], index: jax.Array) -> tuple[tuple[PyTree, Any], None]:
        params, opt_state = carry
        order = None if full else jax.random.permutation(jax.random.fold_in(key, index), points)
        for start, stop in batches:
            xb, tb = (x, targets) if full else (x[order[start:stop]], targets[order[start:stop]])
            updates, opt_state = optimizer.update(jax.grad(loss)(params, xb, tb), opt_state, params)
            params = optax.apply_updates(params, updates)
        return (params, opt_state), None

    if steps == 0:
        return params
    (params, _), _ = jax.lax.scan(epoch, (params, optimizer.init(params)), jnp.arange(steps))
    return params


def fit_head(
    features: jax.Array,
    labels: jax.Array,
    init: Head,
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    l2: float = 0.0,
    batch_size: int | None = None,
    key: jax.Array | None = None,
) -> Head:
    """Trains the head ``init`` on ``features`` ``(points, dim)`` and integer ``labels`` ``(points,)`` in
    ``0..classes-1``: :func:`descend` on the mean softmax cross-entropy of :func:`head_logits` plus ``l2 / 2``
    times the squared norm of the kernel. With a zero linear ``init``, full batches and ``optax.sgd(lr)``
    this is gradient descent on L2-regularised multinomial logistic regression, whose minimiser is
    scikit-learn's ``LogisticRegression(C=1 / (l2 * points))``. Used by ``jmeta.systems.multitask`` and by
    :func:`baseline`.

    Raises ValueError as :func:`descend` does, and for ``l2`` < 0.

    Example::

        >>> import jax.numpy as jnp, optax
        >>> x, y = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([0, 1])
        >>> head = fit_head(x, y, init_head(None, 2, 2, cosine=False), steps=100, optimizer=optax.sgd(1.0))
        >>> jnp.argmax(head_logits(head, x), -1).tolist()
        [0, 1]
    """
    l2 = non_negative_float("l2", l2)

    def loss(head: Head, f: jax.Array, y: jax.Array) -> jax.Array:
        penalty = 0.5 * l2 * jnp.sum(head.kernel**2) if l2 else 0.0
        return losses.cross_entropy(head_logits(head, f), y) + penalty

    return descend(loss, init, features, labels, steps=steps, optimizer=optimizer, batch_size=batch_size, key=key)


class BaselineParams(NamedTuple):
    """The meta-parameters of :func:`baseline`: the embedding network's ``trunk`` parameters and the
    pre-training ``classifier`` (a :class:`Head` of ``num_classes`` outputs)."""

    trunk: PyTree
    classifier: Head


class FittedHead(NamedTuple):
    """The task parameters of :func:`baseline`: the network's parameters (the pre-trained ones, or
    fine-tuned with ``finetune=True``) and the head of ``ways`` classes fitted to the support set."""

    trunk: PyTree
    head: Head


def is_class_batch(task: Task) -> bool:
    """Whether ``task`` (one task, no task axis) is a labelled minibatch with one-hot targets ``(points,
    classes)`` (``jmeta.tasks.class_batches``) rather than an episode with integer labels ``(points,)``.

    Example::

        >>> import jax.numpy as jnp
        >>> is_class_batch(Task(jnp.ones((2, 3)), jnp.eye(2), jnp.ones((2, 3)), jnp.eye(2)))
        True
    """
    return jnp.ndim(task.support_y) == 2 and jnp.issubdtype(jnp.result_type(task.support_y), jnp.floating)


def baseline(
    model: Model,
    example_x: jax.Array,
    *,
    num_classes: int,
    ways: int,
    cosine: bool = False,
    finetune: bool = False,
    steps: int = 100,
    optimizer: optax.GradientTransformation | None = None,
    batch_size: int | None = 4,
    seed: int = 0,
    loss_fn: LossFn = losses.cross_entropy,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """Baseline (``cosine=False``), Baseline++ (``cosine=True``) or fine-tuning (``finetune=True``) over the
    embedding ``model`` (Chen et al. 2019; see the module docstring for the protocol and for how one
    ``task_loss`` serves pre-training and episodes).

    Args:
      model: a ``jmeta.Model`` mapping inputs to features (its output is flattened per point), no head.
      example_x: a batch of one input ``(1, *input_shape)``, to find the feature width.
      num_classes: the classes of the pre-training classifier (all training classes; e.g. 4800 for
        Omniglot's 1200 training characters in four rotations).
      ways: the classes of the heads fitted to episodes (static; labels ``0..ways-1``; an episode may have
        fewer classes).
      cosine: cosine classifiers (Baseline++) instead of linear ones, in pre-training and at test.
      finetune: at test, train the whole network with the new head instead of the head alone.
      steps: the default number of epochs over the support set at test (``adapt``'s ``steps`` overrides).
      optimizer: the test-time optimiser; default :func:`chen_sgd` (Chen et al.'s).
      batch_size: minibatch size at test (4, Chen et al.'s); ``None``: full batches.
      seed: the key of the shuffles at test and of the initial cosine head (a linear head starts at zero).
      loss_fn: the loss of episodes' query sets, ``loss_fn(logits, labels) -> scalar``.
      metrics: extra ``name -> fn(logits, labels)`` on query sets (and on class batches, of their class indices).
      compute_dtype: ``"float32"`` or ``"bfloat16"`` for the model's passes.

    Returns:
      A ``jmeta.Learner``: meta-parameters :class:`BaselineParams`; ``adapt`` returns :class:`FittedHead`;
      ``predict`` returns logits ``(points, ways)`` float32.

    Raises ValueError or TypeError naming the argument for a bad argument; ``task_loss`` raises ValueError
    for one-hot targets whose width is not ``num_classes``, and ``adapt`` for labels that are not integers
    of shape ``(points,)`` in ``0..ways-1`` (concrete ones).

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((32, 16)), jnp.zeros((1, 4)))
        >>> learner = jmeta.learners.baseline(model, jnp.zeros((1, 4)), num_classes=64, ways=5, finetune=True)
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    num_classes, ways = positive_int("num_classes", num_classes), positive_int("ways", ways)
    cosine, finetune = check_bool("cosine", cosine), check_bool("finetune", finetune)
    default_steps = positive_int("steps", steps, allow_zero=True)
    optimizer = chen_sgd() if optimizer is None else optimizer
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}.")
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
    key = jax.random.key(positive_int("seed", seed, allow_zero=True))
    metrics = dict(metrics or {})
    example_x = jnp.asarray(example_x)

    def init(init_key: jax.Array) -> tuple[BaselineParams, PyTree]:
        model_key, head_key = jax.random.split(init_key)
        trunk, state = model.init(model_key)
        dim = jax.eval_shape(lambda p, s: embed(model, p, s, example_x)[0], trunk, state).shape[-1]
        return BaselineParams(trunk, init_head(head_key, dim, num_classes, cosine)), state

    def fresh_head(features: jax.Array) -> Head:
        return init_head(jax.random.fold_in(key, 1) if cosine else None, features.shape[-1], ways, cosine)

    def adapt(
        params: BaselineParams, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None
    ) -> FittedHead:
        epochs = steps_or_default(steps, default_steps)
        if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(
                f"baseline's support labels must be integers in [0, ways) of shape (points,); got dtype {y.dtype} "
                f"and shape {y.shape}. (One-hot targets over all classes are for pre-training: task_loss.)"
            )
        check_labels((1, ways), y, "baseline's support labels y")
        features = embed(model, params.trunk, state, x)[0]
        shuffle = jax.random.fold_in(key, 0)
        if not finetune:
            head = fit_head(
                features, y, fresh_head(features), steps=epochs, optimizer=optimizer, batch_size=batch_size, key=shuffle
            )
            return FittedHead(params.trunk, head)

        def loss(network: FittedHead, xb: jax.Array, yb: jax.Array) -> jax.Array:
            return losses.cross_entropy(head_logits(network.head, embed(model, network.trunk, state, xb)[0]), yb)

        start = FittedHead(params.trunk, fresh_head(features))
        return descend(loss, start, x, y, steps=epochs, optimizer=optimizer, batch_size=batch_size, key=shuffle)

    def predict(fitted: FittedHead, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        features, new_state = embed(model, fitted.trunk, state, x)
        return head_logits(fitted.head, features), new_state

    def pretraining_loss(params: BaselineParams, state: PyTree, task: Task) -> tuple[jax.Array, TaskOutput]:
        if task.support_y.shape[-1] != num_classes or task.query_y.shape[-1] != num_classes:
            raise ValueError(
                f"baseline's one-hot targets must have num_classes={num_classes} columns; got support_y "
                f"{task.support_y.shape} and query_y {task.query_y.shape}."
            )
        x = jnp.concatenate([task.support_x, task.query_x])
        targets = jnp.concatenate([task.support_y, task.query_y])
        features, new_state = embed(model, params.trunk, state, x)
        logits = head_logits(params.classifier, features)
        loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        labels = jnp.argmax(targets, axis=-1)
        return loss, TaskOutput({"loss": loss, **{n: fn(logits, labels) for n, fn in metrics.items()}}, new_state)

    def task_loss(
        params: BaselineParams, state: PyTree, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        if is_class_batch(task):
            return pretraining_loss(params, state, task)
        fitted = adapt(params, state, task.support_x, task.support_y, steps)
        return query_pass(predict, loss_fn, metrics, fitted, state, task)

    return Learner(init=init, adapt=adapt, predict=predict, task_loss=task_loss, adapts_network=finetune)


def _builder(cosine: bool, finetune: bool) -> Callable[[Any, Model, Any], tuple[Learner, optax.GradientTransformation]]:
    """The registry builder of one of the three methods: ``num_classes`` from the config (checked against
    the family's class-batch sampler when it has one), heads of ``eval_ways`` classes fitted for
    ``inner_steps`` epochs by default, Adam ``meta_lr`` for pre-training (Chen et al. 2019, sec. 4.1)."""

    def build(config: Any, model: Model, family: Any) -> tuple[Learner, optax.GradientTransformation]:
        sampler = family.sample_train
        if sampler is not None and not isinstance(sampler, ClassBatchSampler):
            raise ValueError(
                f"learner {config.learner!r} pre-trains on minibatches over all training classes: set "
                f"task='all-classes' and dataset={config.task!r} (jmeta.pretraining); got task "
                f"{config.task!r}, whose training tasks come from a {type(sampler).__name__}."
            )
        if sampler is not None and sampler.num_classes != config.num_classes:
            raise ValueError(
                f"num_classes must be the number of training classes ({sampler.num_classes} in this data and split); "
                f"got {config.num_classes}."
            )
        learner = baseline(
            model,
            family.example_input,
            num_classes=config.num_classes,
            ways=config.eval_ways,
            cosine=cosine,
            finetune=finetune,
            steps=config.inner_steps,
            metrics=family.metrics,
            compute_dtype=config.get("compute_dtype", "float32"),
        )
        return learner, optax.adam(config.meta_lr)

    return build


for _name, _cosine, _finetune in (("baseline", False, False), ("baseline++", True, False), ("finetune", False, True)):
    register_learner(
        _name, _builder(_cosine, _finetune), keys=("num_classes", "inner_steps"), embedding=True, any_ways=True
    )
