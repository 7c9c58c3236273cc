"""Mixed precision (`compute_dtype="bfloat16"`): the model's passes run in bfloat16, everything kept stays float32,
and meta-training lands near float32's (margins stated per test)."""

import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import REPO

import jmeta
from jmeta.batching import _equations
from jmeta.experiment import build, load_config
from jmeta.systems.common import train_steps
from jmeta.tasks import SinusoidSampler


def product_dtypes(trainer, state, tasks):
    """The operand dtypes of every matrix product and convolution in the meta-step's jaxpr."""
    jaxpr = jax.make_jaxpr(trainer.update)(state, tasks).jaxpr
    products = ("dot_general", "conv_general_dilated")
    return {
        tuple(str(v.aval.dtype) for v in eqn.invars[:2])
        for eqn, _ in _equations(jaxpr)
        if eqn.primitive.name in products
    }


def float_dtypes(tree):
    return {str(leaf.dtype) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}


def test_bfloat16_products_and_float32_state_in_a_conv4_meta_step():
    model = jmeta.from_linen(jmeta.models.Conv4(num_classes=5, hidden=8, conv="xla"), jnp.zeros((1, 28, 28, 1)))
    learner = jmeta.maml(model, jmeta.losses.cross_entropy, 0.4, 1, compute_dtype="bfloat16")
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-3), batching="vmap")
    tasks = omniglot_like_tasks(jax.random.key(1), 2)
    state = trainer.init(jax.random.key(0))
    # Forward and backward passes, inner and outer loops: every product in bfloat16.
    assert product_dtypes(trainer, state, tasks) == {("bfloat16", "bfloat16")}
    state, metrics = trainer.step(state, tasks)
    assert float_dtypes((state.params, state.opt_state)) == {"float32"}
    assert float_dtypes(state.model_state) == {"float32"}  # BatchNorm running statistics
    assert metrics["loss"].dtype == jnp.float32 and bool(jnp.isfinite(metrics["loss"]))


def test_float32_is_unchanged_and_bad_dtypes_are_refused(mlp_model):
    assert jmeta.nn.with_compute_dtype(mlp_model, "float32") is mlp_model
    with pytest.raises(ValueError, match="compute_dtype must be one of 'float32', 'bfloat16'; got 'float16'"):
        jmeta.maml(mlp_model, jmeta.losses.mse, 0.01, compute_dtype="float16")
    config = load_config(REPO / "experiments" / "sinusoid_maml.py", ["compute_dtype=half"])
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        build(config)


def train_and_score(learner, sample, steps, eval_tasks):
    """Query loss on ``eval_tasks`` before and after ``steps`` meta-steps of Adam 1e-3 on ``sample``."""
    trainer = jmeta.meta_trainer(learner, optax.adam(1e-3))
    state = trainer.init(jax.random.key(0))
    before = float(trainer.loss(state.params, state.model_state, eval_tasks)[0])
    state, _ = train_steps(trainer.update, state, sample, jax.random.key(2), steps=steps, batch=8)
    assert float_dtypes(state.params) == {"float32"}
    return before, float(trainer.loss(state.params, state.model_state, eval_tasks)[0])


def test_bfloat16_sinusoid_maml_trains_like_float32():
    """Margin: the bfloat16 query MSE after 300 meta-steps is within 10% (+0.05) of float32's (measured: 3.411
    and 3.425, from 20.57)."""
    model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1)), jnp.zeros((1, 1)))
    sample = SinusoidSampler(10, 10)
    eval_tasks = sample(jax.random.key(9), 100)
    scores = {
        dtype: train_and_score(
            jmeta.maml(model, jmeta.losses.mse, 0.01, 1, compute_dtype=dtype), sample, 300, eval_tasks
        )
        for dtype in ("float32", "bfloat16")
    }
    after32, (before16, after16) = scores["float32"][1], scores["bfloat16"]
    assert after16 < 0.7 * before16, scores
    assert abs(after16 - after32) <= 0.1 * after32 + 0.05, scores


def relative_error(tree, reference):
    flat = lambda t: jnp.concatenate([leaf.ravel() for leaf in jax.tree.leaves(t)])  # noqa: E731
    return float(jnp.linalg.norm(flat(tree) - flat(reference)) / jnp.linalg.norm(flat(reference)))


def bfloat16_master_copy_sgd(lr):
    """SGD whose new parameters are rounded to bfloat16: the inner update of a bfloat16 master copy."""

    def update(grads, state, params):
        stepped = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        kept = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(jnp.float32), stepped)
        return jax.tree.map(jnp.subtract, kept, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def test_bfloat16_inner_update_keeps_float32_precision():
    """The inner update (adapted minus meta-parameters) of bfloat16 sinusoid MAML is within 1% of float32's:
    only the support gradient carries bfloat16's rounding (measured 0.42% on these 25 tasks). Applying the
    update to a bfloat16 copy of the parameters misses by 4.7% (the update, 0.01 x gradient, is a small
    fraction of the parameters, so rounding their sum loses most of its bits); the bound tells them apart."""
    model = jmeta.from_linen(jmeta.models.MLP((40, 40, 1), init_std=0.01), jnp.zeros((1, 1)))
    tasks = SinusoidSampler(10, 10)(jax.random.key(1), 25)
    reference = jmeta.maml(model, jmeta.losses.mse, 0.01, 1)
    params, state = reference.init(jax.random.key(0))

    def inner_update(learner):
        adapt = jax.vmap(lambda t: learner.adapt(params, state, t.support_x, t.support_y))
        return jax.tree.map(jnp.subtract, jax.jit(adapt)(tasks), params)

    expected = inner_update(reference)
    bfloat16 = inner_update(jmeta.maml(model, jmeta.losses.mse, 0.01, 1, compute_dtype="bfloat16"))
    master_copy = inner_update(
        jmeta.maml(model, jmeta.losses.mse, inner_optimizer=bfloat16_master_copy_sgd(0.01), compute_dtype="bfloat16")
    )
    assert float_dtypes(bfloat16) == {"float32"}
    assert relative_error(bfloat16, expected) < 0.01
    assert relative_error(master_copy, expected) > 0.02


def omniglot_like_tasks(key, count, classes=20, ways=5, queries=5):
    """Omniglot-shaped 5-way 1-shot tasks from a fixed pool of ``classes`` random 28x28 'characters': each
    task draws ``ways`` of them in a random order; examples are the character plus noise."""
    characters = jax.random.normal(jax.random.key(42), (classes, 28, 28, 1))

    def one(key):
        pick, support_noise, query_noise = jax.random.split(key, 3)
        chosen = characters[jax.random.choice(pick, classes, (ways,), replace=False)]
        query = jnp.repeat(chosen, queries, axis=0)
        return jmeta.Task(
            chosen + 0.5 * jax.random.normal(support_noise, chosen.shape),
            jnp.arange(ways),
            query + 0.5 * jax.random.normal(query_noise, query.shape),
            jnp.repeat(jnp.arange(ways), queries),
        )

    return jax.vmap(one)(jax.random.split(key, count))


@pytest.mark.slow  # ~10 minutes on 2 busy cores (compiling Conv-4 with patches in both dtypes)
def test_bfloat16_conv4_maml_on_omniglot_like_tasks_trains_like_float32():
    """Margin: the bfloat16 query cross-entropy after 40 meta-steps is within 0.1 nats of float32's
    (measured: 0.6080 and 0.6080, from 1.005 and 1.004). Conv-4's convolutions as patches (CPU's "auto")."""
    model = jmeta.from_linen(jmeta.models.Conv4(num_classes=5, hidden=16, conv="patches"), jnp.zeros((1, 28, 28, 1)))
    sample = jax.tree_util.Partial(omniglot_like_tasks)
    eval_tasks = omniglot_like_tasks(jax.random.key(9), 32)
    scores = {
        dtype: train_and_score(
            jmeta.maml(model, jmeta.losses.cross_entropy, 0.4, 1, compute_dtype=dtype), sample, 40, eval_tasks
        )
        for dtype in ("float32", "bfloat16")
    }
    after32, (before16, after16) = scores["float32"][1], scores["bfloat16"]
    assert after16 < 0.8 * before16, scores
    assert abs(after16 - after32) <= 0.1, scores
