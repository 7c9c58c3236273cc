"""Gaussian mixture models fitted by expectation-maximisation, as pure JAX functions.

EM (Dempster, Laird & Rubin 1977; for mixtures see Bishop 2006, "Pattern Recognition and Machine Learning",
sec. 9.2.2) alternates two steps on data ``x`` of shape ``(n, d)`` and ``k`` components:

* E-step: responsibilities ``r[i, j] = w[j] N(x[i] | mu[j], S[j]) / sum_l w[l] N(x[i] | mu[l], S[l])``,
  computed in log space with ``logsumexp`` so that far-away points do not underflow;
* M-step: with ``n[j] = sum_i r[i, j]``, weights ``w[j] = n[j] / n``, means ``mu[j] = sum_i r[i, j] x[i] /
  n[j]`` and covariances ``S[j] = sum_i r[i, j] (x[i] - mu[j])(x[i] - mu[j])^T / n[j] + reg_covar * I``
  (only the diagonal for ``"diag"``).

Each EM iteration cannot decrease the log-likelihood (up to the small ``reg_covar`` added to keep the
covariances positive definite, as scikit-learn's ``GaussianMixture`` does). Full covariances are used through
their Cholesky factors. Every function is jit-able and ``vmap``-able, e.g. over a batch of datasets, with
``k``, ``covariance`` and the loop settings as static Python values; the arguments are checked in Python,
from shapes only, before anything is traced.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from jmeta.data import load
from jmeta.evaluation import estimate
from jmeta.systems.common import report
from jmeta.validation import one_of, positive_float, positive_int

COVARIANCES = ("full", "diag")
INITS = ("kmeans++", "random")


class GMMParams(NamedTuple):
    """A mixture of ``k`` Gaussians in ``d`` dimensions.

    ``weights`` ``(k,)`` sum to one; ``means`` ``(k, d)``; ``covariances`` ``(k, d, d)`` for full covariance
    matrices or ``(k, d)`` for diagonal ones (the variances).

    Example::

        >>> import jax.numpy as jnp
        >>> params = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0], [3.0]]), jnp.ones((2, 1)))
        >>> covariance_type(params)
        'diag'
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    ``params``: the mixture after the last M-step. ``log_likelihood``: ``(steps,)``, the mean log-likelihood
    per point computed by each iteration's E-step (so of the parameters *before* that iteration's M-step),
    NaN after convergence. ``iterations``: how many EM iterations ran. ``converged``: whether the mean
    log-likelihood changed by less than ``tol`` before ``steps`` ran out.
    """

    params: GMMParams
    log_likelihood: jax.Array
    iterations: jax.Array
    converged: jax.Array


def covariance_type(params: GMMParams) -> str:
    """``"full"`` or ``"diag"``, read off the shapes of ``params``, which are checked to agree.

    Example::

        >>> import jax.numpy as jnp
        >>> covariance_type(GMMParams(jnp.ones(3) / 3, jnp.zeros((3, 2)), jnp.tile(jnp.eye(2), (3, 1, 1))))
        'full'
    """
    weights, means, covariances = (jnp.shape(a) for a in params)
    if len(weights) != 1 or len(means) != 2 or means[0] != weights[0]:
        raise ValueError(
            f"params must hold weights (k,) and means (k, d) of one mixture (vmap over a batch of mixtures); "
            f"got weights {weights} and means {means}."
        )
    if covariances == (*means, means[1]):
        return "full"
    if covariances == means:
        return "diag"
    raise ValueError(
        f"params.covariances must have shape (k, d, d) = {(*means, means[1])} for full covariances or "
        f"(k, d) = {means} for diagonal ones; got {covariances}."
    )


def gmm_init(
    key: jax.Array | None,
    x: jax.Array,
    k: int,
    covariance: str = "full",
    *,
    init: str = "kmeans++",
    reg_covar: float = 1e-6,
    weights: jax.Array | None = None,
    means: jax.Array | None = None,
    covariances: jax.Array | None = None,
) -> GMMParams:
    """Initial parameters of a ``k``-component mixture for data ``x`` ``(n, d)``.

    Starting responsibilities come from ``init``: ``"kmeans++"`` assigns every point to the nearest of ``k``
    seeds drawn by k-means++ seeding (Arthur & Vassilvitskii 2007); ``"random"`` draws them uniformly and
    normalises each row. When ``means`` is given, points are assigned to the nearest given mean instead.
    One M-step turns the responsibilities into parameters; any of ``weights`` ``(k,)``, ``means`` ``(k, d)``
    and ``covariances`` (``(k, d, d)`` or ``(k, d)``) that is given replaces the computed one, so giving all
    three fixes the initialisation exactly. ``key`` is only used, and only needed, when ``means`` is not
    given.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (100, 2))
        >>> params = gmm_init(jax.random.key(1), x, k=3, covariance="diag")
        >>> params.means.shape, params.covariances.shape
        ((3, 2), (3, 2))
    """
    x = _check_data(x)
    k = positive_int("k", k)
    if k > x.shape[0]:
        raise ValueError(f"k must be at most the number of points in x ({x.shape[0]}); got k={k}.")
    covariance = one_of("covariance", covariance, COVARIANCES)
    init = one_of("init", init, INITS)
    reg_covar = positive_float("reg_covar", reg_covar)
    n, d = x.shape
    shape = (k, d, d) if covariance == "full" else (k, d)
    expected = {"weights": (k,), "means": (k, d), "covariances": shape}
    given = {"weights": weights, "means": means, "covariances": covariances}
    for name, value in given.items():
        if value is not None and jnp.shape(value) != expected[name]:
            raise ValueError(
                f"{name} must have shape {expected[name]} for k={k}, d={d} and covariance={covariance!r}; "
                f"got {jnp.shape(value)}."
            )
    if means is None and key is None:
        raise ValueError(f"key must be a JAX random key when means is not given (init={init!r}); got None.")
    if means is not None:
        resp = _nearest(x, jnp.asarray(means, x.dtype), k)
    elif init == "kmeans++":
        resp = _nearest(x, _kmeans_plus_plus(key, x, k), k)
    else:
        resp = jax.random.uniform(key, (n, k), x.dtype)
        resp = resp / resp.sum(axis=1, keepdims=True)
    computed = _m_step(x, resp, reg_covar, covariance, _moments(x, covariance))
    return GMMParams(
        *(
            old if new is None else jnp.asarray(new, x.dtype)
            for old, new in zip(computed, given.values(), strict=True)
        )
    )


def e_step(params: GMMParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log responsibilities ``(n, k)`` of the components for the points ``x`` ``(n, d)``, and the mean
    log-likelihood per point (scikit-learn's ``score``).

    Example::

        >>> import jax.numpy as jnp
        >>> params = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0], [3.0]]), jnp.ones((2, 1)))
        >>> log_resp, mean_log_likelihood = e_step(params, jnp.array([[0.0], [3.0]]))
        >>> (jnp.exp(log_resp) > 0.98).tolist()
        [[True, False], [False, True]]
    """
    x = _check_data(x)
    _check_params(params, x)
    return _e_step(params, x, _moments(x, covariance_type(params)))


def m_step(x: jax.Array, log_resp: jax.Array, reg_covar: float = 1e-6, covariance: str = "full") -> GMMParams:
    """The mixture that maximises the expected complete-data log-likelihood under the responsibilities
    ``exp(log_resp)`` ``(n, k)`` of the points ``x`` ``(n, d)``, with ``reg_covar`` added to the variances.

    Example::

        >>> import jax.numpy as jnp
        >>> x = jnp.array([[0.0], [1.0], [10.0]])
        >>> log_resp = jnp.log(jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        >>> m_step(x, log_resp, covariance="diag").means.tolist()
        [[0.5], [10.0]]
    """
    x = _check_data(x)
    reg_covar = positive_float("reg_covar", reg_covar)
    covariance = one_of("covariance", covariance, COVARIANCES)
    if jnp.ndim(log_resp) != 2 or jnp.shape(log_resp)[0] != x.shape[0]:
        raise ValueError(
            f"log_resp must have shape (n, k) with n = {x.shape[0]}, the points in x; "
            f"got {jnp.shape(log_resp)}."
        )
    return _m_step(x, jnp.exp(log_resp), reg_covar, covariance, _moments(x, covariance))


def fit(
    params: GMMParams, x: jax.Array, steps: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6
) -> FitResult:
    """Runs EM from ``params`` on ``x`` ``(n, d)`` for at most ``steps`` iterations, stopping as soon as the
    mean log-likelihood changes by less than ``tol`` (``tol=0`` always runs all ``steps``), like
    scikit-learn's ``GaussianMixture`` with ``max_iter=steps``.

    Example::

        >>> import jax, jax.numpy as jnp
        >>> x = jnp.concatenate([jax.random.normal(jax.random.key(0), (50, 2)) + s for s in (-4.0, 4.0)])
        >>> result = fit(gmm_init(jax.random.key(1), x, k=2), x, steps=50)
        >>> bool(result.converged), sorted(result.params.means[:, 0].round().tolist())
        (True, [-4.0, 4.0])
    """
    x = _check_data(x)
    covariance = _check_params(params, x)
    steps = positive_int("steps", steps)
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < math.inf:
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}.")
    reg_covar = positive_float("reg_covar", reg_covar)
    params = GMMParams(*(jnp.asarray(a, x.dtype) for a in params))
    return _fit(params, x, tol, reg_covar, steps=steps, covariance=covariance)


def responsibilities(params: GMMParams, x: jax.Array) -> jax.Array:
    """Posterior probabilities ``(n, k)`` of the components for the points ``x`` ``(n, d)``.

    Example::

        >>> import jax.numpy as jnp
        >>> params = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0], [3.0]]), jnp.ones((2, 1)))
        >>> responsibilities(params, jnp.array([[1.5]])).tolist()
        [[0.5, 0.5]]
    """
    return jnp.exp(e_step(params, x)[0])


def predict(params: GMMParams, x: jax.Array) -> jax.Array:
    """The most probable component ``(n,)`` for each of the points ``x`` ``(n, d)``.

    Example::

        >>> import jax.numpy as jnp
        >>> params = GMMParams(jnp.array([0.5, 0.5]), jnp.array([[0.0], [3.0]]), jnp.ones((2, 1)))
        >>> predict(params, jnp.array([[-1.0], [2.0]])).tolist()
        [0, 1]
    """
    return jnp.argmax(e_step(params, x)[0], axis=1)


def _check_data(x: jax.Array) -> jax.Array:
    """``x`` as a floating-point array of shape ``(n, d)``, or a ValueError/TypeError."""
    x = jnp.asarray(x)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(
            f"x must have shape (n, d) with n, d >= 1 (vmap over a batch of datasets); got {x.shape}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array; got dtype {x.dtype}.")
    return x


def _check_params(params: GMMParams, x: jax.Array) -> str:
    """The covariance type of ``params`` after checking that it fits the dimension of ``x``."""
    covariance = covariance_type(params)
    if jnp.shape(params.means)[1] != x.shape[1]:
        raise ValueError(
            f"params.means must have as many columns as x ({x.shape[1]}); got {jnp.shape(params.means)}."
        )
    return covariance


@partial(jax.jit, static_argnames=("steps", "covariance"))
def _fit(
    params: GMMParams, x: jax.Array, tol: float, reg_covar: float, *, steps: int, covariance: str
) -> FitResult:
    """Unchecked :func:`fit`."""

    def keep_going(state: tuple) -> jax.Array:
        iteration, _, _, _, converged = state
        return (iteration < steps) & ~converged

    moments = _moments(x, covariance)  # computed once, outside the loop

    def iterate(state: tuple) -> tuple:
        iteration, params, previous, trace, _ = state
        log_resp, log_likelihood = _e_step(params, x, moments)
        params = _m_step(x, jnp.exp(log_resp), reg_covar, covariance, moments)
        converged = jnp.abs(log_likelihood - previous) < tol
        return iteration + 1, params, log_likelihood, trace.at[iteration].set(log_likelihood), converged

    start = (
        jnp.asarray(0),
        params,
        jnp.asarray(-jnp.inf, x.dtype),
        jnp.full((steps,), jnp.nan, x.dtype),
        jnp.asarray(False),
    )
    iterations, params, _, trace, converged = lax.while_loop(keep_going, iterate, start)
    return FitResult(params, trace, iterations, converged)


class _Moments(NamedTuple):
    """What the full-covariance steps read of the data ``x`` ``(n, d)``: its mean ``centre`` ``(d,)``, the
    centred points ``xc`` and their outer products ``outer`` ``(n, d * d)``, ``xc[i] xc[i]^T`` flattened."""

    centre: jax.Array
    xc: jax.Array
    outer: jax.Array


def _moments(x: jax.Array, covariance: str) -> _Moments | None:
    """The :class:`_Moments` of ``x`` for full covariances (``None`` for diagonal ones, which need none)."""
    if covariance != "full":
        return None
    centre = jnp.mean(x, axis=0)
    xc = x - centre
    return _Moments(centre, xc, (xc[:, :, None] * xc[:, None, :]).reshape(x.shape[0], -1))


@jax.jit
def _e_step(params: GMMParams, x: jax.Array, moments: _Moments | None) -> tuple[jax.Array, jax.Array]:
    """Unchecked :func:`e_step`.

    Full covariances: with the precision ``P = S^-1`` from the Cholesky factor ``S = L L^T`` and the data
    centred, the Mahalanobis distance ``(x - mu)^T P (x - mu) = <x x^T, P> - 2 x^T P mu + mu^T P mu`` is
    three matrix products over all points and components at once (no ``(k, n, d)`` intermediate; with
    ``vmap`` over restarts, one product for all of them), and ``log det S = 2 sum log diag L``."""
    weights, means, covariances = params
    n, d = x.shape
    if covariances.ndim == 3:
        chol = jnp.linalg.cholesky(covariances)
        inverse = solve_triangular(chol, jnp.broadcast_to(jnp.eye(d, dtype=x.dtype), chol.shape), lower=True)
        precisions = jnp.swapaxes(inverse, 1, 2) @ inverse  # (k, d, d)
        centred = means - moments.centre
        projected = jnp.einsum("kde,ke->kd", precisions, centred)  # P mu
        mahalanobis = (
            moments.outer @ precisions.reshape(-1, d * d).T
            - 2 * moments.xc @ projected.T
            + jnp.sum(centred * projected, axis=1)
        ).T  # (k, n)
        mahalanobis = jnp.maximum(mahalanobis, 0.0)  # rounding can leave a tiny negative for a point at its mean
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    else:
        mahalanobis = jnp.sum((x[None, :, :] - means[:, None, :]) ** 2 / covariances[:, None, :], axis=2)
        log_det = jnp.sum(jnp.log(covariances), axis=1)
    log_gauss = -0.5 * (d * jnp.log(2 * jnp.pi) + log_det[:, None] + mahalanobis)  # (k, n)
    joint = jnp.log(weights)[None, :] + log_gauss.T  # (n, k)
    log_norm = logsumexp(joint, axis=1, keepdims=True)
    return joint - log_norm, jnp.mean(log_norm)


@partial(jax.jit, static_argnames="covariance")
def _m_step(
    x: jax.Array, resp: jax.Array, reg_covar: float, covariance: str, moments: _Moments | None
) -> GMMParams:
    """Unchecked :func:`m_step`, taking responsibilities rather than their logarithms. Full covariances
    are ``sum_i r[i, j] xc[i] xc[i]^T / n[j] - mu[j] mu[j]^T`` in centred coordinates: one matrix product."""
    # The floor keeps a component that no point is responsible for finite instead of dividing by zero.
    counts = jnp.maximum(resp.sum(axis=0), 10 * jnp.finfo(x.dtype).eps)  # (k,)
    d = x.shape[1]
    if covariance == "full":
        centred = resp.T @ moments.xc / counts[:, None]
        second = (resp.T @ moments.outer).reshape(-1, d, d) / counts[:, None, None]
        covariances = second - centred[:, :, None] * centred[:, None, :] + reg_covar * jnp.eye(d, dtype=x.dtype)
        return GMMParams(counts / counts.sum(), centred + moments.centre, covariances)
    means = resp.T @ x / counts[:, None]
    covariances = jnp.einsum("nk,knd->kd", resp, (x[None, :, :] - means[:, None, :]) ** 2) / counts[:, None] + reg_covar
    return GMMParams(counts / counts.sum(), means, covariances)


@partial(jax.jit, static_argnames="k")
def _kmeans_plus_plus(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
    """``k`` rows of ``x``: the first uniformly, each next with probability proportional to its squared
    distance to the nearest row already chosen (uniformly again if every point is already a seed)."""
    n = x.shape[0]
    keys = jax.random.split(key, k)
    first = x[jax.random.randint(keys[0], (), 0, n)]
    seeds = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)

    def choose(j: int, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        seeds, nearest = carry
        total = nearest.sum()
        probabilities = jnp.where(total > 0, nearest / jnp.where(total > 0, total, 1), 1 / n)
        seed = x[jax.random.choice(keys[j], n, p=probabilities)]
        return seeds.at[j].set(seed), jnp.minimum(nearest, jnp.sum((x - seed) ** 2, axis=1))

    seeds, _ = lax.fori_loop(1, k, choose, (seeds, jnp.sum((x - first) ** 2, axis=1)))
    return seeds


@partial(jax.jit, static_argnames="k")
def _nearest(x: jax.Array, centres: jax.Array, k: int) -> jax.Array:
    """One-hot responsibilities ``(n, k)`` assigning each point of ``x`` to its nearest centre."""
    distances = jnp.sum((x[:, None, :] - centres[None, :, :]) ** 2, axis=2)
    return jax.nn.one_hot(jnp.argmin(distances, axis=1), k, dtype=x.dtype)


# ---------------------------------------------------------------------------------------------------------
# The `gmm` program of `jmeta train`: jmeta's EM beside scikit-learn's from the same initialisations


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Fits a ``config.components``-component Gaussian mixture (``config.covariance``) to the 150 Iris
    flowers' four features with this module (at most ``config.steps`` EM iterations, ``config.tol``)
    from ``config.eval_tasks`` k-means++ initialisations, and scikit-learn's ``GaussianMixture`` from each
    same initialisation; reports the mean log-likelihood per flower and the adjusted Rand index and
    purity of the clusters against the species, mean ± 95% CI over initialisations."""
    import warnings

    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    data = load("iris")
    x = np.concatenate([data["train"].images, data["test"].images]).astype(np.float64)
    species = np.concatenate([data["train"].labels, data["test"].labels])
    k, steps = positive_int("components", config.components), positive_int("steps", config.steps)

    def purity(clusters: np.ndarray) -> float:
        return float(sum(np.bincount(species[clusters == c]).max() for c in np.unique(clusters)) / len(species))

    fits: dict[str, list[tuple[float, float, float]]] = {"jmeta.systems.gmm": [], "sklearn GaussianMixture": []}
    with jax.enable_x64(True):
        for restart in range(positive_int("eval_tasks", config.eval_tasks)):
            start = gmm_init(jax.random.key(config.seed + restart), jnp.asarray(x), k, config.covariance)
            result = fit(start, jnp.asarray(x), steps=steps, tol=config.tol)
            clusters = np.asarray(predict(result.params, jnp.asarray(x)))
            fits["jmeta.systems.gmm"].append(
                (
                    float(e_step(result.params, jnp.asarray(x))[1]),
                    adjusted_rand_score(species, clusters),
                    purity(clusters),
                )
            )
            covariances = np.asarray(start.covariances)
            reference = GaussianMixture(
                k,
                covariance_type=config.covariance,
                tol=config.tol,
                reg_covar=1e-6,
                max_iter=steps,
                weights_init=np.asarray(start.weights),
                means_init=np.asarray(start.means),
                precisions_init=np.linalg.inv(covariances) if config.covariance == "full" else 1.0 / covariances,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning when a short run stops before tol is met
                clusters = reference.fit(x).predict(x)
            fits["sklearn GaussianMixture"].append(
                (float(reference.score(x)), adjusted_rand_score(species, clusters), purity(clusters))
            )
    rows = {
        name: dict(zip(("log_likelihood", "adjusted_rand", "purity"), map(estimate, np.array(values).T), strict=True))
        for name, values in fits.items()
    }
    difference = np.abs(np.array(fits["jmeta.systems.gmm"])[:, 0] - np.array(fits["sklearn GaussianMixture"])[:, 0])
    protocol = {
        "tasks": config.eval_tasks,
        "shots": "150 flowers, 4 features",
        "queries_per_task": 150,
        "inner_lr": "-",
        "checkpoint": f"EM, {k} {config.covariance}-covariance components, <= {steps} iterations, tol {config.tol}",
        "ci": "95% over k-means++ initialisations, 1.96 * std / sqrt(initialisations)",
    }
    return report(config, rows, protocol, max_abs_log_likelihood_difference=float(difference.max()))




# ---------------------------------------------------------------------------------------------------------
# `jmeta bench gmm-em`: restarts batched with vmap, beside scikit-learn's GaussianMixture


class EMBench(NamedTuple):
    """What :func:`bench_em` measured: the workload, jmeta's time for all restarts in one compiled call
    (``run_s``, after a first call with compilation, ``compile_s``), and, with a peer, scikit-learn's time
    for the same fits one after another (``peer_s``) and the largest difference between the two's final
    mean log-likelihoods over the restarts. ``peer_threads``: the BLAS threads scikit-learn ran with
    (``None``: NumPy's default)."""

    points: int
    dims: int
    components: int
    restarts: int
    iterations: int
    dtype: str
    compile_s: float
    run_s: float
    peer_s: float | None
    max_log_likelihood_difference: float | None
    peer_threads: int | None = None

    @property
    def iterations_per_s(self) -> float:
        """EM iterations (one E-step and one M-step of one restart) per second."""
        return self.restarts * self.iterations / self.run_s


def mixture_data(points: int, dims: int, components: int, seed: int = 0) -> np.ndarray:
    """``points`` float64 samples ``(points, dims)`` of a random mixture of ``components`` Gaussians: means
    ``N(0, 9 I)``, covariances ``A A^T / dims + I / 2`` with ``A`` standard normal, weights from a
    Dirichlet(5) draw; all from ``numpy.random.default_rng(seed)``.

    Example::

        >>> mixture_data(100, 3, 2).shape
        (100, 3)
    """
    points, dims, components = (positive_int(n, v) for n, v in (("points", points), ("dims", dims),
                                                                 ("components", components)))
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(components, dims))
    factors = rng.normal(size=(components, dims, dims)) / np.sqrt(dims)
    chol = np.linalg.cholesky(factors @ factors.transpose(0, 2, 1) + 0.5 * np.eye(dims))
    labels = rng.choice(components, points, p=rng.dirichlet(np.full(components, 5.0)))
    return means[labels] + np.einsum("nij,nj->ni", chol[labels], rng.normal(size=(points, dims)))


def bench_em(
    *,
    points: int = 100_000,
    dims: int = 16,
    components: int = 10,
    restarts: int = 16,
    iterations: int = 20,
    dtype: str = "float64",
    peer: bool = False,
    seed: int = 0,
) -> EMBench:
    """Times EM with full covariances on :func:`mixture_data` from ``restarts`` k-means++ initialisations
    (:func:`gmm_init`), all restarts in one compiled ``vmap`` of :func:`fit` with ``tol=0``, so that every
    restart runs exactly ``iterations`` iterations; then the final mean log-likelihood of each. With
    ``peer=True`` also fits scikit-learn's ``GaussianMixture`` from each same initialisation (``tol=0``,
    ``max_iter=iterations``, the same ``reg_covar``), one after another as it runs restarts, and compares
    the final log-likelihoods; scikit-learn runs with NumPy's default BLAS threads or one thread, whichever
    fits the first restart faster (on a loaded machine, one thread can be several times faster). scikit-learn's
    ``fit`` also estimates parameters once from its
    (``random_from_data``) initial responsibilities before overriding them with the given ones, and ends
    with one more E-step: about one iteration more than jmeta does. Both compute in ``dtype``.

    Example::

        >>> bench_em(points=1000, dims=2, components=3, restarts=2, iterations=5).iterations   # doctest: +SKIP
        5
    """
    import time
    import warnings

    dtype = one_of("dtype", dtype, ("float64", "float32"))
    restarts, iterations = positive_int("restarts", restarts), positive_int("iterations", iterations)
    x = mixture_data(points, dims, components, seed).astype(dtype)
    with jax.enable_x64(dtype == "float64"):
        data = jnp.asarray(x)
        starts = [gmm_init(jax.random.key(seed + r), data, components) for r in range(restarts)]
        batched = jax.tree.map(lambda *leaves: jnp.stack(leaves), *starts)

        @jax.jit
        def fit_all(params: GMMParams, data: jax.Array) -> jax.Array:
            def one(params: GMMParams) -> jax.Array:
                fitted = _fit(params, data, 0.0, 1e-6, steps=iterations, covariance="full").params
                return _e_step(fitted, data, _moments(data, "full"))[1]

            return jax.vmap(one)(params)

        start = time.perf_counter()
        jax.block_until_ready(fit_all(batched, data))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        log_likelihoods = np.asarray(jax.block_until_ready(fit_all(batched, data)))
        run_s = time.perf_counter() - start
    if not peer:
        return EMBench(points, dims, components, restarts, iterations, dtype, compile_s, run_s, None, None, None)
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    def sklearn_fit(params: GMMParams) -> GaussianMixture:
        model = GaussianMixture(
            components,
            covariance_type="full",
            tol=0.0,
            reg_covar=1e-6,
            max_iter=iterations,
            init_params="random_from_data",
            weights_init=np.asarray(params.weights),
            means_init=np.asarray(params.means),
            precisions_init=np.linalg.inv(np.asarray(params.covariances)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 is never met, by design
            return model.fit(x)

    def timed(threads: int | None, params: list[GMMParams]) -> tuple[float, list[GaussianMixture]]:
        start = time.perf_counter()
        with threadpool_limits(threads):
            fitted = [sklearn_fit(p) for p in params]
        return time.perf_counter() - start, fitted

    # NumPy's BLAS threads can be far slower than one thread on a loaded machine: the first restart, fitted
    # both ways, picks the faster setting, and all restarts are then timed with it.
    threads = min((None, 1), key=lambda t: timed(t, starts[:1])[0])
    peer_s, fitted = timed(threads, starts)
    difference = max(abs(model.score(x) - ll) for model, ll in zip(fitted, log_likelihoods, strict=True))
    return EMBench(
        points, dims, components, restarts, iterations, dtype, compile_s, run_s, peer_s, float(difference), threads
    )


def format_bench(result: EMBench) -> str:
    """The lines ``jmeta bench gmm-em`` prints; the last is ``EM iterations/s N``, as other benches end
    with their figure.

    Example::

        >>> print(format_bench(EMBench(10, 2, 3, 4, 5, "float64", 1.0, 2.0, 20.0, 1e-12)).splitlines()[1])
          jmeta / sklearn (20.0 s) = 10.0x
    """
    lines = [
        f"jmeta gmm-em: {result.restarts} restarts (vmap) x {result.iterations} EM iterations, {result.points} "
        f"points, {result.dims} dims, {result.components} full-covariance components, {result.dtype}, in "
        f"{result.run_s:.2f}s: EM iterations/s {result.iterations_per_s:.1f} (first call, with compilation: "
        f"{result.compile_s:.2f}s)"
    ]
    if result.peer_s is not None:
        threads = "default" if result.peer_threads is None else result.peer_threads
        lines.append(f"  jmeta / sklearn ({result.peer_s:.1f} s) = {result.peer_s / result.run_s:.1f}x")
        lines.append(
            f"  same fits: max |final mean log-likelihood difference| over restarts "
            f"{result.max_log_likelihood_difference:.2g} (sklearn: one restart after another, tol=0, "
            f"max_iter={result.iterations}, plus its initial estimate and final E-step; BLAS threads: {threads})"
        )
    lines.append(f"EM iterations/s {result.iterations_per_s:.1f}")
    return "\n".join(lines)
