"""BOIL and MetaOptNet (R2D2 ridge and Crammer-Singer SVM heads): each against an independent computation
(MAML with a masked inner optimiser, numpy's solve, scikit-learn's LinearSVC, central finite differences),
meta-trained briefly through the unchanged meta_trainer, built through the registry and fed bad arguments."""

import functools
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO, first_task
from sklearn.svm import LinearSVC
from test_learners import _assert_close, _classification_tasks, _sinusoids, _train, _value_and_grad

import jmeta
from jmeta import learners
from jmeta.experiment import load_config
from jmeta.registry import LEARNERS

mse = jmeta.losses.mse


def _is_head(path):
    return path[0] == "Dense_2"


# BOIL -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inner, first_order, remat",
    [(optax.sgd(0.1), False, False), (optax.sgd(0.1), True, False), (optax.adam(0.01), False, True)],
)
def test_boil_equals_maml_with_the_heads_inner_updates_masked(mlp_model, sine_tasks, inner, first_order, remat):
    task = first_task(sine_tasks)
    boil = learners.boil(
        mlp_model, mse, _is_head, inner_optimizer=inner, steps=2, first_order=first_order, remat=remat
    )
    params, state = boil.init(jax.random.key(0))
    head = jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == "Dense_2", params)
    labels = jax.tree.map(lambda h: "head" if h else "body", head)
    masked = optax.multi_transform({"body": inner, "head": optax.set_to_zero()}, labels)
    maml = jmeta.maml(mlp_model, mse, inner_optimizer=masked, steps=2, first_order=first_order)

    (loss, _), grads = _value_and_grad(boil, task)(params, state)
    (maml_loss, _), maml_grads = _value_and_grad(maml, task)(params, state)
    np.testing.assert_allclose(loss, maml_loss, rtol=1e-6)
    _assert_close(grads, maml_grads)
    assert float(np.max(np.abs(grads["Dense_2"]["kernel"]))) > 0, "the head is meta-learned"

    adapted = jax.jit(boil.adapt)(params, state, task.support_x, task.support_y)
    chex.assert_trees_all_equal(adapted["Dense_2"], params["Dense_2"])
    assert not np.allclose(adapted["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    by_mask = learners.boil(mlp_model, mse, head, inner_optimizer=inner, steps=2, first_order=first_order)
    chex.assert_trees_all_close(jax.jit(by_mask.adapt)(params, state, task.support_x, task.support_y), adapted)


def test_boil_refuses_a_head_of_nothing_or_everything(mlp_model):
    with pytest.raises(ValueError, match="head must select at least one parameter array; it selected none of"):
        learners.boil(mlp_model, mse, lambda path: path[0] == "head", inner_lr=0.1)
    with pytest.raises(ValueError, match=r"head selected every parameter array \(.*\); the inner loop adapts"):
        learners.boil(mlp_model, mse, lambda path: True, inner_lr=0.1)
    with pytest.raises(ValueError, match="give exactly one of inner_lr"):
        learners.boil(mlp_model, mse, _is_head)


def test_boil_meta_training_lowers_the_query_loss(mlp_model):
    _, before, after = _train(learners.boil(mlp_model, mse, _is_head, inner_lr=0.01), _sinusoids)
    assert after < 0.95 * before, (before, after)


# MetaOptNet: the heads against independent solutions -------------------------------------------------------


def _support(seed, points=12, dim=5, classes=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(points, dim)), np.arange(points) % classes


def test_ridge_weights_equal_the_primal_normal_equations():
    x, y = _support(0, points=6, dim=9)  # fewer points than dimensions: the dual (Woodbury) form pays
    one_hot = np.eye(4)[y]  # class 3 absent: a zero column
    with jax.enable_x64(True):
        weights = np.asarray(learners.ridge_weights(jnp.asarray(x), jnp.asarray(one_hot), 0.7))
    np.testing.assert_allclose(weights, np.linalg.solve(x.T @ x + 0.7 * np.eye(9), x.T @ one_hot), rtol=1e-10)
    assert weights.dtype == np.float64 and not weights[:, 3].any()


@pytest.mark.parametrize("c", [0.05, 1.0])
def test_svm_head_equals_liblinears_crammer_singer_svm(c):
    x, y = _support(1)
    present = jnp.array([True, True, True, False])  # 3 classes in a 4-way learner
    with jax.enable_x64(True):
        alpha = np.asarray(
            learners.crammer_singer_dual(jnp.asarray(x), jnp.eye(4)[y], present, c, iterations=100_000, tol=1e-13)
        )
    reference = LinearSVC(multi_class="crammer_singer", C=c, fit_intercept=False, tol=1e-12, max_iter=10**6)
    reference.fit(x, y)
    weights = x.T @ alpha
    np.testing.assert_allclose(weights[:, :3].T, reference.coef_, atol=1e-8 * np.abs(reference.coef_).max())
    # the dual's constraints: rows sum to 0, alpha[y] <= C, the others <= 0, absent ones 0
    np.testing.assert_allclose(alpha.sum(axis=1), 0, atol=1e-12)
    own = alpha[np.arange(len(y)), y]
    assert np.all(own <= c + 1e-12) and np.all(alpha - np.eye(4)[y] * own[:, None] <= 1e-12)
    assert not alpha[:, 3].any()


@pytest.mark.parametrize(
    "seed, points, dim, classes, ways, c",
    # the second: more points than dimensions, a singular Gram matrix and a singular implicit system
    # (a plain LU solve gives NaN gradients there; implicit_solve's shifted one does not)
    [(2, 9, 4, 3, 4, 0.5), (2, 25, 3, 5, 5, 1.0)],
)
def test_svm_head_gradients_equal_central_differences(seed, points, dim, classes, ways, c):
    x, y = _support(seed, points=points, dim=dim, classes=classes)
    query = np.random.default_rng(3).normal(size=(6, dim))
    present = jnp.arange(ways) < classes
    with jax.enable_x64(True):

        @jax.jit
        def objective(x):  # a smooth function of the query logits
            alpha = learners.crammer_singer_dual(x, jnp.eye(ways)[y], present, c, iterations=100_000, tol=1e-14)
            return jnp.sum(jnp.sin(query @ (x.T @ alpha)))

        x = jnp.asarray(x)
        gradient = np.asarray(jax.grad(objective)(x))
        eps, steps = 1e-6, np.eye(x.size).reshape(x.size, *x.shape)
        differences = np.array([(objective(x + eps * e) - objective(x - eps * e)) / (2 * eps) for e in steps])
    assert np.abs(differences).max() > 1e-2, "a problem whose weights move with the embeddings"
    np.testing.assert_allclose(gradient, differences.reshape(x.shape), atol=1e-7 * np.abs(differences).max())


# MetaOptNet: the learners -----------------------------------------------------------------------------------


@pytest.fixture
def embedding_model() -> jmeta.Model:
    return jmeta.from_linen(jmeta.models.MLP((16, 4)), jnp.zeros((1, 8)))


HEADS = {
    "r2d2": functools.partial(learners.metaoptnet_r2d2, lam=1.0),
    "svm": functools.partial(learners.metaoptnet_svm, c=1.0, iterations=2000, tol=1e-7),
}


def _three_way_tasks(key, num_tasks):
    return _classification_tasks(key, num_tasks, ways=3)


@pytest.mark.parametrize("head", list(HEADS))
def test_metaoptnet_logits_are_the_scaled_linear_head_and_ignore_absent_ways(embedding_model, head):
    task = first_task(_classification_tasks(jax.random.key(0), 1, ways=3))
    wide, narrow = HEADS[head](embedding_model, ways=5), HEADS[head](embedding_model, ways=3)
    params, state = wide.init(jax.random.key(1))
    params = params._replace(scale=jnp.float32(2.5), bias=jnp.float32(-0.5))
    fitted = jax.jit(wide.adapt)(params, state, task.support_x, task.support_y)
    logits, _ = jax.jit(wide.predict)(fitted, state, task.query_x)

    support = embedding_model.apply(params.params, state, task.support_x)[0]
    query = embedding_model.apply(params.params, state, task.query_x)[0]
    if head == "r2d2":
        one_hot = np.eye(3)[task.support_y]
        weights = np.linalg.solve(support.T @ support + np.eye(4), support.T @ one_hot)  # the primal form
    else:
        x, y = np.asarray(support, np.float64), np.asarray(task.support_y)
        weights = LinearSVC(multi_class="crammer_singer", C=1.0, fit_intercept=False, tol=1e-10, max_iter=10**6)
        weights = weights.fit(x, y).coef_.T
    np.testing.assert_allclose(logits[:, :3], 2.5 * (query @ weights) - 0.5, rtol=2e-3, atol=2e-3)
    assert logits.shape == (15, 5) and bool(np.all(np.asarray(logits)[:, 3:] == -np.inf))

    (wide_loss, _), grads = _value_and_grad(wide, task)(params, state)
    (narrow_loss, _), _ = _value_and_grad(narrow, task)(params, state)
    np.testing.assert_allclose(wide_loss, narrow_loss, rtol=1e-4)
    assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(grads.scale) != 0 and float(np.max(np.abs(grads.params["Dense_0"]["kernel"]))) > 0


@pytest.mark.parametrize("head", list(HEADS))
def test_metaoptnet_meta_training_lowers_the_query_loss(embedding_model, head):
    learner = HEADS[head](embedding_model, ways=3, scale=4.0, metrics={"accuracy": jmeta.losses.accuracy})
    _, before, after = _train(learner, functools.partial(_classification_tasks, num_tasks=8))
    assert after < 0.7 * before, (before, after)


def test_metaoptnet_refuses_bad_arguments(embedding_model):
    with pytest.raises(ValueError, match="lam must be a finite number > 0; got 0"):
        learners.metaoptnet_r2d2(embedding_model, ways=5, lam=0)
    with pytest.raises(ValueError, match="c must be a finite number > 0; got -1"):
        learners.metaoptnet_svm(embedding_model, ways=5, c=-1)
    with pytest.raises(ValueError, match=r"iterations must be a positive integer \(>= 1\); got 0"):
        learners.metaoptnet_svm(embedding_model, ways=5, iterations=0)
    with pytest.raises(ValueError, match="scale must be a finite number; got inf"):
        learners.metaoptnet_r2d2(embedding_model, ways=5, scale=float("inf"))
    with pytest.raises(ValueError, match=r"ways must be a positive integer \(>= 1\); got 0"):
        learners.metaoptnet_svm(embedding_model, ways=0)
    with pytest.raises(ValueError, match=r"and present \(ways,\); got shapes \(4, 2\), \(4, 3\) and \(2,\)"):
        learners.crammer_singer_dual(jnp.ones((4, 2)), jnp.ones((4, 3)), jnp.ones(2, bool), c=1.0)
    learner = learners.metaoptnet_svm(embedding_model, ways=3)
    params, state = learner.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"metaoptnet_svm's support labels must be integers in \[0, ways\)"):
        learner.adapt(params, state, jnp.zeros((6, 8)), jnp.zeros((6, 3)))
    with pytest.raises(ValueError, match=r"metaoptnet_svm's support labels y"):
        learner.adapt(params, state, jnp.zeros((6, 8)), jnp.arange(6))


# Registration and configs ----------------------------------------------------------------------------------


def test_registered_builders_make_the_learners_their_properties_declare(embedding_model, mlp_model):
    assert LEARNERS["boil"].properties["inner_lr"] and not LEARNERS["boil"].properties["embedding"]
    for name in ("metaoptnet-r2d2", "metaoptnet-svm"):
        assert LEARNERS[name].properties["embedding"] and LEARNERS[name].properties["any_ways"]
    family = types.SimpleNamespace(loss=jmeta.losses.cross_entropy, metrics={"accuracy": jmeta.losses.accuracy})
    for name in ("metaoptnet-r2d2", "metaoptnet-svm"):
        config = load_config(REPO / "experiments" / f"omniglot_{name.replace('-', '_')}.py")
        assert config.learner == name and all(key in config for key in LEARNERS[name].properties["keys"])
        config.ways, config.eval_ways = 5, 3  # trains 5-way, tests 3-way: both fit in max(ways, eval_ways)
        learner, meta_optimizer = LEARNERS[name].builder(config, embedding_model, family)
        params, state = learner.init(jax.random.key(0))
        assert isinstance(meta_optimizer, optax.GradientTransformation)
        sample = jax.tree_util.Partial(_three_way_tasks)
        results = jmeta.evaluate(learner, params, state, sample, jax.random.key(1), num_tasks=4, steps=(0,))
        assert 0 <= results[0]["accuracy"].mean <= 1

    config = load_config(REPO / "experiments" / "omniglot_boil.py")
    assert config.learner == "boil" and all(key in config for key in LEARNERS["boil"].properties["keys"])
    config.head, config.inner_steps = "Dense_2", 2
    learner, _ = LEARNERS["boil"].builder(config, mlp_model, types.SimpleNamespace(loss=mse, metrics={}))
    task = first_task(jmeta.tasks.sinusoid_tasks(jax.random.key(1), 1, shots=5, queries=5))
    params, state = learner.init(jax.random.key(0))
    reference = learners.boil(mlp_model, mse, _is_head, config.inner_lr, 2, first_order=config.first_order)
    chex.assert_trees_all_close(
        learner.adapt(params, state, task.support_x, task.support_y),
        reference.adapt(params, state, task.support_x, task.support_y),
    )
