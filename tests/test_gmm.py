"""EM for Gaussian mixtures: monotone log-likelihood, agreement with scikit-learn, vmap, jit, errors."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

from jmeta.systems import gmm

COVARIANCES = ("full", "diag")


def blobs(seed: int, per_cluster: int = 60, d: int = 3) -> np.ndarray:
    """Three correlated, partly overlapping Gaussian clusters in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.normal(size=(3, d))
    clusters = [rng.normal(size=(per_cluster, d)) @ rng.normal(size=(d, d)) + c for c in centres]
    return np.concatenate(clusters)


def sklearn_fit(params: gmm.GMMParams, x: np.ndarray, covariance: str, steps: int, tol: float):
    """scikit-learn's GaussianMixture fitted from exactly ``params``."""
    covariances = np.asarray(params.covariances)
    precisions = np.linalg.inv(covariances) if covariance == "full" else 1.0 / covariances
    model = GaussianMixture(
        n_components=len(params.weights),
        covariance_type=covariance,
        tol=tol,
        reg_covar=1e-6,
        max_iter=steps,
        weights_init=np.asarray(params.weights),
        means_init=np.asarray(params.means),
        precisions_init=precisions,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning when tol is never met
        return model.fit(x)


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_log_likelihood_never_decreases(covariance: str) -> None:
    x = jnp.asarray(blobs(1), jnp.float32)
    params = gmm.gmm_init(jax.random.key(0), x, 4, covariance, init="random")
    result = gmm.fit(params, x, steps=60, tol=0.0)
    assert int(result.iterations) == 60 and not bool(result.converged)
    trace = np.append(result.log_likelihood, gmm.e_step(result.params, x)[1])
    assert np.all(np.isfinite(trace))
    assert np.all(np.diff(trace) >= -1e-5 * np.abs(trace[1:]))  # float32 rounding only
    assert trace[-1] > trace[0] + 0.1  # it actually learnt something


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_matches_sklearn_for_a_fixed_number_of_steps(covariance: str) -> None:
    x = blobs(2)
    x_new = blobs(3)[::7]
    with jax.enable_x64(True):
        params = gmm.gmm_init(jax.random.key(1), jnp.asarray(x), 3, covariance)
        result = gmm.fit(params, jnp.asarray(x), steps=8, tol=0.0)
        score = float(gmm.e_step(result.params, jnp.asarray(x))[1])
        resp = np.asarray(gmm.responsibilities(result.params, jnp.asarray(x_new)))
        labels = np.asarray(gmm.predict(result.params, jnp.asarray(x_new)))
    reference = sklearn_fit(params, x, covariance, steps=8, tol=0.0)
    assert int(result.iterations) == reference.n_iter_ == 8
    np.testing.assert_allclose(score, reference.score(x), rtol=1e-10)
    np.testing.assert_allclose(result.log_likelihood[-1], reference.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(result.params.weights, reference.weights_, atol=1e-10)
    np.testing.assert_allclose(result.params.means, reference.means_, atol=1e-9)
    np.testing.assert_allclose(result.params.covariances, reference.covariances_, atol=1e-9)
    np.testing.assert_allclose(resp, reference.predict_proba(x_new), atol=1e-9)
    np.testing.assert_array_equal(labels, reference.predict(x_new))


@pytest.mark.parametrize("covariance", COVARIANCES)
def test_matches_sklearn_convergence(covariance: str) -> None:
    x = blobs(4)
    with jax.enable_x64(True):
        params = gmm.gmm_init(jax.random.key(2), jnp.asarray(x), 3, covariance, init="random")
        result = gmm.fit(params, jnp.asarray(x), steps=500, tol=1e-6)
        score = float(gmm.e_step(result.params, jnp.asarray(x))[1])
    reference = sklearn_fit(params, x, covariance, steps=500, tol=1e-6)
    assert bool(result.converged) and reference.converged_
    assert int(result.iterations) == reference.n_iter_ < 500
    trace = np.asarray(result.log_likelihood)
    assert np.all(np.isnan(trace[reference.n_iter_ :]))
    assert np.all(np.diff(trace[: reference.n_iter_]) >= -1e-12 * np.abs(trace[1 : reference.n_iter_]))
    np.testing.assert_allclose(score, reference.score(x), rtol=1e-9)
    np.testing.assert_allclose(result.params.means, reference.means_, atol=1e-7)


def test_vmap_over_datasets_equals_a_loop_and_jit_works() -> None:
    with jax.enable_x64(True):
        xs = jnp.stack([jnp.asarray(blobs(seed, per_cluster=30)) for seed in range(8)])
        keys = jax.random.split(jax.random.key(3), 8)

        def run(key: jax.Array, x: jax.Array) -> gmm.FitResult:
            return gmm.fit(gmm.gmm_init(key, x, 3, "full"), x, steps=40, tol=1e-5)

        batched = jax.jit(jax.vmap(run))(keys, xs)
        run_one = jax.jit(run)
        looped = [run_one(key, x) for key, x in zip(keys, xs, strict=True)]
    iterations = [int(r.iterations) for r in looped]
    assert len(set(iterations)) > 1  # the datasets converge after different numbers of steps
    for i, single in enumerate(looped):
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(got[i], want, rtol=1e-9, atol=1e-9)


def test_jit_of_each_function_matches_eager() -> None:
    x = jnp.asarray(blobs(5), jnp.float32)
    params = gmm.gmm_init(jax.random.key(4), x, 3, "diag")
    eager = gmm.fit(params, x, steps=10)
    jitted = jax.jit(gmm.fit, static_argnames=("steps",))(params, x, steps=10)
    for got, want in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    log_resp, _ = jax.jit(gmm.e_step)(params, x)
    np.testing.assert_allclose(
        jax.jit(gmm.m_step)(x, log_resp).means, gmm.m_step(x, log_resp).means, rtol=1e-5
    )


def test_e_step_is_stable_far_from_every_component() -> None:
    params = gmm.GMMParams(jnp.array([0.3, 0.7]), jnp.array([[0.0, 0.0], [1.0, 1.0]]), jnp.ones((2, 2)))
    far = jnp.array([[40.0, -40.0], [-30.0, 50.0]])  # every density underflows to 0 in float32
    log_resp, log_likelihood = gmm.e_step(params, far)
    assert np.all(np.isfinite(log_resp)) and np.isfinite(log_likelihood)
    # Exact log responsibilities in float64: log w_j - |x - mu_j|^2 / 2, normalised.
    joint = np.log([0.3, 0.7]) - 0.5 * ((np.asarray(far)[:, None] - [[0.0, 0.0], [1.0, 1.0]]) ** 2).sum(-1)
    np.testing.assert_allclose(log_resp, joint - logsumexp(joint, axis=1, keepdims=True), atol=1e-3)


def test_explicit_initial_parameters_are_used() -> None:
    x = jnp.asarray(blobs(6), jnp.float32)
    weights, means = jnp.array([0.2, 0.3, 0.5]), x[:3]
    covariances = jnp.stack([jnp.eye(3)] * 3)
    given = gmm.gmm_init(None, x, 3, weights=weights, means=means, covariances=covariances)
    for got, want in zip(given, (weights, means, covariances), strict=True):
        np.testing.assert_array_equal(got, want)
    only_means = gmm.gmm_init(None, x, 3, "diag", means=means)
    np.testing.assert_array_equal(only_means.means, means)
    assert only_means.covariances.shape == (3, 3) and abs(float(only_means.weights.sum()) - 1) < 1e-6


def test_bad_inputs_raise_clear_errors() -> None:
    x = jnp.asarray(blobs(7, per_cluster=2), jnp.float32)  # 6 points in 3 dimensions
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"k must be at most the number of points in x \(6\); got k=7"):
        gmm.gmm_init(key, x, 7)
    with pytest.raises(ValueError, match="covariance must be one of 'full', 'diag'; got 'spherical'"):
        gmm.gmm_init(key, x, 2, "spherical")
    with pytest.raises(ValueError, match="key must be a JAX random key when means is not given"):
        gmm.gmm_init(None, x, 2)
    with pytest.raises(ValueError, match="init must be one of"):
        gmm.gmm_init(key, x, 2, init="kmeans")
    for bad in (0.0, -1e-6):
        with pytest.raises(ValueError, match="reg_covar must be a finite number > 0"):
            gmm.gmm_init(key, x, 2, reg_covar=bad)
    params = gmm.gmm_init(key, x, 2)
    with pytest.raises(ValueError, match="reg_covar must be a finite number > 0; got 0"):
        gmm.fit(params, x, reg_covar=0)
    with pytest.raises(ValueError, match="reg_covar"):
        gmm.m_step(x, jnp.zeros((6, 2)), reg_covar=-1.0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        gmm.gmm_init(key, x, 0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        gmm.fit(params, x, steps=0)
    with pytest.raises(ValueError, match="tol must be a finite number >= 0; got -1"):
        gmm.fit(params, x, tol=-1)
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        gmm.e_step(params, x[None])
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        gmm.e_step(params, jnp.ones((6, 3), jnp.int32))
    with pytest.raises(ValueError, match="params.means must have as many columns as x"):
        gmm.e_step(params, x[:, :2])
    with pytest.raises(ValueError, match=r"params.covariances must have shape \(k, d, d\)"):
        gmm.e_step(params._replace(covariances=jnp.ones((2, 3, 2))), x)
    with pytest.raises(ValueError, match="vmap over a batch of mixtures"):
        gmm.e_step(jax.tree.map(lambda a: a[None], params), x)
    with pytest.raises(ValueError, match=r"means must have shape \(2, 3\)"):
        gmm.gmm_init(key, x, 2, means=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"log_resp must have shape \(n, k\) with n = 6"):
        gmm.m_step(x, jnp.zeros((5, 2)))


def test_bench_fits_the_same_mixtures_as_sklearn_and_prints_its_figure_last(capsys):
    result = gmm.bench_em(points=400, dims=3, components=2, restarts=3, iterations=4, peer=True)
    assert (result.restarts, result.iterations, result.dtype) == (3, 4, "float64")
    assert result.max_log_likelihood_difference < 1e-9
    lines = gmm.format_bench(result).splitlines()
    assert lines[1].startswith("  jmeta / sklearn (") and lines[1].endswith("x")
    assert lines[-1] == f"EM iterations/s {result.iterations_per_s:.1f}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "gmm-em", "--peer", "l2l"], "gmm-em takes no other peer"),
        (["bench", "sinusoid-maml", "--peer", "sklearn"], "--peer sklearn goes with gmm-em only"),
        (["bench", "gmm-em", "--batching", "vmap"], "not --batching"),
    ],
)
def test_bench_cli_refuses_what_gmm_em_does_not_take(argv, message, capsys):
    from jmeta import cli

    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
