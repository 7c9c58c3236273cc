"""Gaussian MLP policies, rollouts, MAML's linear feature baseline and advantages, as pure functions.

The policy of Finn et al. 2017 (MAML), sec. 5.3 and App. A.2: an MLP (two hidden layers of 100 ReLU units)
gives the mean of a diagonal Gaussian over actions whose log standard deviation is a learned vector that does not
depend on the state. Distributions are :mod:`distrax`'s ``MultivariateNormalDiag``; generalised advantage
estimation is :mod:`rlax`'s.

Example::

    >>> import jax, jax.numpy as jnp
    >>> from jmeta.rl.envs import nav2d
    >>> env = nav2d()
    >>> params = policy_init(jax.random.key(0), env.observation_size, env.action_size, hidden=(8,))
    >>> traj = rollout(env, params, jnp.array([0.3, -0.2]), jax.random.key(1), 4)
    >>> traj.observations.shape, traj.actions.shape, traj.rewards.shape, traj.mask.shape
    ((4, 100, 2), (4, 100, 2), (4, 100), (4, 100))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import rlax

from jmeta.rl.envs import Env
from jmeta.validation import positive_int

PyTree = Any


class Trajectories(NamedTuple):
    """``N`` episodes of ``H`` steps of one task (extra leading axes when vmapped over tasks).

    Attributes:
        observations: float32 ``[N, H, observation_size]``, the observation each action was taken at.
        actions: float32 ``[N, H, action_size]``, as sampled (before the environment clips them).
        rewards: float32 ``[N, H]``.
        mask: float32 ``[N, H]``, 1 for the steps taken, 0 after the episode ended (a terminal state).
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    mask: jax.Array


def policy_init(
    key: jax.Array, observation_size: int, action_size: int, hidden: Sequence[int] = (100, 100), init_std: float = 1.0
) -> dict[str, Any]:
    """Parameters of a Gaussian MLP policy: ``{"layers": [{"w", "b"}, ...], "log_std": [action_size]}``.

    Weights are Glorot-uniform, biases zero, and the log standard deviation starts at ``log(init_std)`` (rllab's
    ``GaussianMLPPolicy``, MAML's code: ``init_std=1``). ``hidden=()`` gives a linear-Gaussian policy.

    Raises:
        ValueError: naming the argument, for a non-positive size or ``init_std``.

    Example::

        >>> params = policy_init(jax.random.key(0), 2, 2)
        >>> [p["w"].shape for p in params["layers"]], params["log_std"].shape
        ([(2, 100), (100, 100), (100, 2)], (2,))
    """
    sizes = [positive_int("observation_size", observation_size)]
    sizes += [positive_int("hidden", h) for h in hidden]
    sizes.append(positive_int("action_size", action_size))
    if not init_std > 0:
        raise ValueError(f"init_std must be a number > 0; got {init_std!r}.")
    keys = jax.random.split(key, len(sizes) - 1)
    glorot = jax.nn.initializers.glorot_uniform()
    layers = [
        {"w": glorot(k, (fan_in, fan_out), jnp.float32), "b": jnp.zeros(fan_out, jnp.float32)}
        for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    return {"layers": layers, "log_std": jnp.full(action_size, jnp.log(init_std), jnp.float32)}


def policy_distribution(params: PyTree, observations: jax.Array) -> distrax.MultivariateNormalDiag:
    """The policy's action distribution at ``observations`` ``[..., observation_size]`` (batch shape ``[...]``)."""
    x = observations
    *hidden, last = params["layers"]
    for layer in hidden:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    mean = x @ last["w"] + last["b"]
    return distrax.MultivariateNormalDiag(mean, jnp.broadcast_to(jnp.exp(params["log_std"]), mean.shape))


def log_prob(params: PyTree, trajectories: Trajectories) -> jax.Array:
    """``log pi(a_t | s_t)`` of each step, float ``[N, H]``, zero on masked steps."""
    return policy_distribution(params, trajectories.observations).log_prob(trajectories.actions) * trajectories.mask


def rollout(env: Env, params: PyTree, task: PyTree, key: jax.Array, num_trajectories: int) -> Trajectories:
    """Samples ``num_trajectories`` episodes of ``env.horizon`` steps of ``task`` with the policy ``params``.

    Steps after an episode ends are still computed (fixed shapes) but masked out. Nothing is differentiated
    through the sampling (``params`` are stop-gradiented); the policy-gradient surrogates carry the gradients.
    """

    params = jax.lax.stop_gradient(params)

    def episode(key: jax.Array) -> Trajectories:
        reset_key, noise_key = jax.random.split(key)
        state = env.reset(reset_key, task)

        def act(carry: tuple, key: jax.Array) -> tuple[tuple, tuple]:
            state, observation, alive = carry
            action = policy_distribution(params, observation).sample(seed=key)
            state, next_observation, reward, done = env.step(state, action)
            return (state, next_observation, alive * (1.0 - done)), (observation, action, reward, alive)

        carry = (state, env.initial_observation(state), jnp.ones((), jnp.float32))
        _, steps = jax.lax.scan(act, carry, jax.random.split(noise_key, env.horizon))
        return Trajectories(*steps)

    return jax.vmap(episode)(jax.random.split(key, num_trajectories))


def episode_returns(trajectories: Trajectories) -> jax.Array:
    """The undiscounted return of each episode, float ``[N]``."""
    return jnp.sum(trajectories.rewards * trajectories.mask, axis=-1)


def baseline_features(trajectories: Trajectories) -> jax.Array:
    """MAML's (rllab's ``LinearFeatureBaseline``) features ``[o, o^2, t, t^2, t^3, 1]``, ``t`` = step / 100 and
    ``o`` the observation clipped to ``[-10, 10]``: float ``[N, H, 2 * observation_size + 4]``."""
    o = jnp.clip(trajectories.observations, -10.0, 10.0)
    n, horizon = trajectories.mask.shape
    t = jnp.broadcast_to((jnp.arange(horizon, dtype=o.dtype) / 100.0)[None, :, None], (n, horizon, 1))
    return jnp.concatenate([o, o**2, t, t**2, t**3, jnp.ones_like(t)], axis=-1)


def discounted_returns(trajectories: Trajectories, discount: float) -> jax.Array:
    """Returns-to-go ``sum_k discount^k r_{t+k}`` within each episode, float ``[N, H]`` (rlax)."""
    rewards, mask = trajectories.rewards * trajectories.mask, trajectories.mask
    discounts = discount * jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    return jax.vmap(rlax.discounted_returns, in_axes=(0, 0, None))(rewards, discounts, jnp.zeros(()))


def fit_baseline(trajectories: Trajectories, returns: jax.Array, reg: float = 1e-5) -> jax.Array:
    """MAML's linear baseline fitted to ``returns`` ``[N, H]`` by regularised least squares over the unmasked
    steps: ``w = (X^T X + reg I)^-1 X^T y``; returns the fitted values, float ``[N, H]``."""
    x = baseline_features(trajectories)
    weights = trajectories.mask[..., None]
    flat_x, flat_wx = x.reshape(-1, x.shape[-1]), (weights * x).reshape(-1, x.shape[-1])
    gram = flat_wx.T @ flat_x + reg * jnp.eye(x.shape[-1], dtype=x.dtype)
    coefficients = jnp.linalg.solve(gram, flat_wx.T @ returns.reshape(-1))
    return (x @ coefficients) * trajectories.mask


def advantages(
    trajectories: Trajectories, discount: float = 0.99, gae_lambda: float = 1.0, normalize: bool = True
) -> jax.Array:
    """Generalised advantage estimates (rlax) with MAML's linear baseline fitted to this task's returns-to-go,
    float ``[N, H]``, zero on masked steps; ``normalize`` centres and scales them over the unmasked steps (MAML's
    ``center_adv``). With ``gae_lambda=1`` they are returns-to-go minus the baseline, as MAML's code."""
    mask = trajectories.mask
    values = fit_baseline(trajectories, discounted_returns(trajectories, discount))
    discounts = discount * jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1)
    values_plus = jnp.concatenate([values, jnp.zeros_like(values[:, :1])], axis=1)
    gae = jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(0, 0, None, 0))(
        trajectories.rewards * mask, discounts, gae_lambda, values_plus
    )
    gae = gae * mask
    if normalize:
        count = jnp.maximum(jnp.sum(mask), 1.0)
        mean = jnp.sum(gae) / count
        std = jnp.sqrt(jnp.sum(jnp.square(gae - mean) * mask) / count)
        gae = (gae - mean) / (std + 1e-8) * mask
    return jax.lax.stop_gradient(gae)
