"""MetaOptNet (Lee, Maji, Ravichandran & Soatto, "Meta-Learning with Differentiable Convex Optimization",
CVPR 2019): a linear classifier fitted in closed form, or by a convex solver, on the support set's
embeddings, and differentiated through to learn the embedding.

Two heads, both over an embedding ``model`` (its output, flattened, is the embedding; no classifier head):

* ``metaoptnet_r2d2``: ridge regression onto one-hot labels, R2D2 (Bertinetto, Henriques, Torr & Vedaldi,
  "Meta-learning with differentiable closed-form solvers", ICLR 2019). With support embeddings ``X``
  ``(points, dim)`` and one-hot labels ``Y`` ``(points, ways)``, the weights are (Woodbury's identity: one
  ``points x points`` solve, however large ``dim``)::

      W = X^T (X X^T + lam I)^-1 Y    # = (X^T X + lam I)^-1 X^T Y

* ``metaoptnet_svm``: the multi-class SVM of Crammer & Singer (2001), fitted by its dual QP as in
  MetaOptNet::

      max_alpha  -1/2 sum_k ||w_k||^2 + sum_n alpha_n[y_n],   w_k = sum_n alpha_n[k] x_n,
      s.t.       alpha_n[y_n] <= C,  alpha_n[k] <= 0 (k != y_n),  sum_k alpha_n[k] = 0.

  With ``alpha_n = C (e_{y_n} - p_n)`` the constraints say that each ``p_n`` lies on the probability
  simplex, so the dual is a QP over a product of simplices. jmeta solves it on the device by accelerated
  projected gradient (FISTA with adaptive restart; the projection is ``optax.projections.projection_simplex``),
  and differentiates the solution implicitly (``jax.lax.custom_root``): the solution is the fixed point of
  one projected-gradient step, and the implicit function theorem at that fixed point gives its derivative
  in the embeddings with one dense linear solve of size ``points * ways`` (its matrix holds
  ``(points * ways)^2`` numbers: 160,000 for 20-way 1-shot, 4 million for 20-way 5-shot), never unrolling
  the solver.

Both heads give the logits ``scale * (f(x) @ W) + bias`` with a meta-learned scalar ``scale`` and ``bias``
(R2D2's scale and bias; MetaOptNet learns a scale). A common ``bias`` does not change softmax probabilities, so
under cross-entropy its gradient is zero; it matters for losses that are not shift-invariant.

Representation: the meta-parameters are ``MetaOptNetParams(params, scale, bias)``; ``adapt`` returns
``LinearHead(params, weights, scale, bias, present)`` with ``(dim, ways)`` weights and a ``(ways,)`` bool
mask of the classes that have support points; ``predict(LinearHead, state, x)`` returns ``(points, ways)``
logits. As ``jmeta.learners.protonet``, ``ways`` is the largest number of classes of a task: a task with
fewer classes is fitted on its own classes only, and the others get the logit ``-inf``; so the learners
train with one number of ways and test with any other up to ``ways``. Support and query embeddings come
from separate passes (BatchNorm with batch statistics normalises each set by its own). The heads are
computed in float32 (float64 when the embeddings are float64), whatever the model's ``compute_dtype``.

Example::

    >>> import jax, jax.numpy as jnp
    >>> import jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((32, 16)), jnp.zeros((1, 4)))
    >>> learner = jmeta.learners.metaoptnet_svm(model, ways=5)
    >>> params, state = learner.init(jax.random.key(0))
    >>> x, y = jax.random.normal(jax.random.key(1), (10, 4)), jnp.arange(10) % 5
    >>> logits, _ = learner.predict(learner.adapt(params, state, x, y), state, jnp.ones((3, 4)))
    >>> logits.shape
    (3, 5)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jmeta import losses
from jmeta.learners.base import Learner, LossFn, TaskOutput
from jmeta.learners.common import query_pass
from jmeta.learners.protonet import check_support_labels, embed
from jmeta.nn import Model, PyTree, check_model, with_compute_dtype
from jmeta.tasks.task import Task
from jmeta.validation import positive_float, positive_int

# weights(support embeddings (points, dim), one-hot labels (points, ways), present (ways,)) -> (dim, ways)
HeadSolver = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class MetaOptNetParams(NamedTuple):
    """MetaOptNet's meta-parameters: the embedding ``params`` and the logits' scalar ``scale`` and ``bias``
    (float32 arrays of shape ``()``)."""

    params: PyTree
    scale: jax.Array
    bias: jax.Array


class LinearHead(NamedTuple):
    """A task's classifier: embedding ``params``, ``(dim, ways)`` ``weights``, scalar ``scale`` and ``bias``,
    ``(ways,)`` bool ``present`` (the classes with support points)."""

    params: PyTree
    weights: jax.Array
    scale: jax.Array
    bias: jax.Array
    present: jax.Array


def head_dtype(embeddings: jax.Array) -> jnp.dtype:
    """The dtype the heads compute in: float64 for float64 embeddings, else float32."""
    return jnp.promote_types(embeddings.dtype, jnp.float32)


def ridge_weights(embeddings: jax.Array, one_hot: jax.Array, lam: float | jax.Array) -> jax.Array:
    """R2D2's ridge-regression weights ``X^T (X X^T + lam I)^-1 Y`` (Bertinetto et al. 2019, in
    Woodbury's form): the minimiser of ``||X W - Y||^2 + lam ||W||^2``.

    Args:
      embeddings: ``X``, ``(points, dim)`` float.
      one_hot: ``Y``, ``(points, ways)`` float targets (one-hot labels; an absent class's column is zero, and
        so is its weight column).
      lam: the ridge penalty, > 0.

    Returns:
      ``(dim, ways)`` weights in float32 (float64 for float64 embeddings).

    Example::

        >>> import jax.numpy as jnp
        >>> ridge_weights(jnp.array([[1.0, 0.0], [0.0, 3.0]]), jnp.eye(2), 3.0).round(4)  # 1 / (1 + 3), 3 / (9 + 3)
        Array([[0.25, 0.  ],
               [0.  , 0.25]], dtype=float32)
    """
    x = embeddings.astype(head_dtype(embeddings))
    gram = x @ x.T + lam * jnp.eye(x.shape[0], dtype=x.dtype)
    return x.T @ jax.scipy.linalg.solve(gram, one_hot.astype(x.dtype), assume_a="pos")


def project_rows(v: jax.Array, present: jax.Array) -> jax.Array:
    """Each row of ``v`` ``(points, ways)`` projected onto the probability simplex of the ``present`` classes
    (``(ways,)`` bool): absent entries are 0.

    A row's projection ``max(v - tau, 0)`` has ``tau >= max(v) - 1``, so an absent entry set below
    ``max(v) - 1`` projects to 0 and leaves the present ones as the projection over them alone.

    Example::

        >>> import jax.numpy as jnp
        >>> project_rows(jnp.array([[0.5, 0.5, 3.0]]), jnp.array([True, True, False]))
        Array([[0.5, 0.5, 0. ]], dtype=float32)
    """
    top = jax.lax.stop_gradient(jnp.max(jnp.where(present, v, -jnp.inf), axis=-1, keepdims=True))
    return jax.vmap(optax.projections.projection_simplex)(jnp.where(present, v, top - 2))


def crammer_singer_dual(
    embeddings: jax.Array,
    one_hot: jax.Array,
    present: jax.Array,
    c: float,
    iterations: int = 500,
    tol: float = 1e-5,
) -> jax.Array:
    """The dual variables ``alpha`` of the Crammer-Singer multi-class SVM on the support set (MetaOptNet's
    SVM head; Crammer & Singer 2001), differentiable in ``embeddings`` by implicit differentiation.

    Solved as ``alpha = c (one_hot - p)`` with each row of ``p`` on the simplex of the present classes, by
    FISTA with adaptive restart (step ``1 / (c^2 lambda_max(X X^T))``) until the largest change of ``p`` in
    a step is at most ``tol`` or after ``iterations`` steps. The derivative is the implicit function
    theorem's at the projected-gradient fixed point (``jax.lax.custom_root``), with a dense
    ``(points * ways)``-square solve (:func:`implicit_solve`): exact at an exact solution, as
    good as the solution otherwise.

    Args:
      embeddings: ``X``, ``(points, dim)`` float support embeddings.
      one_hot: ``(points, ways)`` one-hot labels.
      present: ``(ways,)`` bool, the classes with support points (the others are left out of the problem).
      c: the SVM's ``C`` (> 0), the price of a unit of margin violation.
      iterations: the most solver steps (static).
      tol: the stopping tolerance on ``p`` (entries in ``[0, 1]``).

    Returns:
      ``alpha``, ``(points, ways)`` in float32 (float64 for float64 embeddings); the weights are
      ``X^T alpha`` and each row sums to 0.

    Raises:
      ValueError: ``c`` or ``tol`` is not a finite number > 0, ``iterations`` not a positive integer, or
        the shapes do not fit together.

    Example::

        >>> import jax.numpy as jnp
        >>> alpha = crammer_singer_dual(jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.eye(2), jnp.array([True, True]), 0.1)
        >>> alpha.round(3)
        Array([[ 0.1, -0.1],
               [-0.1,  0.1]], dtype=float32)
    """
    c, tol, iterations = positive_float("c", c), positive_float("tol", tol), positive_int("iterations", iterations)
    matrices = embeddings.ndim == 2 and one_hot.ndim == 2 and one_hot.shape[0] == embeddings.shape[0]
    if not (matrices and present.shape == one_hot.shape[1:]):
        raise ValueError(
            f"crammer_singer_dual needs embeddings (points, dim), one_hot (points, ways) and present (ways,); got "
            f"shapes {embeddings.shape}, {one_hot.shape} and {present.shape}."
        )
    dtype = head_dtype(embeddings)
    x, one_hot = embeddings.astype(dtype), one_hot.astype(dtype)
    gram = x @ x.T
    lipschitz = c**2 * jnp.linalg.eigvalsh(jax.lax.stop_gradient(gram))[-1]
    step = 1 / jnp.maximum(lipschitz, jnp.finfo(dtype).tiny)

    def residual(p: jax.Array) -> jax.Array:  # p minus one projected-gradient step: 0 exactly at the solution
        gradient = c * one_hot - c**2 * gram @ (one_hot - p)  # of the dual objective (to minimise) in p
        return p - project_rows(p - step * gradient, present)

    def fista(residual: Callable[[jax.Array], jax.Array], p0: jax.Array) -> jax.Array:
        def more(carry: tuple) -> jax.Array:
            i, _, _, _, change = carry
            return (i < iterations) & (change > tol)

        def advance(carry: tuple) -> tuple:
            i, p, z, t, _ = carry
            p_next = z - residual(z)
            t_next = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
            restart = jnp.vdot(z - p_next, p_next - p) > 0  # momentum points uphill (O'Donoghue & Candes 2015)
            z_next = jnp.where(restart, p_next, p_next + (t - 1) / t_next * (p_next - p))
            t_next = jnp.where(restart, jnp.ones_like(t), t_next)
            return i + 1, p_next, z_next, t_next, jnp.max(jnp.abs(p_next - z))

        start = (0, p0, p0, jnp.ones((), dtype), jnp.array(jnp.inf, dtype))
        return jax.lax.while_loop(more, advance, start)[1]

    p = jax.lax.custom_root(residual, one_hot, fista, implicit_solve)
    return c * (one_hot - p)


def implicit_solve(linear: Callable[[jax.Array], jax.Array], rhs: jax.Array) -> jax.Array:
    """The ``x`` with ``(M + eps I) x == rhs`` for ``M`` the matrix of ``linear`` (``rhs.size`` square,
    formed column by column), ``eps = 1000`` machine epsilons of ``rhs``'s dtype, solved by LU: the
    ``tangent_solve`` of :func:`crammer_singer_dual`'s ``jax.lax.custom_root``.

    There ``M`` is the Jacobian of ``p - project(p - step * gradient(p))`` at the solution,
    ``I - P (I - step H)`` with ``P`` the projection's Jacobian (an orthogonal projector) and ``step H``'s
    eigenvalues in ``[0, 1]``; so ``M``'s eigenvalues lie in ``[0, 1]``, and 0 among them is semisimple.
    ``M`` is singular when the dual solution is not unique (e.g. more support points than embedding
    dimensions: a singular Gram matrix); every solution then gives the same weights ``X^T alpha``, and the
    shift ``eps`` picks one, with a relative error of ``eps / mu`` in the part along an eigenvalue ``mu``.
    (LU, not an SVD least-squares solve: LAPACK's SVD fails to converge, giving NaN, on some such
    float32 matrices.)

    Example::

        >>> import jax.numpy as jnp
        >>> implicit_solve(lambda x: 0.5 * x, jnp.array([[1.0, 4.0]])).round(2)
        Array([[2., 8.]], dtype=float32)
    """
    flat = rhs.reshape(-1)
    matrix = jax.jacfwd(lambda v: linear(v.reshape(rhs.shape)).reshape(-1))(flat)
    shift = 1000 * jnp.finfo(rhs.dtype).eps
    return jnp.linalg.solve(matrix + shift * jnp.eye(flat.size, dtype=rhs.dtype), flat).reshape(rhs.shape)


def linear_head_learner(
    model: Model,
    ways: int,
    loss_fn: LossFn,
    weights: HeadSolver,
    *,
    scale: float,
    bias: float,
    metrics: Mapping[str, LossFn] | None,
    compute_dtype: str,
    name: str,
) -> Learner:
    """The learner shared by MetaOptNet's heads: ``weights(X, Y, present)`` fits a task's ``(dim, ways)``
    weights on its support embeddings; the logits are ``scale * f(x) @ W + bias``, ``-inf`` for absent
    classes. ``name`` names the learner in errors. See :func:`metaoptnet_r2d2` for the other arguments.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.MLP((8,)), jnp.zeros((1, 4)))
        >>> learner = linear_head_learner(
        ...     model, 3, jmeta.losses.cross_entropy, lambda x, y, present: x.T @ y, scale=1.0, bias=0.0,
        ...     metrics=None, compute_dtype="float32", name="prototype sums")
    """
    model = with_compute_dtype(check_model(model), compute_dtype)
    ways = positive_int("ways", ways)
    initial = MetaOptNetParams(None, finite_float("scale", scale), finite_float("bias", bias))
    metrics = dict(metrics or {})

    def init(key: jax.Array) -> tuple[MetaOptNetParams, PyTree]:
        params, state = model.init(key)
        return initial._replace(params=params), state

    def adapt(
        meta_params: MetaOptNetParams, state: PyTree, x: jax.Array, y: jax.Array, steps: int | None = None
    ) -> LinearHead:
        check_support_labels(y, ways, steps, name)
        embeddings, _ = embed(model, meta_params.params, state, x)
        one_hot = jax.nn.one_hot(y, ways, dtype=head_dtype(embeddings))
        present = one_hot.sum(axis=0) > 0
        fitted = weights(embeddings, one_hot, present)
        return LinearHead(meta_params.params, fitted, meta_params.scale, meta_params.bias, present)

    def predict(head: LinearHead, state: PyTree, x: jax.Array) -> tuple[jax.Array, PyTree]:
        embeddings, new_state = embed(model, head.params, state, x)
        logits = head.scale * (embeddings.astype(head.weights.dtype) @ head.weights) + head.bias
        return jnp.where(head.present, logits, -jnp.inf), new_state

    def task_loss(
        meta_params: MetaOptNetParams, state: PyTree, task: Task, steps: int | None = None
    ) -> tuple[jax.Array, TaskOutput]:
        head = adapt(meta_params, state, task.support_x, task.support_y, steps)
        return query_pass(predict, loss_fn, metrics, head, state, task)

    return Learner(init=init, adapt=adapt, predict=predict, task_loss=task_loss)


def finite_float(name: str, value: float) -> jax.Array:
    """``value`` as a float32 scalar array, or a ValueError naming ``name`` if it is not a finite real number.

    Example::

        >>> finite_float("scale", float("nan"))
        Traceback (most recent call last):
        ValueError: scale must be a finite number; got nan.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")
    return jnp.asarray(value, jnp.float32)


def metaoptnet_r2d2(
    model: Model,
    ways: int,
    loss_fn: LossFn = losses.cross_entropy,
    *,
    lam: float = 50.0,
    scale: float = 1.0,
    bias: float = 0.0,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """MetaOptNet with R2D2's ridge-regression head (Bertinetto et al. 2019; module docstring).

    Args:
      model: a ``jmeta.Model`` mapping inputs to embeddings (its output is flattened per point).
      ways: the largest number of classes of a task (static); tasks with fewer are fine.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` on the query set; softmax cross-entropy by default.
      lam: the ridge penalty (> 0).
      scale: initial value of the meta-learned logit scale.
      bias: initial value of the meta-learned logit bias.
      metrics: extra ``name -> fn(logits, labels)`` reported on the query set (e.g. accuracy).
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's passes
        (``jmeta.nn.with_compute_dtype``); the head is solved in float32.

    Returns:
      A ``jmeta.Learner``: meta-parameters ``MetaOptNetParams``; ``adapt`` returns a ``LinearHead``;
      ``steps`` is accepted (a common interface) and ignored.

    Raises:
      ValueError: ``ways`` is not a positive integer, ``lam`` is not a finite number > 0, ``scale`` or
        ``bias`` is not finite, ``compute_dtype`` is unknown; ``adapt`` on labels that are not integers in
        ``[0, ways)`` of shape ``(points,)``.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.Conv4(num_classes=None), jnp.zeros((1, 28, 28, 1)))
        >>> learner = jmeta.learners.metaoptnet_r2d2(model, ways=20, metrics={"accuracy": jmeta.losses.accuracy})
    """
    lam = positive_float("lam", lam)
    return linear_head_learner(
        model,
        ways,
        loss_fn,
        lambda x, one_hot, present: ridge_weights(x, one_hot, lam),
        scale=scale,
        bias=bias,
        metrics=metrics,
        compute_dtype=compute_dtype,
        name="metaoptnet_r2d2",
    )


def metaoptnet_svm(
    model: Model,
    ways: int,
    loss_fn: LossFn = losses.cross_entropy,
    *,
    c: float = 0.1,
    iterations: int = 500,
    tol: float = 1e-5,
    scale: float = 1.0,
    bias: float = 0.0,
    metrics: Mapping[str, LossFn] | None = None,
    compute_dtype: str = "float32",
) -> Learner:
    """MetaOptNet with the Crammer-Singer multi-class SVM head (Lee et al. 2019; module docstring).

    Args:
      model: a ``jmeta.Model`` mapping inputs to embeddings (its output is flattened per point).
      ways: the largest number of classes of a task (static); tasks with fewer are fine.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` on the query set; softmax cross-entropy by default.
      c: the SVM's ``C`` (> 0).
      iterations: the most steps of the dual solver (:func:`crammer_singer_dual`).
      tol: the solver's stopping tolerance (> 0) on the simplex variables.
      scale: initial value of the meta-learned logit scale.
      bias: initial value of the meta-learned logit bias.
      metrics: extra ``name -> fn(logits, labels)`` reported on the query set (e.g. accuracy).
      compute_dtype: ``"float32"`` or ``"bfloat16"``, the dtype of the model's passes
        (``jmeta.nn.with_compute_dtype``); the SVM is solved in float32.

    Returns:
      A ``jmeta.Learner``: meta-parameters ``MetaOptNetParams``; ``adapt`` returns a ``LinearHead`` with
      weights ``X^T alpha``; ``steps`` is accepted (a common interface) and ignored.

    Raises:
      ValueError: ``ways`` or ``iterations`` is not a positive integer, ``c`` or ``tol`` is not a finite
        number > 0, ``scale`` or ``bias`` is not finite, ``compute_dtype`` is unknown; ``adapt`` on labels
        that are not integers in ``[0, ways)`` of shape ``(points,)``.

    Example::

        >>> import jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.Conv4(num_classes=None), jnp.zeros((1, 28, 28, 1)))
        >>> learner = jmeta.learners.metaoptnet_svm(model, ways=20, c=0.1)
    """
    c, tol = positive_float("c", c), positive_float("tol", tol)
    iterations = positive_int("iterations", iterations)
    return linear_head_learner(
        model,
        ways,
        loss_fn,
        lambda x, one_hot, present: x.astype(head_dtype(x)).T @ crammer_singer_dual(
            x, one_hot, present, c, iterations, tol
        ),
        scale=scale,
        bias=bias,
        metrics=metrics,
        compute_dtype=compute_dtype,
        name="metaoptnet_svm",
    )
