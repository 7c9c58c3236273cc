"""jmeta.rl: the 2D navigation environment against Finn et al. 2017's definition, the policy-gradient surrogate and
the MAML meta-gradient against hand-written and finite-difference estimates, conjugate gradient and TRPO's KL bound,
and a short meta-training on 2D navigation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("distrax", reason="jmeta.rl needs distrax and rlax: pip install 'jmeta[rl]'")
pytest.importorskip("rlax", reason="jmeta.rl needs distrax and rlax: pip install 'jmeta[rl]'")

from jmeta.rl import envs, maml, policy, trpo  # noqa: E402
from jmeta.rl.evaluation import evaluate  # noqa: E402


def test_nav2d_is_the_papers_environment():
    env = envs.nav2d()
    goal = jnp.array([0.3, -0.4])
    state = env.reset(jax.random.key(0), goal)
    np.testing.assert_array_equal(env.initial_observation(state), [0.0, 0.0])  # starts at the origin
    position = np.zeros(2)
    rng = np.random.default_rng(0)
    for t in range(1, env.horizon + 1):
        action = rng.normal(0.0, 0.2, 2)
        state, obs, reward, done = env.step(state, jnp.asarray(action, jnp.float32))
        position = position + np.clip(action, -0.1, 0.1)  # velocity commands clipped to [-0.1, 0.1]
        np.testing.assert_allclose(obs, position, atol=1e-5)  # the observation is the position
        np.testing.assert_allclose(reward, -np.linalg.norm(position - np.asarray(goal)), atol=1e-5)
        assert bool(done) == (t == env.horizon)  # H = 100 (this walk never comes within 0.01 of the goal)
    goals = np.asarray(env.sample_tasks(jax.random.key(1), 4000))
    assert goals.shape == (4000, 2) and goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.min() < -0.49 and goals.max() > 0.49  # uniform on the whole square [-0.5, 0.5]^2
    _, _, _, done = env.step(env.reset(jax.random.key(0), jnp.array([0.1, 0.1])), jnp.array([0.1, 0.1]))
    assert bool(done)  # within 0.01 of the goal ends the episode
    squared = envs.nav2d(reward="squared")  # the paper's wording; the default is MAML's code's
    _, _, reward, _ = squared.step(squared.reset(jax.random.key(0), goal), jnp.array([0.05, 0.3]))
    np.testing.assert_allclose(reward, -((0.05 - 0.3) ** 2 + (0.1 + 0.4) ** 2), rtol=1e-6)


def test_rollout_masks_the_steps_after_the_goal():
    env = envs.nav2d(horizon=20)
    params = policy.policy_init(jax.random.key(0), 2, 2, hidden=(), init_std=1e-4)
    params["layers"][0] = {"w": jnp.zeros((2, 2)), "b": jnp.array([0.1, 0.0])}  # straight right at full speed
    traj = policy.rollout(env, params, jnp.array([0.5, 0.0]), jax.random.key(1), 2)
    np.testing.assert_array_equal(traj.mask[0], [1.0] * 5 + [0.0] * 15)  # the 5th step reaches the goal
    np.testing.assert_allclose(policy.episode_returns(traj), -sum(0.5 - 0.1 * k for k in range(1, 6)), atol=1e-2)


def test_advantages_are_returns_to_go_minus_the_least_squares_baseline():
    traj = policy.rollout(envs.nav2d(horizon=10), policy.policy_init(jax.random.key(0), 2, 2, (4,)),
                          jnp.array([0.2, 0.3]), jax.random.key(1), 6)
    rewards = np.asarray(traj.rewards, np.float64)
    returns = np.stack([[sum(0.9**k * r[t + k] for k in range(10 - t)) for t in range(10)] for r in rewards])
    obs = np.clip(np.asarray(traj.observations, np.float64), -10, 10)
    t = np.broadcast_to(np.arange(10)[None, :, None] / 100.0, (6, 10, 1))
    x = np.concatenate([obs, obs**2, t, t**2, t**3, np.ones_like(t)], -1).reshape(60, -1)
    w = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ returns.reshape(-1))
    expected = returns - (x @ w).reshape(6, 10)
    got = policy.advantages(traj, discount=0.9, gae_lambda=1.0, normalize=False)
    np.testing.assert_allclose(got, expected, atol=2e-3)


def _fixed_batch(key, n=3, horizon=4, obs=2, act=2):
    k1, k2, k3 = jax.random.split(key, 3)
    return policy.Trajectories(
        jax.random.normal(k1, (n, horizon, obs)), jax.random.normal(k2, (n, horizon, act)),
        jax.random.normal(k3, (n, horizon)), jnp.ones((n, horizon)),
    )


def test_surrogate_gradient_is_the_score_function_estimate():
    params = policy.policy_init(jax.random.key(0), 2, 2, hidden=())  # linear-Gaussian: scores by hand
    params["log_std"] = jnp.array([0.3, -0.2])
    batch = _fixed_batch(jax.random.key(1))
    adv = jax.random.normal(jax.random.key(2), batch.mask.shape)
    grad = jax.jit(jax.grad(maml.pg_surrogate))(params, batch, adv)
    s, a, A = (np.asarray(v, np.float64) for v in (batch.observations, batch.actions, adv))
    w, b, log_std = (np.asarray(v, np.float64) for v in (params["layers"][0]["w"], params["layers"][0]["b"],
                                                         params["log_std"]))
    z = (a - (s @ w + b)) / np.exp(log_std)  # d log N(a; mu, sigma) / d mu = z / sigma, / d log sigma = z^2 - 1
    steps = A.size
    np.testing.assert_allclose(grad["layers"][0]["w"], np.einsum("nti,ntj,nt->ij", s, z / np.exp(log_std), A) / steps,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad["layers"][0]["b"], np.einsum("ntj,nt->j", z / np.exp(log_std), A) / steps,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad["log_std"], np.einsum("ntj,nt->j", z**2 - 1, A) / steps, rtol=1e-4, atol=1e-6)
    assert float(maml.pg_surrogate(params, batch, adv)) == 0.0  # DiCE: the value is zero, only derivatives count


def _gaussian_log_prob(params, obs, actions):
    """log N(a; MLP(s), diag(exp(log_std))^2), written out (not distrax)."""
    x = obs
    for layer in params["layers"][:-1]:
        x = jnp.maximum(x @ layer["w"] + layer["b"], 0.0)
    mean = x @ params["layers"][-1]["w"] + params["layers"][-1]["b"]
    log_std = params["log_std"]
    return jnp.sum(-0.5 * ((actions - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), -1)


def test_meta_gradient_matches_finite_differences_of_the_importance_weighted_objective():
    """On fixed episodes the expected post-adaptation return is, near theta0, the importance-weighted objective
    F(theta) = mean_t r'_t(theta) A'_t with theta' = theta + lr * grad J(theta), J the importance-weighted
    inner objective sum_t (rho_<=t - rho_<t) A_t (rho: likelihood ratios to theta0). Its derivative at theta0 is
    what MAML's meta-gradient estimates; the DiCE surrogate must give it exactly, the plain surrogate must not."""
    with jax.enable_x64(True):
        theta0 = jax.tree.map(lambda v: v.astype(jnp.float64),
                              policy.policy_init(jax.random.key(0), 2, 2, hidden=(3,)))
        theta0["log_std"] = jnp.array([-0.3, 0.2])
        pre = jax.tree.map(lambda v: v.astype(jnp.float64), _fixed_batch(jax.random.key(1)))
        post = jax.tree.map(lambda v: v.astype(jnp.float64), _fixed_batch(jax.random.key(2)))
        adv_pre = jax.random.normal(jax.random.key(3), pre.mask.shape, jnp.float64)
        adv_post = jax.random.normal(jax.random.key(4), post.mask.shape, jnp.float64)
        lr = 0.5
        logp0 = _gaussian_log_prob(theta0, pre.observations, pre.actions)

        def inner_objective(theta):
            upto = jnp.cumsum(_gaussian_log_prob(theta, pre.observations, pre.actions) - logp0, axis=1)
            return jnp.sum((jnp.exp(upto) - jnp.exp(upto - (upto - jnp.pad(upto, ((0, 0), (1, 0)))[:, :-1]))) *
                           adv_pre) / adv_pre.size

        def adapted(theta):
            return jax.tree.map(lambda p, g: p + lr * g, theta, jax.grad(inner_objective)(theta))

        old = policy.policy_distribution(adapted(theta0), post.observations)
        post_logp0 = _gaussian_log_prob(adapted(theta0), post.observations, post.actions)

        def objective(theta):
            ratio = jnp.exp(_gaussian_log_prob(adapted(theta), post.observations, post.actions) - post_logp0)
            return jnp.mean(ratio * adv_post)

        def library(theta, first_order=False):
            new = maml.adapt(theta, [pre], [adv_pre], lr, first_order)
            return maml.outer_terms(new, post, adv_post, old.loc, old.scale_diag)[0]

        flat0, unravel = jax.flatten_util.ravel_pytree(theta0)
        eps = 1e-6
        along = jax.jit(jax.vmap(lambda x: objective(unravel(x))))
        shifts = eps * np.eye(flat0.size)
        finite_differences = (along(flat0 + shifts) - along(flat0 - shifts)) / (2 * eps)
        meta_gradient = jax.flatten_util.ravel_pytree(jax.jit(jax.grad(library))(theta0))[0]
        np.testing.assert_allclose(meta_gradient, finite_differences, rtol=1e-5, atol=1e-8)
        # the checks can fail: a first-order meta-gradient misses the second-order terms by far more
        first_order = jax.flatten_util.ravel_pytree(jax.grad(lambda t: library(t, True))(theta0))[0]
        assert np.max(np.abs(first_order - finite_differences)) > 1e-3


def test_conjugate_gradient_solves_an_spd_system():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 6))
    a = m @ m.T + 0.5 * np.eye(6)
    b = rng.normal(size=6)
    with jax.enable_x64(True):
        x = trpo.conjugate_gradient(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), iterations=6)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-8)  # exact in n steps (up to rounding)


def test_trpo_step_stays_within_the_kl_bound():
    """A Gaussian's mean and log-std under a linear objective: the step is the largest that keeps the exact KL
    (written out) within the bound, and it improves the objective."""
    mu0, log_std0 = jnp.array([0.2, -0.1]), jnp.array([0.0, 0.3])
    g = jnp.array([1.0, -2.0, 0.5, 0.7])

    def kl(params):  # KL(N(mu0, s0) || N(mu, s)), per coordinate summed
        mu, log_std = params
        return jnp.sum(log_std - log_std0 + (jnp.exp(2 * log_std0) + (mu0 - mu) ** 2) / (2 * jnp.exp(2 * log_std))
                       - 0.5)

    def objective(params):
        return jnp.concatenate(params) @ g

    for max_kl in (0.01, 0.1, 1.0):
        (mu, log_std), info = trpo.trpo_step(objective, kl, (mu0, log_std0), max_kl=max_kl, cg_iterations=4)
        exact = float(kl((mu, log_std)))
        assert 0 < exact <= max_kl and exact > 0.1 * max_kl
        assert float(objective((mu, log_std))) > float(objective((mu0, log_std0)))
        np.testing.assert_allclose(info.kl, exact, rtol=1e-5)


@pytest.mark.slow  # 25 s of CPU (90 s wall on the loaded 2-core machine)
def test_meta_training_improves_the_post_adaptation_return():
    env = envs.nav2d(horizon=50)
    meta = maml.maml_rl(env, hidden=(32, 32), num_tasks=10, trajectories=10)
    state = meta.init(jax.random.key(0))
    before = evaluate(meta, state.params, jax.random.key(100), num_tasks=20, steps=1)
    for i in range(6):
        state, metrics = meta.step(state, jax.random.key(i))
        assert 0 <= float(metrics["kl"]) <= 0.01
    after = evaluate(meta, state.params, jax.random.key(100), num_tasks=20, steps=1)
    assert after[1].mean > before[1].mean + 2 * max(after[1].ci95, before[1].ci95), (before, after)


@pytest.mark.parametrize("algorithm,outer", [
    ("reptile", "trpo"),
    pytest.param("fomaml", "trpo", marks=pytest.mark.slow),  # each compiles a meta-iteration: 20-40 s wall here
    pytest.param("pretrain", "trpo", marks=pytest.mark.slow),
    pytest.param("maml", "ppo", marks=pytest.mark.slow),
])
def test_variants_run_and_change_the_policy(algorithm, outer):
    meta = maml.maml_rl(envs.nav2d(horizon=5), hidden=(4,), num_tasks=2, trajectories=2, algorithm=algorithm,
                        outer=outer)
    state = meta.init(jax.random.key(0))
    new, metrics = meta.step(state, jax.random.key(1))
    assert int(new.iteration) == 1 and all(np.isfinite(float(v)) for v in metrics.values())
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new.params))
    assert any(changed)


def test_bad_arguments_are_named():
    env = envs.nav2d()
    with pytest.raises(ValueError, match="algorithm must be one of"):
        maml.maml_rl(env, algorithm="maml2")
    with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
        maml.maml_rl(env, num_tasks=0)
    with pytest.raises(ValueError, match="discount must be a number in"):
        maml.maml_rl(env, discount=1.5)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        envs.nav2d(horizon=0)
    with pytest.raises(ValueError, match="tasks must be one of"):
        envs.half_cheetah("sideways")


@pytest.mark.slow  # Brax's MJX pipeline compiles for minutes on a loaded 2-core CPU
def test_half_cheetah_tasks_reward_the_forward_velocity():
    pytest.importorskip("brax", reason="the half-cheetah tasks need Brax: pip install 'jmeta[rl]'")
    env = envs.half_cheetah("both", horizon=3)
    tasks = env.sample_tasks(jax.random.key(0), 400)
    kind, goal = np.asarray(tasks.kind), np.asarray(tasks.goal)
    assert set(np.unique(goal[kind == 0])) == {-1.0, 1.0} and 0 <= goal[kind == 1].min() < goal[kind == 1].max() <= 2
    task = envs.CheetahTask(jnp.array(1), jnp.array(1.5))
    state = env.reset(jax.random.key(1), task)
    action = jnp.full(env.action_size, 0.5)
    state, obs, reward, done = env.step(state, action)
    velocity = float(state.brax_state.metrics["x_velocity"])
    np.testing.assert_allclose(reward, -abs(velocity - 1.5) - 0.05 * 6 * 0.25, rtol=1e-5)
    assert obs.shape == (env.observation_size,) and not bool(done)


@pytest.mark.slow  # compiles three meta-iterations and an evaluation: minutes on the loaded 2-core CPU
def test_maml_rl_program_writes_metrics_and_results(tmp_path):
    import json
    from pathlib import Path

    from jmeta.experiment import load_config
    from jmeta.systems.programs import run_program

    repo = Path(__file__).resolve().parents[1]
    overrides = ["steps=2", "meta_batch=2", "trajectories=3", "hidden=(8,)", "eval_tasks=3", "eval_steps=1"]
    config = load_config(str(repo / "experiments" / "nav2d_maml_trpo.py"), overrides)
    results = run_program(config, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["run"], r["step"]) for r in lines] == [("maml", 1), ("maml", 2), ("pretrain", 1), ("pretrain", 2)]
    assert set(results["results"]["1"]) == {"MAML", "pretrained", "random init"}
    assert json.loads((tmp_path / "results.json").read_text())["results"]["0"]["MAML"]["tasks"] == 3


def test_one_inner_step_raises_the_return_on_new_goals():
    """2D navigation in make test: on 30 new goals, one inner policy-gradient step (20 episodes of 30 steps, step
    0.3) from a fixed initial policy raises each task's mean return; the mean of the paired gains less its 95% CI
    must exceed 1 (measured: 4.49 ± 1.18 with these seeds; a wrong-signed or zero step gives <= 0)."""
    meta = maml.maml_rl(envs.nav2d(horizon=30), hidden=(16,), num_tasks=20, trajectories=20, inner_lr=0.3)
    params = meta.init(jax.random.key(0)).params
    tasks = meta.env.sample_tasks(jax.random.key(1), 30)
    returns = np.asarray(meta.adapt_and_rollout(params, tasks, jax.random.split(jax.random.key(2), 30), 1))
    gains = returns[:, 1] - returns[:, 0]
    ci = 1.96 * gains.std(ddof=1) / np.sqrt(len(gains))
    assert gains.mean() - ci > 1.0, (returns.mean(axis=0), gains.mean(), ci)
