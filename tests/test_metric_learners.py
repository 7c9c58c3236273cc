"""Matching Networks, Relation Networks, Baseline / Baseline++ / fine-tuning: each against a hand-written NumPy
computation (per-query loops, PyTorch's SGD formula, scikit-learn's logistic regression), trained briefly through
the unchanged meta_trainer, built through the registry, and fed bad arguments."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import REPO, first_task
from flax import linen
from test_learners import _classification_tasks, _train

import jmeta
from jmeta import learners
from jmeta.data.dataset import ClassDataset
from jmeta.experiment import TaskFamily
from jmeta.learners.baseline import descend, init_head
from jmeta.registry import LEARNERS
from jmeta.tasks.class_batches import make_class_batch_sampler
from jmeta.tasks.episodes import make_episode_sampler

DIM = 8


@pytest.fixture
def embedding_model() -> jmeta.Model:
    return jmeta.from_linen(jmeta.models.MLP((16, 4)), jnp.zeros((1, DIM)))


def _embed(model, params, state, x):
    return np.asarray(model.apply(params, state, x)[0], np.float64)


# Matching Networks -----------------------------------------------------------------------------------------


def test_matchingnet_equals_a_per_query_loop_over_the_support_set(embedding_model):
    ways, scale = 4, 3.0
    task = first_task(_classification_tasks(jax.random.key(0), 1, ways=3, shots=2))  # class 3 absent
    learner = learners.matchingnet(embedding_model, ways=ways, scale=scale)
    params, state = learner.init(jax.random.key(1))
    log_probs, _ = jax.jit(learner.predict)(learner.adapt(params, state, task.support_x, task.support_y), state,
                                            task.query_x)
    support = _embed(embedding_model, params, state, task.support_x)
    query = _embed(embedding_model, params, state, task.query_x)
    labels = np.asarray(task.support_y)
    for i, q in enumerate(query):
        cosines = [scale * q @ s / np.linalg.norm(q) / np.linalg.norm(s) for s in support]
        attention = np.exp(cosines) / np.sum(np.exp(cosines))
        expected = [sum(a for a, y in zip(attention, labels, strict=True) if y == k) for k in range(ways)]
        np.testing.assert_allclose(np.exp(log_probs[i]), expected, rtol=1e-5, atol=1e-7)
    assert bool(np.all(np.asarray(log_probs)[:, 3] == -np.inf))
    (loss, output), grads = jax.value_and_grad(lambda p: learner.task_loss(p, state, task), has_aux=True)(params)
    truth = np.asarray(task.query_y)
    np.testing.assert_allclose(loss, -np.mean(np.asarray(log_probs)[np.arange(truth.size), truth]), rtol=1e-5)
    assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads)), "absent classes give finite gradients"


def _numpy_lstm(params, carry, x):
    """One step of Flax's (Optimized)LSTMCell by hand: input, forget, cell and output gates, carry (c, h)."""
    c, h = carry
    gate = {name: x @ np.asarray(params["i" + name]["kernel"]) + h @ np.asarray(params["h" + name]["kernel"])
            + np.asarray(params["h" + name]["bias"]) for name in "ifgo"}
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    c = sigmoid(gate["f"]) * c + sigmoid(gate["i"]) * np.tanh(gate["g"])
    return c, sigmoid(gate["o"]) * np.tanh(c)


def test_matchingnet_full_context_embeddings_equal_a_per_query_loop(embedding_model):
    steps, ways = 3, 3
    task = first_task(_classification_tasks(jax.random.key(0), 1, ways=ways, shots=2))
    example = jnp.zeros((1, DIM))
    learner = learners.matchingnet(embedding_model, ways, fce=True, example_x=example, processing_steps=steps)
    params, state = learner.init(jax.random.key(1))
    log_probs, _ = jax.jit(learner.predict)(learner.adapt(params, state, task.support_x, task.support_y), state,
                                            task.query_x)
    lstm = jax.tree.map(lambda a: np.asarray(a, np.float64), params.context)
    g_prime = _embed(embedding_model, params.embedding, state, task.support_x)
    zero = (np.zeros(4), np.zeros(4))
    forward, backward, carry = [], [], zero
    for point in g_prime:  # the bidirectional LSTM over the support set, in its order (appendix A.1)
        carry = _numpy_lstm(lstm["forward"]["cell"], carry, point)
        forward.append(carry[1])
    carry = zero
    for point in g_prime[::-1]:
        carry = _numpy_lstm(lstm["backward"]["cell"], carry, point)
        backward.insert(0, carry[1])
    g = g_prime + np.array(forward) + np.array(backward)
    labels = np.asarray(task.support_y)
    for i, f_prime in enumerate(_embed(embedding_model, params.embedding, state, task.query_x)):
        h, c = f_prime, np.zeros(4)  # the attention LSTM over g (appendix A.2)
        for _ in range(steps):
            weights = np.exp(g @ h) / np.sum(np.exp(g @ h))
            c, h_hat = _numpy_lstm(lstm["attention"], (c, h), np.concatenate([f_prime, weights @ g]))
            h = h_hat + f_prime
        cosines = np.array([h @ s / np.linalg.norm(h) / np.linalg.norm(s) for s in g])
        attention = np.exp(cosines) / np.sum(np.exp(cosines))
        np.testing.assert_allclose(np.exp(log_probs[i]), [attention[labels == k].sum() for k in range(ways)], rtol=1e-4)


def test_matchingnet_meta_training_lowers_the_query_loss(embedding_model):
    learner = learners.matchingnet(embedding_model, ways=3, scale=10.0, metrics={"accuracy": jmeta.losses.accuracy})
    _, before, after = _train(learner, functools.partial(_classification_tasks, num_tasks=8))
    assert after < 0.6 * before, (before, after)


# Relation Networks -----------------------------------------------------------------------------------------


def _numpy_relation(params, pair):
    """Sung et al.'s relation module on one (1, 1, channels) pair, by hand: on a 1x1 map a 3x3 convolution with
    padding 1 reads its centre tap only, BatchNorm uses the initial running averages (mean 0, variance 1), and
    no max-pool applies."""
    x = np.asarray(pair, np.float64).reshape(-1)
    for block in range(2):
        conv, bn = params[f"conv{block}"], params[f"bn{block}"]
        x = x @ np.asarray(conv["kernel"])[1, 1] + np.asarray(conv["bias"])
        x = np.maximum(x / np.sqrt(1 + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"]), 0)
    x = np.maximum(x @ np.asarray(params["fc0"]["kernel"]) + np.asarray(params["fc0"]["bias"]), 0)
    return 1 / (1 + np.exp(-(x @ np.asarray(params["fc1"]["kernel"]) + np.asarray(params["fc1"]["bias"]))[0]))


def test_relationnet_equals_a_per_query_loop_over_classes(embedding_model):
    ways = 4
    task = first_task(_classification_tasks(jax.random.key(0), 1, ways=3, shots=2))  # class 3 absent
    relation = learners.RelationModule(hidden=6, units=5, use_running_average=True)
    learner = learners.relationnet(embedding_model, jnp.zeros((1, DIM)), ways, relation=relation)
    params, state = learner.init(jax.random.key(1))
    adapted = jax.jit(learner.adapt)(params, state, task.support_x, task.support_y)
    scores, _ = jax.jit(learner.predict)(adapted, state, task.query_x)
    support = _embed(embedding_model, params.embedding, state.embedding, task.support_x)
    query = _embed(embedding_model, params.embedding, state.embedding, task.query_x)
    labels, truth = np.asarray(task.support_y), np.asarray(task.query_y)
    expected = np.full((len(query), ways), -np.inf)
    for i, q in enumerate(query):
        for k in range(3):
            class_sum = support[labels == k].sum(axis=0)  # sum of the shots' embeddings (sec. 3.3)
            expected[i, k] = _numpy_relation(params.relation, np.concatenate([class_sum, q]))
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    loss, _ = jax.jit(learner.task_loss)(params, state, task)
    one_hot = np.eye(ways)[truth][:, :3]
    np.testing.assert_allclose(loss, np.mean((expected[:, :3] - one_hot) ** 2), rtol=1e-4)


@pytest.mark.slow  # over 20 s of wall time on a shared 2-core machine
def test_relationnet_meta_training_lowers_the_query_loss(embedding_model):
    learner = learners.relationnet(embedding_model, jnp.zeros((1, DIM)), 3, metrics={"accuracy": jmeta.losses.accuracy})
    _, before, after = _train(learner, functools.partial(_classification_tasks, num_tasks=8))
    assert after < 0.6 * before, (before, after)


class MapEmbedding(linen.Module):
    """A convolution that keeps 5x5 feature maps, as the paper's Omniglot embedding module outputs them."""

    @linen.compact
    def __call__(self, x):
        return linen.relu(linen.Conv(4, (3, 3), padding=1)(x))


def test_relationnet_compares_feature_maps():
    x = jnp.zeros((1, 5, 5, 1))
    learner = learners.relationnet(jmeta.from_linen(MapEmbedding(), x), x, 2, relation=learners.RelationModule(units=3))
    params, state = learner.init(jax.random.key(0))
    assert params.relation["conv0"]["kernel"].shape == (3, 3, 8, 64)  # [class, query] maps: 4 + 4 channels
    assert params.relation["fc0"]["kernel"].shape == (64, 3)  # 5x5 pooled to 2x2, then 1x1 (sec. 3.4)
    images = jax.random.uniform(jax.random.key(1), (4, 5, 5, 1))
    scores, new_state = learner.predict(learner.adapt(params, state, images, jnp.array([0, 1, 0, 1])), state, images)
    assert scores.shape == (4, 2) and isinstance(new_state, learners.RelationState)


# Baseline, Baseline++, fine-tuning -------------------------------------------------------------------------


def test_chen_sgd_is_pytorchs_sgd_with_momentum_dampening_and_weight_decay():
    lr, momentum, dampening, decay = 0.1, 0.9, 0.9, 0.01
    opt = learners.chen_sgd(lr, momentum, dampening, decay)
    p, state = jnp.array([1.0, -2.0]), None
    state = opt.init(p)
    expected, velocity = np.array([1.0, -2.0]), None
    for step in range(5):
        grad = np.array([0.5, 1.0]) * (step + 1)
        updates, state = opt.update(jnp.asarray(grad, jnp.float32), state, p)
        p = optax.apply_updates(p, updates)
        # torch.optim.SGD.step: d_p = grad + wd * p; buf = d_p at first, else momentum * buf + (1 - dampening) * d_p
        d_p = grad + decay * expected
        velocity = d_p if velocity is None else momentum * velocity + (1 - dampening) * d_p
        expected = expected - lr * velocity
    np.testing.assert_allclose(p, expected, rtol=1e-6)


def test_baseline_head_fit_is_scikit_learns_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(12, 6)).astype(np.float32), np.array([0, 1, 2] * 4)
    identity = jmeta.Model(lambda key: ({}, {}), lambda params, state, x: (x, state))
    decay = 0.5  # weight decay on kernel and bias: L2-regularised logistic regression with a penalised intercept
    learner = learners.baseline(identity, jnp.zeros((1, 6)), num_classes=10, ways=3, steps=3000, batch_size=None,
                                optimizer=learners.chen_sgd(0.2, momentum=0.0, dampening=0.0, weight_decay=decay))
    params, state = learner.init(jax.random.key(0))
    fitted = jax.jit(learner.adapt)(params, state, jnp.asarray(features), jnp.asarray(labels))
    ours = jax.nn.softmax(learner.predict(fitted, state, jnp.asarray(features))[0])
    # scikit-learn minimises 0.5 |w|^2 + C * sum of cross-entropies; a constant feature carries the intercept
    augmented = np.concatenate([features, np.ones((12, 1), np.float32)], axis=1)
    reference = sklearn.LogisticRegression(C=1.0 / (decay * len(labels)), fit_intercept=False, tol=1e-10,
                                           max_iter=10_000).fit(augmented, labels)
    np.testing.assert_allclose(ours, reference.predict_proba(augmented), atol=1e-4)
    np.testing.assert_allclose(np.asarray(fitted.head.kernel), reference.coef_[:, :6].T, atol=1e-3)
    np.testing.assert_allclose(np.asarray(fitted.head.bias), reference.coef_[:, 6], atol=1e-3)


def test_minibatch_epochs_visit_every_point_once_in_batches_of_four():
    # loss = sum of the batch's points times w: the gradient of one step is the batch's sum, so after one epoch of
    # plain SGD with rate 1, w has moved by minus the sum of every point (each visited once, in any order)
    points = jnp.arange(1.0, 11.0)
    seen = descend(lambda w, x, t: jnp.sum(x) * w, jnp.zeros(()), points, points, steps=1, optimizer=optax.sgd(1.0),
                   batch_size=4, key=jax.random.key(0))
    assert float(seen) == -55.0


def blobs(num_classes: int, per_class: int, seed: int) -> ClassDataset:
    """Gaussian classes in the first 2 of DIM dimensions, larger noise in the rest."""
    rng = np.random.default_rng(seed)
    means = np.concatenate([rng.normal(scale=2.0, size=(num_classes, 1, 2)), np.zeros((num_classes, 1, DIM - 2))], -1)
    x = means + rng.normal(size=(num_classes, per_class, DIM)) * np.array([0.3] * 2 + [2.0] * (DIM - 2))
    x = x.reshape(-1, DIM).astype(np.float32)
    return ClassDataset(x, np.repeat(np.arange(num_classes), per_class), tuple(f"c{i}" for i in range(num_classes)))


@pytest.mark.slow  # about 15 s of CPU time for each of the three, over 20 s of wall time on a shared 2-core machine
@pytest.mark.parametrize("kind", ["baseline", "baseline++", "finetune"])
def test_pretraining_on_all_classes_lowers_the_loss_and_evaluates_on_episodes(kind):
    model = jmeta.from_linen(jmeta.models.MLP((32, 16)), jnp.zeros((1, DIM)))
    train = make_class_batch_sampler(blobs(30, 20, seed=0), points=32)
    learner = learners.baseline(model, jnp.zeros((1, DIM)), num_classes=30, ways=3, cosine=kind == "baseline++",
                                finetune=kind == "finetune", metrics={"accuracy": jmeta.losses.accuracy})
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-2))
    state, held_out = trainer.init(jax.random.key(0)), train(jax.random.key(10_000), 4)
    before = float(trainer.loss(state.params, state.model_state, held_out)[0])
    for step in range(150):
        state, _ = trainer.step(state, train(jax.random.key(step), 4))
    assert float(trainer.loss(state.params, state.model_state, held_out)[0]) < 0.7 * before
    # the same learner on 3-way 5-shot episodes of unseen classes: 100 epochs of Chen et al.'s head fitting
    test = make_episode_sampler(blobs(10, 20, seed=1), 3, 5, 5)
    results = jmeta.evaluate(learner, state.params, state.model_state, test, jax.random.key(3), num_tasks=20,
                             steps=(0, 100))
    assert results[100]["accuracy"].mean > 0.8 and results[100]["accuracy"].mean > results[0]["accuracy"].mean + 0.4


def test_finetune_trains_the_network_and_baseline_freezes_it(embedding_model):
    task = first_task(_classification_tasks(jax.random.key(0), 1, ways=3, shots=2))
    kwargs = dict(num_classes=5, ways=3, steps=20)
    frozen = learners.baseline(embedding_model, jnp.zeros((1, DIM)), **kwargs)
    tuned = learners.baseline(embedding_model, jnp.zeros((1, DIM)), finetune=True, **kwargs)
    params, state = frozen.init(jax.random.key(1))
    moved = lambda fitted: max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),  # noqa: E731
                                                             fitted.trunk, params.trunk)))
    assert moved(frozen.adapt(params, state, task.support_x, task.support_y)) == 0.0
    assert moved(tuned.adapt(params, state, task.support_x, task.support_y)) > 0.0
    zero = tuned.adapt(params, state, task.support_x, task.support_y, steps=0)
    assert not np.any(np.asarray(zero.head.kernel)) and moved(zero) == 0.0


# Registry and errors ---------------------------------------------------------------------------------------


def _config(**keys):
    config = ml_collections.ConfigDict({"ways": 5, "eval_ways": 3, "meta_lr": 1e-3, "inner_steps": 10, **keys})
    config.learner, config.task = keys.get("learner", ""), keys.get("task", "omniglot")
    return config


def test_registered_builders_make_the_learners(embedding_model):
    example = jnp.zeros((1, DIM))
    loss, metrics = jmeta.losses.cross_entropy, {"accuracy": jmeta.losses.accuracy}
    episodes = TaskFamily(make_episode_sampler(blobs(6, 5, 0), 5, 1, 1), None, None, example, loss, metrics)
    batches = episodes._replace(sample_train=make_class_batch_sampler(blobs(6, 5, 0), 4))
    for name, family in (("matchingnet", episodes), ("relationnet", episodes), ("baseline", batches),
                         ("baseline++", batches), ("finetune", batches)):
        component = LEARNERS[name]
        assert component.properties["embedding"] and component.properties["any_ways"]
        config = _config(learner=name, num_classes=6, fce=True)
        learner, optimizer = component.builder(config, embedding_model, family)
        assert isinstance(learner, jmeta.Learner) and isinstance(optimizer, optax.GradientTransformation)
    with pytest.raises(ValueError, match="learner 'baseline' pre-trains on minibatches over all training classes: set "
                       "task='all-classes' and dataset='omniglot'"):
        LEARNERS["baseline"].builder(_config(learner="baseline", num_classes=6), embedding_model, episodes)
    with pytest.raises(ValueError, match=r"num_classes must be the number of training classes \(6 in this data"):
        LEARNERS["baseline"].builder(_config(learner="baseline", num_classes=7), embedding_model, batches)


def test_bad_arguments_are_named(embedding_model):
    example = jnp.zeros((1, DIM))
    with pytest.raises(ValueError, match=r"ways must be a positive integer \(>= 1\); got 0"):
        learners.matchingnet(embedding_model, ways=0)
    with pytest.raises(ValueError, match="scale must be a finite number > 0; got -1"):
        learners.matchingnet(embedding_model, ways=3, scale=-1)
    with pytest.raises(ValueError, match="matchingnet with fce=True needs example_x"):
        learners.matchingnet(embedding_model, ways=3, fce=True)
    with pytest.raises(ValueError, match=r"processing_steps must be a positive integer \(>= 1\); got 0"):
        learners.matchingnet(embedding_model, ways=3, fce=True, example_x=example, processing_steps=0)
    with pytest.raises(TypeError, match="relation must be a flax.linen.Module; got function"):
        learners.relationnet(embedding_model, example, 3, relation=lambda x: x)
    with pytest.raises(ValueError, match=r"hidden must be a positive integer \(>= 1\); got 0"):
        learners.RelationModule(hidden=0)
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer \(>= 1\); got 0"):
        learners.baseline(embedding_model, example, num_classes=0, ways=5)
    with pytest.raises(TypeError, match="cosine must be a bool"):
        learners.baseline(embedding_model, example, num_classes=4, ways=5, cosine="yes")
    with pytest.raises(ValueError, match="momentum must be a finite number >= 0; got -0.9"):
        learners.chen_sgd(momentum=-0.9)
    with pytest.raises(ValueError, match="a cosine head cannot start at zero"):
        init_head(None, 4, 3, cosine=True)
    with pytest.raises(ValueError, match=r"points must be at least 2 \(one support and one query point\); got 1"):
        make_class_batch_sampler(blobs(3, 2, 0), points=1)
    learner = learners.baseline(embedding_model, example, num_classes=4, ways=3)
    params, state = learner.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"support labels must be integers in \[0, ways\) of shape \(points,\)"):
        learner.adapt(params, state, jnp.zeros((6, DIM)), jnp.zeros((6, 1)))
    with pytest.raises(ValueError, match="baseline's support labels y must hold class labels in 0..2"):
        learner.adapt(params, state, jnp.zeros((2, DIM)), jnp.array([0, 3]))
    one_hot = jnp.eye(5)[:2]
    with pytest.raises(ValueError, match=r"one-hot targets must have num_classes=4 columns; got support_y \(2, 5\)"):
        learner.task_loss(params, state, jmeta.Task(jnp.zeros((2, DIM)), one_hot, jnp.zeros((2, DIM)), one_hot))
    relation = learners.relationnet(embedding_model, example, 3)
    params, state = relation.init(jax.random.key(0))
    with pytest.raises(ValueError, match="relationnet's support labels y must hold class labels in 0..2"):
        relation.adapt(params, state, jnp.zeros((2, DIM)), jnp.array([0, 3]))


OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"


@pytest.mark.slow  # loads real Omniglot and pre-trains 20 steps (~1 min)
@pytest.mark.skipif(not (OMNIGLOT / "images_background.zip").is_file(), reason=f"real Omniglot not found at {OMNIGLOT}")
def test_all_classes_family_pretrains_baselinepp_on_omniglot_and_tests_on_its_episodes():
    from jmeta.experiment import load_config
    from jmeta.pretraining import all_classes_family

    config = load_config(str(REPO / "experiments" / "omniglot_baselinepp.py"), [f"data_dir={OMNIGLOT}"])
    family = all_classes_family(config)
    assert family.sample_train.num_classes == config.num_classes == 4112  # 1028 characters x 4 rotations
    model = jmeta.from_linen(jmeta.models.Conv4(None, downsample="maxpool", pool="flatten"), family.example_input)
    learner, optimizer = LEARNERS[config.learner].builder(config, model, family)
    trainer = jmeta.meta_trainer(learner, optimizer)
    state = trainer.init(jax.random.key(0))
    for step in range(20):
        state, metrics = trainer.step(state, family.sample_train(jax.random.key(step), 1))
    assert np.isfinite(metrics["loss"])
    results = jmeta.evaluate(learner, state.params, state.model_state, family.sample_test, jax.random.key(1),
                             num_tasks=10, steps=(config.inner_steps,))
    assert 0.0 <= results[100]["accuracy"].mean <= 1.0 and results[100]["accuracy"].tasks == 10
