"""Task-parameterised environments as pure functions, for meta-reinforcement learning.

An :class:`Env` is a ``NamedTuple`` of pure functions over pytrees, so that ``jax.vmap`` batches them over
tasks and over trajectories and ``jax.jit`` compiles whole rollouts:

* ``sample_tasks(key, num_tasks) -> tasks`` (a pytree whose leaves have a leading axis ``num_tasks``),
* ``reset(key, task) -> state``,
* ``step(state, action) -> (state, observation, reward, done)``,

with ``observation_size``, ``action_size`` and ``horizon`` (the episode length, H). ``initial_observation(state)``
gives the observation of a freshly reset state.

Two families are here:

* :func:`nav2d`: the 2D navigation tasks of Finn et al. 2017 (MAML), sec. 5.3.
* :func:`half_cheetah`: the half-cheetah forward/backward and goal-velocity tasks of the same section, on Brax's
  HalfCheetah (``pip install 'jmeta[rl]'``).

Example::

    >>> import jax, jax.numpy as jnp
    >>> env = nav2d()
    >>> goals = env.sample_tasks(jax.random.key(0), 3)
    >>> state = env.reset(jax.random.key(1), jax.tree.map(lambda g: g[0], goals))
    >>> state, obs, reward, done = env.step(state, jnp.array([1.0, 0.0]))   # clipped to 0.1
    >>> obs.tolist()
    [0.10000000149011612, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jmeta.validation import one_of, positive_float, positive_int

PyTree = Any


class Env(NamedTuple):
    """A task-parameterised environment: pure functions, vmappable over tasks and trajectories.

    Attributes:
        sample_tasks: ``(key, num_tasks) -> tasks``, a pytree with leading axis ``num_tasks``.
        reset: ``(key, task) -> state``.
        step: ``(state, action) -> (state, observation, reward, done)``; ``observation`` is float32
            ``[observation_size]``, ``reward`` a float32 scalar, ``done`` a bool scalar (true on the last step
            of an episode: the horizon, or a terminal state).
        initial_observation: ``state -> observation`` of a state returned by ``reset``.
        observation_size: the observation's length.
        action_size: the action's length.
        horizon: H, the number of steps in an episode at most.
        name: a short name for reports.
    """

    sample_tasks: Callable[[jax.Array, int], PyTree]
    reset: Callable[[jax.Array, PyTree], PyTree]
    step: Callable[[PyTree, jax.Array], tuple[PyTree, jax.Array, jax.Array, jax.Array]]
    initial_observation: Callable[[PyTree], jax.Array]
    observation_size: int
    action_size: int
    horizon: int
    name: str


class NavState(NamedTuple):
    """The state of a 2D navigation episode: ``position`` [2], ``goal`` [2] (the task), step count ``t``."""

    position: jax.Array
    goal: jax.Array
    t: jax.Array


def nav2d(
    horizon: int = 100,
    max_speed: float = 0.1,
    goal_range: float = 0.5,
    goal_tolerance: float = 0.01,
    reward: str = "distance",
) -> Env:
    """The 2D navigation tasks of Finn et al. 2017 (MAML), sec. 5.3.

    The paper: a point agent "must move to different goal positions in 2D, randomly chosen for each task within a
    unit square"; the observation is the current 2D position; actions are velocity commands clipped to
    ``[-0.1, 0.1]``; "the reward is the negative squared distance to the goal"; episodes end at the horizon H = 100
    or when the agent is within 0.01 of the goal. As in MAML's reference code (rllab ``PointEnvRandGoal``), the unit
    square is ``[-0.5, 0.5]^2`` (goals uniform in it), the agent starts at the origin and the observation is the
    position after the step; the code's reward, the default here (``reward="distance"``), is minus the Euclidean
    distance from the new position to the goal, not its square (``reward="squared"``, the paper's wording).

    A task is the goal, float32 ``[2]`` (``sample_tasks`` gives ``[num_tasks, 2]``).

    Args:
        horizon: H, steps per episode at most.
        max_speed: actions are clipped to ``[-max_speed, max_speed]`` per coordinate.
        goal_range: goals are uniform in ``[-goal_range, goal_range]^2``.
        goal_tolerance: an episode ends when the distance to the goal is below this (0 never ends early).
        reward: ``"distance"`` (minus the distance, MAML's code) or ``"squared"`` (minus its square, the paper).

    Raises:
        ValueError: naming the argument, for a non-positive ``horizon``, ``max_speed`` or ``goal_range``, a
            negative ``goal_tolerance``, or ``reward`` not among the choices.

    Example::

        >>> env = nav2d()
        >>> env.horizon, env.observation_size, env.action_size
        (100, 2, 2)
    """
    horizon = positive_int("horizon", horizon)
    squared = one_of("reward", reward, ("distance", "squared")) == "squared"
    max_speed = positive_float("max_speed", max_speed)
    goal_range = positive_float("goal_range", goal_range)
    if not goal_tolerance >= 0:
        raise ValueError(f"goal_tolerance must be a number >= 0; got {goal_tolerance!r}.")

    def sample_tasks(key: jax.Array, num_tasks: int) -> jax.Array:
        return jax.random.uniform(key, (num_tasks, 2), minval=-goal_range, maxval=goal_range)

    def reset(key: jax.Array, goal: jax.Array) -> NavState:
        del key  # the start is the origin
        return NavState(jnp.zeros(2, jnp.float32), jnp.asarray(goal, jnp.float32), jnp.zeros((), jnp.int32))

    def step(state: NavState, action: jax.Array) -> tuple[NavState, jax.Array, jax.Array, jax.Array]:
        position = state.position + jnp.clip(action, -max_speed, max_speed)
        distance = jnp.linalg.norm(position - state.goal)
        t = state.t + 1
        done = (t >= horizon) | (distance < goal_tolerance)
        return NavState(position, state.goal, t), position, -(distance**2 if squared else distance), done

    return Env(sample_tasks, reset, step, lambda state: state.position, 2, 2, horizon, "nav2d")


class CheetahTask(NamedTuple):
    """A half-cheetah task: ``kind`` 0 (direction: reward ``goal * velocity``) or 1 (goal velocity: reward
    ``-|velocity - goal|``), and ``goal`` (a direction, +1 or -1, or a velocity)."""

    kind: jax.Array
    goal: jax.Array


class CheetahState(NamedTuple):
    """A half-cheetah episode's state: Brax's state, the task and the step count."""

    brax_state: Any
    task: CheetahTask
    t: jax.Array


def half_cheetah(tasks: str = "direction", horizon: int = 200, control_cost: float = 0.05, backend: str = "mjx") -> Env:
    """The half-cheetah tasks of Finn et al. 2017 (MAML), sec. 5.3, on Brax's HalfCheetah.

    ``tasks="direction"``: run forward or backward, each with probability 1/2, reward ``direction * v``;
    ``tasks="velocity"``: run at a goal velocity uniform in ``[0, 2]``, reward ``-|v - goal|``; ``"both"`` mixes
    the two half and half. ``v`` is the torso's forward velocity and each reward also pays
    ``control_cost * |action|^2`` (MAML's code: ``0.1 * 0.5``). Horizon 200 as the paper.

    The observation and dynamics are Brax's HalfCheetah (17 observations, 6 actions in ``[-1, 1]``, clipped here);
    Brax's own reward is replaced by the task's.

    Raises:
        ImportError: when Brax is not installed (``pip install 'jmeta[rl]'``).
        ValueError: naming the argument, for ``tasks`` or ``backend`` not among the choices, or a non-positive
            ``horizon``.

    Example::

        >>> env = half_cheetah("velocity")   # doctest: +SKIP
        >>> env.observation_size, env.action_size, env.horizon   # doctest: +SKIP
        (17, 6, 200)
    """
    tasks = one_of("tasks", tasks, ("direction", "velocity", "both"))
    backend = one_of("backend", backend, ("positional", "spring", "generalized", "mjx"))
    horizon = positive_int("horizon", horizon)
    try:
        from brax import envs as brax_envs
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("half_cheetah needs Brax: pip install 'jmeta[rl]'.") from error
    brax_env = brax_envs.get_environment("halfcheetah", backend=backend)

    def sample_tasks(key: jax.Array, num_tasks: int) -> CheetahTask:
        kind_key, direction_key, velocity_key = jax.random.split(key, 3)
        if tasks == "both":
            kind = jax.random.bernoulli(kind_key, 0.5, (num_tasks,)).astype(jnp.int32)
        else:
            kind = jnp.full((num_tasks,), int(tasks == "velocity"), jnp.int32)
        direction = jnp.where(jax.random.bernoulli(direction_key, 0.5, (num_tasks,)), 1.0, -1.0)
        velocity = jax.random.uniform(velocity_key, (num_tasks,), minval=0.0, maxval=2.0)
        return CheetahTask(kind, jnp.where(kind == 0, direction, velocity))

    def reset(key: jax.Array, task: CheetahTask) -> CheetahState:
        return CheetahState(brax_env.reset(key), task, jnp.zeros((), jnp.int32))

    def step(state: CheetahState, action: jax.Array) -> tuple[CheetahState, jax.Array, jax.Array, jax.Array]:
        action = jnp.clip(action, -1.0, 1.0)
        brax_state = brax_env.step(state.brax_state, action)
        velocity = brax_state.metrics["x_velocity"]
        task_reward = jnp.where(state.task.kind == 0, state.task.goal * velocity, -jnp.abs(velocity - state.task.goal))
        reward = task_reward - control_cost * jnp.sum(jnp.square(action))
        t = state.t + 1
        return CheetahState(brax_state, state.task, t), brax_state.obs, reward, t >= horizon

    return Env(
        sample_tasks,
        reset,
        step,
        lambda state: state.brax_state.obs,
        brax_env.observation_size,
        brax_env.action_size,
        horizon,
        f"half-cheetah-{tasks}",
    )
