"""Meta-SGD, ANIL, Reptile, ProtoNet, iMAML and MAML++: each checked against MAML or a closed form, trained
briefly through the unchanged meta_trainer, and fed bad arguments."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import first_task
from flax import linen

import jmeta
from jmeta import learners

mse = jmeta.losses.mse


def _value_and_grad(learner, task, steps=None):
    """``(params, state) -> ((loss, TaskOutput), meta-gradient)``, compiled."""
    return jax.jit(jax.value_and_grad(lambda p, s: learner.task_loss(p, s, task, steps), has_aux=True))


def _assert_close(actual, expected, rtol=1e-5):
    """Leafwise closeness, with an absolute tolerance of ``rtol`` times each expected leaf's largest entry (float32
    round-off in gradients whose entries span orders of magnitude)."""
    chex.assert_trees_all_equal_structs(actual, expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


class BatchNormNet(linen.Module):
    """Dense, BatchNorm on batch statistics, ReLU, Dense."""

    @linen.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = linen.BatchNorm(use_running_average=False, momentum=0.5)(linen.Dense(8)(x))
        return linen.Dense(1)(linen.relu(x))


@pytest.fixture
def bn_model() -> jmeta.Model:
    return jmeta.from_linen(BatchNormNet(), jnp.zeros((2, 1)))


# Meta-SGD -------------------------------------------------------------------------------------------------


def test_metasgd_with_equal_fixed_rates_equals_maml(mlp_model, sine_tasks):
    task = first_task(sine_tasks)
    metasgd = learners.metasgd(mlp_model, mse, inner_lr=0.1, steps=2)
    maml = jmeta.maml(mlp_model, mse, inner_lr=0.1, steps=2)
    meta_params, state = metasgd.init(jax.random.key(0))
    assert isinstance(meta_params, learners.MetaSGDParams)
    chex.assert_trees_all_equal_shapes(meta_params.params, meta_params.lrs)

    (loss, _), grads = _value_and_grad(metasgd, task)(meta_params, state)
    (maml_loss, _), maml_grads = _value_and_grad(maml, task)(meta_params.params, state)
    np.testing.assert_allclose(loss, maml_loss, rtol=1e-6)
    _assert_close(grads.params, maml_grads)
    assert all(float(np.max(np.abs(g))) > 0 for g in jax.tree.leaves(grads.lrs)), "every rate is meta-learned"


def test_metasgd_steps_by_each_entrys_rate(mlp_model, sine_tasks):
    task = first_task(sine_tasks)
    learner = learners.metasgd(mlp_model, mse, inner_lr=0.1)
    meta_params, state = learner.init(jax.random.key(0))
    keys = iter(jax.random.split(jax.random.key(5), 10))
    lrs = jax.tree.map(lambda r: jax.random.uniform(next(keys), r.shape, maxval=0.2), meta_params.lrs)
    adapted = jax.jit(learner.adapt)(meta_params._replace(lrs=lrs), state, task.support_x, task.support_y)
    grads = jax.grad(lambda p: mse(mlp_model.apply(p, state, task.support_x)[0], task.support_y))(meta_params.params)
    _assert_close(adapted, jax.tree.map(lambda p, r, g: p - r * g, meta_params.params, lrs, grads))


# ANIL -----------------------------------------------------------------------------------------------------


def _is_head(path):
    return path[0] == "Dense_2"


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_equals_maml_with_the_bodys_inner_updates_masked(mlp_model, sine_tasks, first_order):
    task = first_task(sine_tasks)
    anil = learners.anil(mlp_model, mse, _is_head, inner_lr=0.1, steps=2, first_order=first_order)
    params, state = anil.init(jax.random.key(0))
    head = jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == "Dense_2", params)
    body = jax.tree.map(lambda h: not h, head)
    masked_sgd = optax.chain(optax.masked(optax.sgd(0.1), head), optax.masked(optax.set_to_zero(), body))
    maml = jmeta.maml(mlp_model, mse, inner_optimizer=masked_sgd, steps=2, first_order=first_order)

    (loss, _), grads = _value_and_grad(anil, task)(params, state)
    (maml_loss, _), maml_grads = _value_and_grad(maml, task)(params, state)
    np.testing.assert_allclose(loss, maml_loss, rtol=1e-6)
    _assert_close(grads, maml_grads)
    assert float(np.max(np.abs(grads["Dense_0"]["kernel"]))) > 0, "the body is meta-learned"

    adapted = jax.jit(anil.adapt)(params, state, task.support_x, task.support_y)
    chex.assert_trees_all_equal(adapted["Dense_0"], params["Dense_0"])
    assert not np.allclose(adapted["Dense_2"]["kernel"], params["Dense_2"]["kernel"])
    by_mask = learners.anil(mlp_model, mse, head, inner_lr=0.1, steps=2, first_order=first_order)
    chex.assert_trees_all_close(jax.jit(by_mask.adapt)(params, state, task.support_x, task.support_y), adapted)


# Reptile --------------------------------------------------------------------------------------------------


def _quadratic_problem(centres):
    """Tasks whose loss is 0.5 ||theta - c||^2: the model outputs theta for every point, targets are c."""
    dim = centres.shape[1]
    model = jmeta.Model(
        lambda key: ({"theta": jnp.zeros(dim)}, {}),
        lambda params, state, x: (jnp.broadcast_to(params["theta"], (x.shape[0], dim)), state),
    )
    targets = jnp.broadcast_to(centres[:, None, :], (centres.shape[0], 4, dim))
    tasks = jmeta.Task(jnp.zeros((centres.shape[0], 4, 1)), targets, jnp.zeros((centres.shape[0], 4, 1)), targets)
    return model, tasks


def _half_squared_distance(predictions, targets):
    return 0.5 * jnp.sum(jnp.mean(jnp.square(predictions - targets), axis=0))


@pytest.mark.parametrize("steps", [1, 3])
def test_reptile_update_on_a_quadratic_matches_the_closed_form(steps):
    centres = jnp.array([[1.0, -2.0], [3.0, 0.5], [-1.0, 1.0]])
    model, tasks = _quadratic_problem(centres)
    a, eps = 0.3, 0.5
    learner = learners.reptile(model, _half_squared_distance, inner_optimizer=optax.sgd(a), steps=steps)
    theta0 = jnp.array([0.5, 0.25])
    params = {"theta": theta0}

    (loss, output), grad = _value_and_grad(learner, first_task(tasks))(params, {})
    shrink = (1 - a) ** steps  # theta' - c = (1 - a)^k (theta - c)
    query_loss = 0.5 * shrink**2 * jnp.sum(jnp.square(theta0 - centres[0]))
    np.testing.assert_allclose(output.metrics["loss"], query_loss, rtol=1e-6)
    np.testing.assert_allclose(loss, query_loss, rtol=1e-6)
    np.testing.assert_allclose(grad["theta"], (1 - shrink) * (theta0 - centres[0]), rtol=1e-6)

    trainer = jmeta.meta_trainer(learner, optax.sgd(eps))
    state = trainer.init(jax.random.key(0))._replace(params={"theta": jnp.array(theta0)})  # step donates it
    state, _ = trainer.step(state, tasks)
    expected = theta0 + eps * (1 - shrink) * jnp.mean(centres - theta0, axis=0)
    np.testing.assert_allclose(state.params["theta"], expected, rtol=1e-6)


def test_reptile_meta_optimizer_anneals_eps_linearly():
    optimizer = learners.reptile_meta_optimizer(1.0, steps=4, final=0.2)
    opt_state = optimizer.init(jnp.zeros(()))
    sizes = []
    for _ in range(6):
        update, opt_state = optimizer.update(jnp.ones(()), opt_state)
        sizes.append(-float(update))
    np.testing.assert_allclose(sizes, [1.0, 0.8, 0.6, 0.4, 0.2, 0.2], rtol=1e-6)


def test_non_transductive_prediction_sees_the_support_set_and_one_query_point(bn_model, sine_tasks):
    task = first_task(sine_tasks)
    params, state = bn_model.init(jax.random.key(0))
    support_x, query_x = task.support_x, task.query_x
    non_transductive = jax.jit(functools.partial(learners.predict_non_transductive, bn_model.apply))
    apply = jax.jit(bn_model.apply)
    predictions, _ = non_transductive(params, state, support_x, query_x)
    alone, _ = apply(params, state, jnp.concatenate([support_x, query_x[3:4]]))
    np.testing.assert_allclose(predictions[3], alone[-1], rtol=1e-5)
    transductive, _ = apply(params, state, query_x)
    assert not np.allclose(transductive, predictions, rtol=1e-3), "batch statistics make the two differ"

    learner = learners.reptile(bn_model, mse, inner_lr=0.01, steps=2, transductive=False)
    adapted = jax.jit(learner.adapt)(params, state, support_x, task.support_y)
    expected, _ = non_transductive(adapted, state, support_x, query_x)
    _, output = jax.jit(learner.task_loss)(params, state, task)
    np.testing.assert_allclose(output.metrics["loss"], mse(expected, task.query_y), rtol=1e-5)


# ProtoNet -------------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("num_tasks", "ways", "shots", "queries", "dim"))
def _classification_tasks(key, num_tasks, ways=3, shots=4, queries=5, dim=8):
    """Gaussian classes that differ in the first 2 input dimensions only; the other 6 are larger noise."""
    means_key, support_key, query_key = jax.random.split(key, 3)
    means = jax.random.normal(means_key, (num_tasks, ways, 2)) * 2.0
    means = jnp.concatenate([means, jnp.zeros((num_tasks, ways, dim - 2))], axis=-1)
    scale = jnp.concatenate([jnp.full(2, 0.3), jnp.full(dim - 2, 2.0)])

    def points(k, per_class):
        labels = jnp.tile(jnp.arange(ways), per_class)
        noise = jax.random.normal(k, (num_tasks, labels.size, dim)) * scale
        return means[:, labels] + noise, jnp.broadcast_to(labels, (num_tasks, labels.size))

    return jmeta.Task(*points(support_key, shots), *points(query_key, queries))


@pytest.fixture
def embedding_model() -> jmeta.Model:
    return jmeta.from_linen(jmeta.models.MLP((16, 4)), jnp.zeros((1, 8)))


def test_protonet_logits_are_a_linear_classifier_on_the_embeddings(embedding_model):
    task = first_task(_classification_tasks(jax.random.key(0), 1))
    learner = learners.protonet(embedding_model, ways=3)
    params, state = learner.init(jax.random.key(1))
    prototypes = jax.jit(learner.adapt)(params, state, task.support_x, task.support_y)
    logits, _ = jax.jit(learner.predict)(prototypes, state, task.query_x)

    embed = jax.jit(embedding_model.apply)
    support = embed(params, state, task.support_x)[0]
    centres = jnp.stack([support[task.support_y == k].mean(0) for k in range(3)])
    np.testing.assert_allclose(prototypes.prototypes, centres, rtol=1e-5, atol=1e-6)
    query = embed(params, state, task.query_x)[0]
    linear = query @ (2 * centres).T - jnp.sum(jnp.square(centres), axis=1)
    np.testing.assert_allclose(logits - linear, jnp.broadcast_to(-jnp.sum(query**2, 1)[:, None], logits.shape), 1e-4)
    np.testing.assert_allclose(jax.nn.softmax(logits), jax.nn.softmax(linear), rtol=1e-4, atol=1e-6)


def test_protonet_trained_with_more_ways_evaluates_fewer(embedding_model):
    task = first_task(_classification_tasks(jax.random.key(0), 1, ways=3))
    wide = learners.protonet(embedding_model, ways=5)
    narrow = learners.protonet(embedding_model, ways=3)
    params, state = wide.init(jax.random.key(1))
    (wide_loss, _), grads = _value_and_grad(wide, task, steps=5)(params, state)
    (narrow_loss, _), _ = _value_and_grad(narrow, task)(params, state)
    np.testing.assert_allclose(wide_loss, narrow_loss, rtol=1e-5)
    assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(grads))
    prototypes = jax.jit(wide.adapt)(params, state, task.support_x, task.support_y)
    wide_logits, _ = jax.jit(wide.predict)(prototypes, state, task.query_x)
    assert wide_logits.shape == (15, 5) and bool(np.all(np.asarray(wide_logits)[:, 3:] == -np.inf))


# iMAML ----------------------------------------------------------------------------------------------------


def test_imaml_meta_gradient_equals_the_converged_unrolled_gradient():
    with jax.enable_x64(True):
        linear = jmeta.Model(
            lambda key: ({"w": jnp.array([[0.3], [-0.2], [0.1]]), "b": jnp.array([0.05])}, {}),
            lambda params, state, x: (x @ params["w"] + params["b"], state),
        )
        keys = jax.random.split(jax.random.key(0), 4)
        x_s, x_q = jax.random.normal(keys[0], (8, 3)), jax.random.normal(keys[1], (8, 3))
        w_true = jnp.array([[1.0], [2.0], [-1.0]])
        task = jmeta.Task(x_s, x_s @ w_true + 0.1 * jax.random.normal(keys[2], (8, 1)), x_q, x_q @ w_true)
        lam, lr, steps = 2.0, 0.1, 400
        learner = learners.imaml(linear, mse, inner_lr=lr, steps=steps, lam=lam, cg_steps=8)
        params, state = linear.init(jax.random.key(0))
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        (loss, _), grads = _value_and_grad(learner, task)(params, state)

        def unrolled(theta):
            def step(phi, _):
                g = jax.grad(lambda p: mse(linear.apply(p, state, x_s)[0], task.support_y))(phi)
                return jax.tree.map(lambda p, gi, t: p - lr * (gi + lam * (p - t)), phi, g, theta), None

            phi, _ = jax.lax.scan(step, theta, length=steps)
            return mse(linear.apply(phi, state, x_q)[0], task.query_y)

        expected_loss, expected = jax.jit(jax.value_and_grad(unrolled))(params)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-10)
        _assert_close(grads, expected, rtol=1e-8)
        adapted = learner.adapt(params, state, x_s, task.support_y)
        query_grad = jax.grad(lambda p: mse(linear.apply(p, state, x_q)[0], task.query_y))(adapted)
        assert not np.allclose(grads["w"], query_grad["w"], rtol=1e-3), "the implicit correction matters"


def test_imaml_backward_pass_does_not_unroll_the_inner_loop(mlp_model, sine_tasks):
    learner = learners.imaml(mlp_model, mse, inner_lr=0.01, steps=50, cg_steps=3)
    params, state = learner.init(jax.random.key(0))
    grad_fn = jax.grad(lambda p: learner.task_loss(p, state, first_task(sine_tasks))[0])
    primitives = _primitives(jax.make_jaxpr(grad_fn)(params).jaxpr)
    assert primitives.count("scan") == 1, "one inner loop, run forward only: no transposed scan"
    assert "while" in primitives, "conjugate gradients"
    assert all(bool(np.all(np.isfinite(g))) for g in jax.tree.leaves(jax.jit(grad_fn)(params)))


def _primitives(jaxpr):
    """The primitive names of a jaxpr's equations, and of those of every sub-jaxpr (scan, cond, custom rules)."""
    names = []
    for eqn in jaxpr.eqns:
        names.append(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    names.extend(_primitives(inner))
    return names


# MAML++ ---------------------------------------------------------------------------------------------------


def test_msl_weights_anneal_to_the_last_step():
    np.testing.assert_allclose(learners.msl_weights(0, 4, 10), [0.25] * 4)
    np.testing.assert_allclose(learners.msl_weights(5, 4, 10), [0.125, 0.125, 0.125, 0.625])
    np.testing.assert_allclose(learners.msl_weights(30, 4, 10), [0.0, 0.0, 0.0, 1.0])


def _at_step(state, step):
    return state._replace(step=jnp.asarray(step, jnp.int32))


def test_mamlpp_with_last_step_loss_only_equals_maml(mlp_model, sine_tasks):
    task = first_task(sine_tasks)
    learner = learners.mamlpp(mlp_model, mse, inner_lr=0.1, steps=2, msl_steps=4, lslr=False)
    meta_params, state = learner.init(jax.random.key(0))
    assert meta_params.lrs is None
    value_and_grad = _value_and_grad(learner, task)
    # MAML's query losses and meta-gradients after 1 and 2 inner steps.
    maml = jax.jit(lambda p: [_value_and_grad(jmeta.maml(mlp_model, mse, 0.1, k), task)(p, {}) for k in (1, 2)])
    (maml_losses, maml_grads) = zip(*[(loss, grads) for (loss, _), grads in maml(meta_params.params)], strict=True)

    (loss, output), grads = value_and_grad(meta_params, _at_step(state, 4))  # msl_weights(4, 2, 4) == (0, 1)
    np.testing.assert_allclose(loss, maml_losses[1], rtol=1e-6)
    _assert_close(grads.params, maml_grads[1])
    assert int(output.model_state.step) == 5

    # Before that, the multi-step loss weighs MAML's query losses after 1 and 2 steps.
    for step, weights in [(0, (0.5, 0.5)), (2, (0.25, 0.75))]:
        (loss, output), grads = value_and_grad(meta_params, _at_step(state, step))
        np.testing.assert_allclose(loss, np.dot(weights, maml_losses), rtol=1e-6)
        _assert_close(grads.params, jax.tree.map(lambda a, b, w=weights: w[0] * a + w[1] * b, *maml_grads))
        np.testing.assert_allclose(output.metrics["loss"], maml_losses[1], rtol=1e-6)


def test_mamlpp_anneals_from_first_to_second_order(mlp_model, sine_tasks):
    task = first_task(sine_tasks)
    learner = learners.mamlpp(mlp_model, mse, inner_lr=0.1, steps=2, first_order_steps=3, lslr=False)
    meta_params, state = learner.init(jax.random.key(0))
    value_and_grad = _value_and_grad(learner, task)
    _, first = _value_and_grad(jmeta.fomaml(mlp_model, mse, 0.1, 2), task)(meta_params.params, {})
    _, second = _value_and_grad(jmeta.maml(mlp_model, mse, 0.1, 2), task)(meta_params.params, {})
    _assert_close(value_and_grad(meta_params, _at_step(state, 2))[1].params, first)
    _assert_close(value_and_grad(meta_params, _at_step(state, 3))[1].params, second)


def test_mamlpp_learns_a_rate_per_layer_and_step(mlp_model, sine_tasks):
    task = first_task(sine_tasks)
    learner = learners.mamlpp(mlp_model, mse, inner_lr=0.1, steps=2)
    meta_params, state = learner.init(jax.random.key(0))
    assert all(r.shape == (2,) for r in jax.tree.leaves(meta_params.lrs))
    rates = jax.tree.map(lambda r: r * jnp.array([1.0, 0.5]), meta_params.lrs)
    adapted = jax.jit(learner.adapt)(meta_params._replace(lrs=rates), state, task.support_x, task.support_y)

    def support_grad(p):
        return jax.grad(lambda q: mse(mlp_model.apply(q, {}, task.support_x)[0], task.support_y))(p)

    expected = meta_params.params
    for rate in (0.1, 0.05):
        expected = jax.tree.map(lambda p, g, r=rate: p - r * g, expected, support_grad(expected))
    _assert_close(adapted.params, expected)
    _, grads = _value_and_grad(learner, task)(meta_params, state)
    assert all(bool(np.all(np.asarray(g) != 0)) for g in jax.tree.leaves(grads.lrs))


def test_mamlpp_per_step_batch_norm_weights_and_statistics(bn_model, sine_tasks):
    task = first_task(sine_tasks)
    learner = learners.mamlpp(bn_model, mse, inner_lr=0.1, steps=2, lslr=False, bnwb=True, bnrs=True)
    meta_params, state = learner.init(jax.random.key(0))
    assert meta_params.params["BatchNorm_0"]["scale"].shape == (2, 8)
    assert state.model["batch_stats"]["BatchNorm_0"]["mean"].shape == (2, 8)

    # The per-step BatchNorm copies start equal, so the loss is MAML's with BatchNorm left out of the inner
    # loop, and their meta-gradients add up to MAML's.
    params, model_state = bn_model.init(jax.random.key(0))
    is_bn = jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == "BatchNorm_0", params)
    masked = optax.chain(
        optax.masked(optax.sgd(0.1), jax.tree.map(lambda b: not b, is_bn)), optax.masked(optax.set_to_zero(), is_bn)
    )
    maml = jmeta.maml(bn_model, mse, inner_optimizer=masked, steps=2)
    (maml_loss, _), maml_grads = _value_and_grad(maml, task)(params, model_state)
    (loss, output), grads = _value_and_grad(learner, task)(meta_params, state)
    np.testing.assert_allclose(loss, maml_loss, rtol=1e-5)
    summed = {**grads.params, "BatchNorm_0": jax.tree.map(lambda g: g.sum(0), grads.params["BatchNorm_0"])}
    _assert_close(summed, maml_grads, rtol=1e-4)
    assert all(bool(np.all(np.asarray(g) != 0)) for g in jax.tree.leaves(grads.params["BatchNorm_0"]))

    # One inner step updates the statistics of step 0 only; two steps update both copies.
    initial = state.model["batch_stats"]["BatchNorm_0"]["mean"]
    one = jax.jit(learner.task_loss, static_argnames="steps")(meta_params, state, task, steps=1)[1]
    one = one.model_state.model["batch_stats"]["BatchNorm_0"]
    assert not np.allclose(one["mean"][0], initial[0]) and np.array_equal(one["mean"][1], initial[1])
    two = output.model_state.model["batch_stats"]["BatchNorm_0"]
    assert not np.allclose(two["mean"][1], initial[1]) and not np.allclose(two["mean"][0], two["mean"][1])


def test_mamlpp_meta_optimizer_is_cosine_annealed():
    optimizer = learners.mamlpp_meta_optimizer(1e-3, steps=10, final=1e-5)
    schedule = optax.cosine_decay_schedule(1e-3, 10, alpha=1e-2)
    assert float(schedule(0)) == pytest.approx(1e-3) and float(schedule(10)) == pytest.approx(1e-5)
    params = jnp.zeros(())
    opt_state = optimizer.init(params)
    for _ in range(11):  # Adam's first update is the learning rate times the gradient's sign
        update, opt_state = optimizer.update(jnp.ones(()), opt_state, params)
    assert float(update) == pytest.approx(-1e-5, rel=1e-3)


# Training through the unchanged meta_trainer --------------------------------------------------------------

SINUSOID_LEARNERS = {
    "metasgd": lambda m: learners.metasgd(m, mse, inner_lr=0.01, steps=1),
    "anil": lambda m: learners.anil(m, mse, _is_head, inner_lr=0.01, steps=1),
    "reptile": lambda m: learners.reptile(m, mse, inner_lr=0.01, steps=5),
    "imaml": lambda m: learners.imaml(m, mse, inner_lr=0.01, steps=5, lam=1.0, cg_steps=3),
    "mamlpp": lambda m: learners.mamlpp(m, mse, inner_lr=0.01, steps=2, msl_steps=20, first_order_steps=10),
}


_sinusoids = jax.jit(functools.partial(jmeta.tasks.sinusoid_tasks, num_tasks=8, shots=10, queries=10))


def _train(learner, sample, steps=100):
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-3))
    state = trainer.init(jax.random.key(0))
    held_out = sample(jax.random.key(10_000))

    def held_out_loss(state):  # the loss before a step on held-out tasks, from a copy (step donates its input)
        return float(trainer.step(jax.tree.map(np.array, state), held_out)[1]["loss"])

    before = held_out_loss(state)
    for i in range(steps):
        state, metrics = trainer.step(state, sample(jax.random.key(i)))
        assert np.isfinite(metrics["loss"])
    return state, before, held_out_loss(state)


@pytest.mark.parametrize("name", list(SINUSOID_LEARNERS))
def test_meta_training_lowers_the_query_loss(mlp_model, name):
    state, before, after = _train(SINUSOID_LEARNERS[name](mlp_model), _sinusoids)
    assert after < 0.95 * before, (before, after)
    if name == "mamlpp":
        assert int(state.model_state.step) == 100


def test_protonet_meta_training_lowers_the_query_loss(embedding_model):
    learner = learners.protonet(embedding_model, ways=3, metrics={"accuracy": jmeta.losses.accuracy})
    _, before, after = _train(learner, functools.partial(_classification_tasks, num_tasks=8))
    assert after < 0.6 * before, (before, after)


def test_mamlpp_with_batch_norm_trains(bn_model):
    learner = learners.mamlpp(bn_model, mse, inner_lr=0.01, steps=2, bnwb=True, bnrs=True)
    state, before, after = _train(learner, _sinusoids, steps=60)
    assert after < 0.95 * before, (before, after)
    assert state.model_state.model["batch_stats"]["BatchNorm_0"]["var"].shape == (2, 8)


# Bad arguments --------------------------------------------------------------------------------------------


def test_bad_arguments_are_named(mlp_model, bn_model):
    with pytest.raises(ValueError, match="inner_lr must be a finite number > 0; got 0"):
        learners.metasgd(mlp_model, mse, inner_lr=0)
    with pytest.raises(TypeError, match="first_order must be a bool"):
        learners.metasgd(mlp_model, mse, first_order="yes")
    with pytest.raises(ValueError, match="head must select at least one parameter array; it selected none of"):
        learners.anil(mlp_model, mse, lambda path: path[0] == "head", inner_lr=0.1)
    with pytest.raises(
        TypeError, match=r"head must return a bool for each parameter path; got 'Dense_0' for \('Dense_0', 'bias'\)"
    ):
        learners.anil(mlp_model, mse, lambda path: path[0], inner_lr=0.1)
    with pytest.raises(ValueError, match="head must be a predicate over parameter paths .* or a pytree of bools"):
        learners.anil(mlp_model, mse, {"Dense_2": True}, inner_lr=0.1)
    with pytest.raises(ValueError, match="give exactly one of inner_lr .* Adam with beta1=0"):
        learners.reptile(mlp_model, mse)
    with pytest.raises(TypeError, match="inner_optimizer must be an optax.GradientTransformation; got float"):
        learners.reptile(mlp_model, mse, inner_optimizer=0.1)
    with pytest.raises(ValueError, match="eps must be a finite number > 0; got -1"):
        learners.reptile_meta_optimizer(-1, steps=10)
    with pytest.raises(ValueError, match="final must be a finite number >= 0; got -0.5"):
        learners.reptile_meta_optimizer(1.0, steps=10, final=-0.5)
    with pytest.raises(ValueError, match=r"ways must be a positive integer \(>= 1\); got 0"):
        learners.protonet(mlp_model, ways=0)
    with pytest.raises(ValueError, match="lam must be a finite number > 0; got 0.0"):
        learners.imaml(mlp_model, mse, inner_lr=0.1, lam=0.0)
    with pytest.raises(ValueError, match=r"cg_steps must be a positive integer \(>= 1\); got 0"):
        learners.imaml(mlp_model, mse, inner_lr=0.1, cg_steps=0)
    with pytest.raises(ValueError, match=r"msl_steps must be a non-negative integer \(>= 0\); got -1"):
        learners.mamlpp(mlp_model, mse, msl_steps=-1)
    with pytest.raises(ValueError, match="bnwb=True needs BatchNorm parameters, but batch_norm matched none"):
        learners.mamlpp(mlp_model, mse, bnwb=True)
    with pytest.raises(ValueError, match="bnrs=True needs BatchNorm model states, but batch_norm matched none"):
        learners.mamlpp(bn_model, mse, bnrs=True, batch_norm=lambda path: path[-1] == "scale")
    with pytest.raises(TypeError, match="batch_norm must be a predicate over paths"):
        learners.mamlpp(bn_model, mse, batch_norm="BatchNorm")
    with pytest.raises(ValueError, match=r"final must be at most learning_rate \(0.001\); got 0.1"):
        learners.mamlpp_meta_optimizer(1e-3, steps=10, final=0.1)


def test_protonet_refuses_non_integer_labels(embedding_model):
    learner = learners.protonet(embedding_model, ways=3)
    params, state = learner.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"support labels must be integers in \[0, ways\) of shape \(points,\)"):
        learner.adapt(params, state, jnp.zeros((6, 8)), jnp.zeros((6, 1)))
    with pytest.raises(ValueError, match=r"steps must be a non-negative integer \(>= 0\); got -1"):
        learner.adapt(params, state, jnp.zeros((6, 8)), jnp.zeros(6, jnp.int32), steps=-1)
