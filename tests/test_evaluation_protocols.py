"""Evaluation protocols: class labels checked against the model's outputs, test-time BatchNorm modes,
and diverged tasks counted beside the estimates."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen

import jmeta
from jmeta.batch_norm import BATCH_NORM_MODES, batch_norm_mode
from jmeta.evaluation import Estimate


def _classification_task(support_y, query_y):
    keys = jax.random.split(jax.random.key(0), 2)
    return jmeta.Task(
        jax.random.normal(keys[0], (5, 4)), jnp.asarray(support_y), jax.random.normal(keys[1], (5, 4)),
        jnp.asarray(query_y),
    )


@pytest.fixture
def five_way():
    model = jmeta.from_linen(jmeta.models.MLP((16, 5)), jnp.zeros((1, 4)))
    return jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.1, metrics={"accuracy": jmeta.losses.accuracy})


@pytest.mark.parametrize(
    ("labels", "outside"), [(np.arange(1, 6), "[5]"), (np.array([-1, 0, 1, 2, 3]), "[-1]")], ids=["1..5", "-1"]
)
def test_labels_outside_the_heads_outputs_are_refused_before_compiling(five_way, labels, outside):
    trainer = jmeta.meta_trainer(five_way, optax.adam(1e-3))
    state = trainer.init(jax.random.key(0))
    bad = jax.tree.map(lambda a: a[None], _classification_task(labels, np.arange(5)))
    outside = re.escape(outside)
    message = r"tasks.support_y must hold class labels in 0..4 \(the model has 5 outputs\); got values outside: "
    message += outside
    with pytest.raises(ValueError, match=message):
        trainer.step(state, bad)
    with pytest.raises(ValueError, match=rf"the support labels must hold class labels in 0..4.*{outside}"):
        five_way.adapt(state.params, state.model_state, bad.support_x[0], bad.support_y[0])
    with pytest.raises(ValueError, match=rf"labels must hold class labels in 0..4.*{outside}"):
        jmeta.losses.cross_entropy(jnp.zeros((5, 5)), jnp.asarray(labels))
    protonet = jmeta.learners.protonet(jmeta.from_linen(jmeta.models.MLP((8,)), jnp.zeros((1, 4))), ways=5)
    embedding_params, _ = protonet.init(jax.random.key(0))
    with pytest.raises(ValueError, match=rf"protonet's support labels y must hold class labels in 0..4.*{outside}"):
        protonet.adapt(embedding_params, {}, bad.support_x[0], bad.support_y[0])

    swapped = bad._replace(support_y=bad.query_y, query_y=bad.support_y)

    def sample(key, n):
        return jax.tree.map(lambda a: jnp.repeat(a, n, axis=0), swapped)

    expected = rf"the tasks of sample_tasks.query_y must hold class labels in 0..4.*{outside}"
    with pytest.raises(ValueError, match=expected):
        jmeta.evaluate(five_way, state.params, state.model_state, jax.tree_util.Partial(sample), jax.random.key(1),
                       num_tasks=4, steps=(1,))


def test_out_of_range_labels_under_jit_give_nan_loss_and_gradient_not_a_dropped_target():
    logits = jnp.array([[2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    loss_and_grad = jax.jit(jax.value_and_grad(jmeta.losses.cross_entropy))
    loss, grad = loss_and_grad(logits, jnp.array([0, 5]))
    assert np.isnan(loss) and np.all(np.isnan(grad[1]))
    assert np.isnan(jax.jit(jmeta.losses.cross_entropy)(logits, jnp.array([-1, 1])))
    assert np.isnan(jax.jit(jmeta.losses.accuracy)(logits, jnp.array([0, 5])))
    expected = np.mean([-jax.nn.log_softmax(logits[0])[0], -jax.nn.log_softmax(logits[1])[1]])
    np.testing.assert_allclose(jax.jit(jmeta.losses.cross_entropy)(logits, jnp.array([0, 1])), expected, rtol=1e-6)


class _BatchNormNet(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = linen.Dense(6)(x)
        x = linen.BatchNorm(use_running_average=False, momentum=0.9)(x)
        return linen.Dense(3)(linen.relu(x))


def _bn_model():
    return jmeta.from_linen(_BatchNormNet(), jnp.zeros((1, 4)))


def test_support_mode_normalises_queries_with_the_support_sets_statistics_only():
    model = _bn_model()
    params, state = model.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 3)
    support, queries = jax.random.normal(keys[0], (5, 4)), 3.0 + jax.random.normal(keys[1], (8, 4))
    other_queries = queries.at[1:].set(jax.random.normal(keys[2], (7, 4)))
    with batch_norm_mode("support", support):
        together = model.apply(params, state, queries)[0]
        others_changed = model.apply(params, state, other_queries)[0]
        alone = model.apply(params, state, queries[:1])[0]
    np.testing.assert_allclose(together[0], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(together[0], others_changed[0], rtol=1e-5, atol=1e-6)
    # By hand: the first layer's features normalised by their mean and (biased) variance over the support set.
    dense = lambda p, x: x @ p["kernel"] + p["bias"]  # noqa: E731
    h_support, h_query = dense(params["Dense_0"], support), dense(params["Dense_0"], queries)
    mean, var = h_support.mean(0), h_support.var(0)
    bn = params["BatchNorm_0"]
    normalised = (h_query - mean) / jnp.sqrt(var + 1e-5) * bn["scale"] + bn["bias"]
    np.testing.assert_allclose(together, dense(params["Dense_1"], jax.nn.relu(normalised)), rtol=1e-4, atol=1e-5)
    transductive = model.apply(params, state, queries)[0]
    assert not np.allclose(transductive[0], model.apply(params, state, queries[:2])[0][0], atol=1e-3)


def test_support_mode_in_evaluate_does_not_let_a_query_see_the_others():
    model = _bn_model()
    learner = jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.5, steps=2)
    params, state = learner.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(2), 3)
    task = jmeta.Task(jax.random.normal(keys[0], (6, 4)), jnp.arange(6) % 3, jax.random.normal(keys[1], (9, 4)),
                      jnp.arange(9) % 3)
    changed = task._replace(query_x=task.query_x.at[1:].set(jax.random.normal(keys[2], (8, 4))))

    def first_query_logits(task, mode):
        with batch_norm_mode(mode, task.support_x):
            adapted = learner.adapt(params, state, task.support_x, task.support_y)
            return learner.predict(adapted, state, task.query_x)[0][0]

    np.testing.assert_allclose(first_query_logits(task, "support"), first_query_logits(changed, "support"), rtol=1e-5)
    assert not np.allclose(first_query_logits(task, "transductive"), first_query_logits(changed, "transductive"))


def test_running_mode_equals_the_network_built_with_running_averages_and_warns_for_maml():
    conv = functools.partial(jmeta.models.Conv4, num_classes=5, hidden=8)
    model = jmeta.from_linen(conv(), jnp.zeros((1, 28, 28, 1)))
    inference = jmeta.from_linen(conv(use_running_average=True), jnp.zeros((1, 28, 28, 1)))
    params, state = model.init(jax.random.key(0))
    state = jax.tree.map(lambda a: a + 0.3, state)  # running statistics that are not the initial ones
    x = jax.random.uniform(jax.random.key(1), (7, 28, 28, 1))
    with batch_norm_mode("running"):
        running, new_state = model.apply(params, state, x)
    np.testing.assert_allclose(running, inference.apply(params, state, x)[0], rtol=1e-5, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, new_state, state)

    small = _bn_model()
    learner = jmeta.maml(small, jmeta.losses.cross_entropy, inner_lr=0.4, metrics={"accuracy": jmeta.losses.accuracy})
    params, state = learner.init(jax.random.key(0))
    sample = jax.tree_util.Partial(
        lambda key, n: jmeta.Task(jax.random.normal(key, (n, 3, 4)), jnp.tile(jnp.arange(3), (n, 1)),
                                  jax.random.normal(key, (n, 3, 4)), jnp.tile(jnp.arange(3), (n, 1)))
    )
    with pytest.warns(UserWarning, match="batch_norm='running' normalises with the running averages"):
        results = jmeta.evaluate(learner, params, state, sample, jax.random.key(2), num_tasks=2, steps=(1,),
                                 batch_norm="running")
    assert results[1]["accuracy"].tasks == 2


def test_modes_are_named_and_other_models_refuse_the_non_transductive_ones(mlp_model):
    assert BATCH_NORM_MODES == ("transductive", "support", "running")
    own = jmeta.Model(lambda key: ({"w": jnp.ones((1, 1))}, {}), lambda p, s, x: (x @ p["w"], s))
    learner = jmeta.maml(own, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    sample = jmeta.tasks.SinusoidSampler(shots=5, queries=5)
    modes = r"\('transductive', 'support', 'running'\)"
    with pytest.raises(ValueError, match=rf"batch_norm must be one of {modes}; got 'x'"):
        jmeta.evaluate(learner, params, state, sample, jax.random.key(1), num_tasks=2, steps=(1,), batch_norm="x")
    with pytest.raises(ValueError, match="batch_norm='support' needs a model wrapped by jmeta.from_linen"):
        jmeta.evaluate(learner, params, state, sample, jax.random.key(1), num_tasks=2, steps=(1,), batch_norm="support")


def test_a_diverging_task_is_counted_and_left_out_of_the_estimate(mlp_model):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    base = jmeta.tasks.SinusoidSampler(shots=5, queries=20)

    def sample(key, n):  # tasks whose first support x is above 0 have targets scaled by 1e30: squared errors overflow
        tasks = base(key, n)
        scale = jnp.where(tasks.support_x[:, 0, 0] > 0, 1e30, 1.0)[:, None, None]
        return tasks._replace(support_y=tasks.support_y * scale, query_y=tasks.query_y * scale)

    results = jmeta.evaluate(learner, params, state, jax.tree_util.Partial(sample), jax.random.key(1), num_tasks=8,
                             steps=(0, 1), batch_size=8)
    # evaluate draws task i alone, from fold_in(key, i)
    tasks = [jax.tree.map(lambda a: a[0], sample(jax.random.fold_in(jax.random.key(1), i), 1)) for i in range(8)]
    finite = [task for task in tasks if task.support_x[0, 0] <= 0]
    assert 0 < len(finite) < 7
    for k in (0, 1):
        finite_losses = [float(learner.task_loss(params, state, task, steps=k)[0]) for task in finite]
        estimate = results[k]["loss"]
        assert (estimate.tasks, estimate.diverged) == (len(finite), 8 - len(finite))
        np.testing.assert_allclose(estimate.mean, np.mean(finite_losses), rtol=1e-5)
        assert str(estimate).endswith(f"({8 - len(finite)} diverged)")
    assert str(Estimate(float("nan"), float("nan"), 0, 5)) == "diverged on 5 of 5 tasks"
    assert Estimate(1.0, 0.1, 10)._fields == ("mean", "ci95", "tasks", "diverged")
