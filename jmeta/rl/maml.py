"""MAML for reinforcement learning (Finn et al. 2017, sec. 3.2 and 5.3): one meta-iteration, from sampling tasks
to the outer step, is one jit-compiled function of ``(state, key)``.

A meta-iteration samples ``num_tasks`` tasks; for each (``vmap``), it samples ``trajectories`` episodes with the
policy, takes an inner policy-gradient step (``inner_steps`` times, each on fresh episodes of the adapted policy),
samples episodes with the adapted policy, and then the meta-parameters take one outer step on the mean
post-adaptation surrogate: TRPO (the paper) or PPO-clip epochs. ``algorithm`` chooses how the outer step sees the
inner steps:

* ``"maml"``: differentiated through them, second-order terms included (the inner surrogate is Loaded DiCE,
  Foerster et al. 2018 and Farquhar et al. 2019, so that its Hessian estimates the policy-gradient Hessian
  including the score-function product terms that a plain ``log pi * A`` surrogate drops);
* ``"fomaml"``: first-order MAML, the inner update held constant (``stop_gradient``);
* ``"pretrain"``: no inner step in training: one policy trained by TRPO on all tasks (the paper's "pretrained"
  baseline);
* ``"reptile"`` (Nichol et al. 2018): ``params += outer_lr * mean_i(adapted_i - params)``, no outer surrogate.

Example::

    >>> import jax
    >>> from jmeta.rl.envs import nav2d
    >>> meta = maml_rl(nav2d(horizon=10), hidden=(8,), num_tasks=2, trajectories=3)
    >>> state = meta.init(jax.random.key(0))
    >>> state, metrics = meta.step(state, jax.random.key(1))  # doctest: +SKIP
    >>> sorted(metrics)[:3]  # doctest: +SKIP
    ['backtracks', 'fraction', 'improvement']
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import distrax
import jax
import jax.numpy as jnp
import optax

from jmeta.parallel import constrain_tasks, pad_tasks
from jmeta.rl import policy as pol
from jmeta.rl.envs import Env
from jmeta.rl.trpo import trpo_step
from jmeta.validation import one_of, positive_float, positive_int

PyTree = Any
ALGORITHMS = ("maml", "fomaml", "pretrain", "reptile")
OUTER = ("trpo", "ppo")


def magic_box(x: jax.Array) -> jax.Array:
    """DiCE's operator (Foerster et al. 2018): 1 in value, ``d magic_box(x) = magic_box(x) dx`` at every order."""
    return jnp.exp(x - jax.lax.stop_gradient(x))


def pg_surrogate(params: PyTree, trajectories: pol.Trajectories, advantages: jax.Array) -> jax.Array:
    """The inner loop's policy-gradient surrogate (Loaded DiCE, Farquhar et al. 2019), float scalar, 0 in value:

    ``sum_{n,t} (magic_box(w_{n,<=t}) - magic_box(w_{n,<t})) A_{n,t} / (number of steps)``,
    ``w_{n,<=t} = sum_{k<=t} log pi(a_{n,k} | s_{n,k})``.

    Its gradient is the REINFORCE estimate ``sum_{n,t} grad log pi(a_{n,t} | s_{n,t}) A_{n,t} / steps`` (MAML's
    vanilla policy gradient, mean over the steps); its Hessian adds to ``sum grad^2 log pi A`` the score-function
    products ``(grad w_{<=t} grad w_{<=t}^T - grad w_{<t} grad w_{<t}^T) A_t`` that the meta-gradient needs
    because the inner step's own episodes were sampled from the policy being differentiated.
    """
    logp = pol.log_prob(params, trajectories)
    upto = jnp.cumsum(logp, axis=-1)
    weighted = (magic_box(upto) - magic_box(upto - logp)) * advantages
    return jnp.sum(weighted) / jnp.maximum(jnp.sum(trajectories.mask), 1.0)


def inner_update(
    params: PyTree, trajectories: pol.Trajectories, advantages: jax.Array, inner_lr: float, first_order: bool = False
) -> PyTree:
    """One inner policy-gradient ascent step ``params + inner_lr * grad pg_surrogate`` (held constant under
    differentiation when ``first_order``)."""
    gradient = jax.grad(pg_surrogate)(params, trajectories, advantages)
    if first_order:
        gradient = jax.lax.stop_gradient(gradient)
    return jax.tree.map(lambda p, g: p + inner_lr * g, params, gradient)


def adapt(
    params: PyTree,
    batches: Sequence[pol.Trajectories],
    advs: Sequence[jax.Array],
    inner_lr: float,
    first_order: bool = False,
) -> PyTree:
    """The adapted parameters: one :func:`inner_update` per (episodes, advantages) pair, in order."""
    for batch, adv in zip(batches, advs, strict=True):
        params = inner_update(params, batch, adv, inner_lr, first_order)
    return params


def outer_terms(
    adapted: PyTree,
    post: pol.Trajectories,
    advantages: jax.Array,
    old_loc: jax.Array,
    old_scale: jax.Array,
    ppo_clip: float = 0.2,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The outer objective's terms on the adapted policy's episodes ``post`` (float scalars, means over steps):

    * TRPO's surrogate ``mean_t ratio_t A_t``, ``ratio_t = pi'(a_t|s_t) / pi_old(a_t|s_t)``;
    * PPO's clipped surrogate ``mean_t min(ratio_t A_t, clip(ratio_t, 1 - ppo_clip, 1 + ppo_clip) A_t)``;
    * the mean KL divergence ``KL(pi_old(.|s_t) || pi'(.|s_t))``,

    where ``pi'`` is the policy ``adapted`` and ``pi_old`` the Gaussian ``(old_loc, old_scale)`` that sampled
    ``post`` (float ``[N, H, action_size]`` each). Their gradients with respect to the meta-parameters flow through
    ``adapted`` (Finn et al. 2017, Algorithm 3, line 10).
    """
    mask = post.mask
    new = pol.policy_distribution(adapted, post.observations)
    old = distrax.MultivariateNormalDiag(old_loc, old_scale)
    ratio = jnp.exp(new.log_prob(post.actions) - old.log_prob(post.actions))
    steps = jnp.maximum(jnp.sum(mask), 1.0)
    surrogate = jnp.sum(ratio * advantages * mask) / steps
    clipped = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1 - ppo_clip, 1 + ppo_clip) * advantages)
    kl = jnp.sum(old.kl_divergence(new) * mask) / steps
    return surrogate, jnp.sum(clipped * mask) / steps, kl


class MetaRLState(NamedTuple):
    """Meta-training state: the policy's meta-parameters, the outer optimiser's state (PPO's Adam; ``()``
    otherwise) and the number of meta-iterations done (int32 scalar; also ``step``, the name
    :class:`jmeta.checkpoint.Checkpoints` reads)."""

    params: PyTree
    opt_state: PyTree
    iteration: jax.Array

    @property
    def step(self) -> jax.Array:
        return self.iteration


class MetaRL(NamedTuple):
    """MAML-RL (or a variant) on one environment: pure functions, ``step`` jitted.

    Attributes:
        init: ``key -> MetaRLState``.
        step: ``(state, key) -> (state, metrics)``: one whole meta-iteration, jit-compiled (metrics: float
            scalars: ``return_before``/``return_after`` the mean episode return of the pre- and post-adaptation
            episodes, and the outer step's ``improvement``, ``kl``, ``fraction``, ``backtracks``).
        adapt_and_rollout: ``(params, tasks, keys, steps) -> returns [num_tasks, steps + 1]``, jitted (``steps``
            static): for each task (``tasks`` with a leading axis, one key each), the mean episode return before
            and after each of ``steps`` inner steps (each on fresh episodes; ``inner_lr``, then
            ``test_inner_lr``), for evaluation.
        env: the environment.
        config: the settings, a dict.
    """

    init: Callable[[jax.Array], MetaRLState]
    step: Callable[[MetaRLState, jax.Array], tuple[MetaRLState, dict[str, jax.Array]]]
    adapt_and_rollout: Callable[[PyTree, PyTree, jax.Array, int], jax.Array]
    env: Env
    config: dict[str, Any]


def maml_rl(
    env: Env,
    *,
    hidden: Sequence[int] = (100, 100),
    num_tasks: int = 20,
    trajectories: int = 20,
    inner_lr: float = 0.1,
    inner_steps: int = 1,
    discount: float = 0.99,
    gae_lambda: float = 1.0,
    algorithm: str = "maml",
    outer: str = "trpo",
    max_kl: float = 0.01,
    cg_iterations: int = 10,
    cg_damping: float = 1e-5,
    max_backtracks: int = 15,
    ppo_clip: float = 0.2,
    ppo_epochs: int = 5,
    outer_lr: float = 1e-3,
    test_inner_lr: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> MetaRL:
    """MAML-RL as in Finn et al. 2017, sec. 5.3 and App. A.2, with the paper's settings for 2D navigation as
    defaults: a 2 x 100 ReLU Gaussian policy, 20 tasks of 20 episodes per meta-iteration, one inner
    policy-gradient step of 0.1, discount 0.99, MAML's linear baseline with ``gae_lambda=1``, a TRPO outer step
    with KL bound 0.01 (conjugate gradient, 10 iterations).

    Args:
        env: the environment (:mod:`jmeta.rl.envs`).
        hidden: the policy's hidden layer sizes.
        num_tasks: tasks per meta-iteration.
        trajectories: episodes per task for each inner step and for the post-adaptation surrogate.
        inner_lr: the inner step size (policy-gradient ascent).
        inner_steps: inner steps in training (each on fresh episodes); ``"pretrain"`` uses none.
        discount: the advantages' discount (:func:`jmeta.rl.policy.advantages`).
        gae_lambda: the advantages' GAE lambda.
        algorithm: one of :data:`ALGORITHMS` (module docstring).
        outer: ``"trpo"`` or ``"ppo"`` (``ppo_epochs`` full-batch Adam steps of ``outer_lr`` on the clipped
            surrogate, Schulman et al. 2017); not used by ``"reptile"``.
        max_kl: TRPO's KL bound (:func:`jmeta.rl.trpo.trpo_step`).
        cg_iterations: TRPO's conjugate-gradient iterations.
        cg_damping: TRPO's damping of the Fisher-vector products.
        max_backtracks: TRPO's line search's halvings at most.
        ppo_clip: PPO's ratio clip.
        ppo_epochs: PPO's full-batch epochs a meta-iteration.
        outer_lr: PPO's Adam step, or Reptile's outer step size.
        test_inner_lr: the step size of the second and later inner steps in ``adapt_and_rollout`` (evaluation);
            default ``inner_lr / 2``: "halving the learning rate after the first gradient step produced superior
            performance" (the paper, App. A.2).
        mesh: a one-axis mesh (:func:`jmeta.parallel.task_mesh`) whose devices share each meta-iteration's tasks
            (rollouts, inner steps and the outer objective's terms; the parameters are replicated, ``step``'s
            outputs too). A meta-batch that does not divide over it is padded with copies of its first tasks of
            weight 0, so the tasks and every mean are those of one device, up to the order of the sums. None: the
            default device.

    Raises:
        ValueError: naming the argument, for a choice not among those allowed or a non-positive size or step.

    Example: the module docstring.
    """
    algorithm = one_of("algorithm", algorithm, ALGORITHMS)
    outer = one_of("outer", outer, OUTER)
    num_tasks = positive_int("num_tasks", num_tasks)
    trajectories = positive_int("trajectories", trajectories)
    inner_steps = positive_int("inner_steps", inner_steps)
    inner_lr = positive_float("inner_lr", inner_lr)
    max_kl = positive_float("max_kl", max_kl)
    outer_lr = positive_float("outer_lr", outer_lr)
    cg_iterations = positive_int("cg_iterations", cg_iterations)
    ppo_epochs = positive_int("ppo_epochs", ppo_epochs)
    for name, value in (("discount", discount), ("gae_lambda", gae_lambda)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}.")
    hidden = tuple(positive_int("hidden", h) for h in hidden)
    test_inner_lr = inner_lr / 2 if test_inner_lr is None else positive_float("test_inner_lr", test_inner_lr)
    config = {k: v for k, v in locals().items() if k not in ("env", "name", "value", "mesh")}  # the settings, checked
    train_steps = 0 if algorithm == "pretrain" else inner_steps
    first_order = algorithm == "fomaml"
    ppo = optax.adam(outer_lr)
    advantages = functools.partial(pol.advantages, discount=discount, gae_lambda=gae_lambda)

    def init(key: jax.Array) -> MetaRLState:
        params = pol.policy_init(key, env.observation_size, env.action_size, hidden)
        opt_state = ppo.init(params) if outer == "ppo" and algorithm != "reptile" else ()
        return MetaRLState(params, opt_state, jnp.zeros((), jnp.int32))

    def collect(params: PyTree, task: PyTree, key: jax.Array, steps: int) -> tuple[list, list, pol.Trajectories]:
        """Episodes and advantages for each inner step, and the parameters they adapt to."""
        batches, advs = [], []
        for step_key in jax.random.split(key, steps):
            batch = pol.rollout(env, params, task, step_key, trajectories)
            batches.append(batch)
            advs.append(advantages(batch))
            params = inner_update(params, batch, advs[-1], inner_lr, first_order)
        return batches, advs, params

    def sample_task_data(params: PyTree, task: PyTree, key: jax.Array) -> dict[str, Any]:
        pre_key, post_key = jax.random.split(key)
        batches, advs, adapted = collect(params, task, pre_key, train_steps)
        post = pol.rollout(env, adapted, task, post_key, trajectories)
        old = pol.policy_distribution(adapted, post.observations)
        return {
            "batches": batches,
            "advs": advs,
            "post": post,
            "post_adv": advantages(post),
            "old_loc": jax.lax.stop_gradient(old.loc),
            "old_scale": jax.lax.stop_gradient(old.scale_diag),
            "adapted": adapted,
            "return_before": jnp.mean(pol.episode_returns(batches[0] if batches else post)),
            "return_after": jnp.mean(pol.episode_returns(post)),
        }

    def per_task_terms(params: PyTree, data: dict[str, Any]) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(surrogate, clipped surrogate, KL from the sampling policy) of one task at meta-parameters ``params``."""
        adapted = adapt(params, data["batches"], data["advs"], inner_lr, first_order)
        return outer_terms(adapted, data["post"], data["post_adv"], data["old_loc"], data["old_scale"], ppo_clip)

    groups = 1 if mesh is None else mesh.size
    padded_tasks = -(-num_tasks // groups) * groups  # the meta-batch padded to a multiple of the devices
    split = (lambda x: x) if groups == 1 else functools.partial(constrain_tasks, mesh=mesh)

    def weighted_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
        """The mean over the real tasks of per-task ``values`` (leading axis: the padded tasks)."""
        return jnp.tensordot(weights, values, axes=1) / num_tasks

    def step(state: MetaRLState, key: jax.Array) -> tuple[MetaRLState, dict[str, jax.Array]]:
        task_key, rollout_key = jax.random.split(key)
        index = pad_tasks(jnp.arange(num_tasks), groups)  # the same tasks whatever the device count
        weights = (jnp.arange(padded_tasks) < num_tasks).astype(jnp.float32)
        tasks, keys = jax.tree.map(
            lambda a: split(a[index]), (env.sample_tasks(task_key, num_tasks), jax.random.split(rollout_key, num_tasks))
        )
        data = jax.vmap(sample_task_data, in_axes=(None, 0, 0))(state.params, tasks, keys)
        metrics = {name: weighted_mean(data[name], weights) for name in ("return_before", "return_after")}
        by_device = jax.tree.map(lambda a: split(a.reshape(groups, -1, *a.shape[1:])), data)

        def terms(params: PyTree) -> tuple[jax.Array, jax.Array, jax.Array]:
            """The means over the tasks of (surrogate, clipped surrogate, KL). Each device loops over its tasks
            (lax.map) rather than vmapping them: one task's activations stay in cache (29 -> 23 s a meta-iteration
            at the paper's sizes on the loaded 2-core CPU)."""
            per_task = jax.vmap(lambda group: jax.lax.map(lambda task: per_task_terms(params, task), group))(by_device)
            return tuple(weighted_mean(x.reshape(-1), weights) for x in per_task)

        zero = jnp.zeros(())
        if algorithm == "reptile":
            params = jax.tree.map(lambda a, p: p + outer_lr * (weighted_mean(a, weights) - p), data["adapted"],
                                  state.params)
            metrics |= {"improvement": zero, "kl": zero, "fraction": jnp.ones(()), "backtracks": zero}
            return MetaRLState(params, state.opt_state, state.iteration + 1), metrics
        if outer == "trpo":
            params, info = trpo_step(
                lambda p: terms(p)[0],
                lambda p: terms(p)[2],
                state.params,
                max_kl=max_kl,
                cg_iterations=cg_iterations,
                cg_damping=cg_damping,
                max_backtracks=max_backtracks,
            )
            metrics |= info._asdict()
            return MetaRLState(params, state.opt_state, state.iteration + 1), metrics

        def epoch(carry: tuple, _: None) -> tuple[tuple, None]:
            params, opt_state = carry
            gradient = jax.grad(lambda p: -terms(p)[1])(params)
            updates, opt_state = ppo.update(gradient, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        before = terms(state.params)[1]
        (params, opt_state), _ = jax.lax.scan(epoch, (state.params, state.opt_state), None, length=ppo_epochs)
        _, clipped, kl = terms(params)
        metrics |= {"improvement": clipped - before, "kl": kl, "fraction": jnp.ones(()), "backtracks": zero}
        return MetaRLState(params, opt_state, state.iteration + 1), metrics

    def adapt_and_rollout(params: PyTree, task: PyTree, key: jax.Array, steps: int) -> jax.Array:
        returns = []
        for i, step_key in enumerate(jax.random.split(key, steps + 1)):
            batch = pol.rollout(env, params, task, step_key, trajectories)
            returns.append(jnp.mean(pol.episode_returns(batch)))
            params = inner_update(params, batch, advantages(batch), inner_lr if i == 0 else test_inner_lr)
        return jnp.stack(returns)

    returns = jax.jit(jax.vmap(adapt_and_rollout, in_axes=(None, 0, 0, None)), static_argnums=3)
    replicated = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return MetaRL(init, jax.jit(step, out_shardings=replicated), returns, env, config)


class TrainingLog(NamedTuple):
    """What :func:`meta_train` did: the final ``state``, one metrics dict (floats) per meta-iteration it ran, the
    ``compile_seconds`` of compiling the meta-iteration and the ``seconds`` of running them."""

    state: MetaRLState
    history: list[dict[str, float]]
    compile_seconds: float
    seconds: float

    def iterations_per_second(self) -> float:
        """Meta-iterations per second, compilation excluded; NaN without any."""
        return len(self.history) / self.seconds if self.history and self.seconds > 0 else float("nan")


def env_steps_per_iteration(meta: MetaRL) -> int:
    """Environment steps one meta-iteration takes: ``num_tasks * trajectories * horizon`` per rollout stage (the
    inner steps' and the post-adaptation one)."""
    config = meta.config
    stages = 1 + (0 if config["algorithm"] == "pretrain" else config["inner_steps"])
    return config["num_tasks"] * config["trajectories"] * meta.env.horizon * stages


def meta_train(
    meta: MetaRL,
    key: jax.Array,
    iterations: int,
    seconds: float | None = None,
    state: MetaRLState | None = None,
    on_iteration: Callable[[int, dict[str, float], MetaRLState], None] | None = None,
) -> TrainingLog:
    """Runs meta-iterations from ``state.iteration`` until ``iterations`` are done, or until ``seconds`` of wall
    time (compilation included) have passed when given. ``state`` defaults to ``meta.init`` of a key split from
    ``key``. Iteration ``i``, counted over the whole run, uses ``jax.random.fold_in(key, i)`` with that same split
    ``key``: training resumed from a saved state and the same ``key`` continues the uninterrupted run exactly.
    ``on_iteration(i, metrics, state)`` is called after each with the new state (to log or checkpoint it).

    The meta-iteration is compiled ahead with Ctrl-C held back (an interrupt inside XLA's compiler can crash the
    process on exit); a Ctrl-C then raises ``KeyboardInterrupt`` between iterations at the latest, also when
    Python dropped the exception where it was raised (:func:`jmeta.checkpoint.interrupts_remembered`).

    Raises:
        ValueError: naming the argument, for a non-positive ``iterations`` or ``seconds``.

    Example::

        >>> from jmeta.rl.envs import nav2d
        >>> meta = maml_rl(nav2d(horizon=5), hidden=(4,), num_tasks=2, trajectories=2, algorithm="reptile")
        >>> log = meta_train(meta, jax.random.key(0), 2)  # doctest: +SKIP
        >>> int(log.state.iteration), len(log.history)  # doctest: +SKIP
        (2, 2)
    """
    import time

    from jmeta.interrupts import interrupt_deferred, interrupts_remembered

    iterations = positive_int("iterations", iterations)
    if seconds is not None:
        seconds = positive_float("seconds", seconds)
    init_key, key = jax.random.split(key)
    state = meta.init(init_key) if state is None else state
    history: list[dict[str, float]] = []
    first = int(state.iteration)
    if first >= iterations:
        return TrainingLog(state, history, 0.0, 0.0)
    start = time.perf_counter()
    with interrupts_remembered() as interrupted:
        with interrupt_deferred():
            step = meta.step.lower(state, jax.random.fold_in(key, first)).compile()
        compile_seconds = time.perf_counter() - start
        for i in range(first, iterations):
            if interrupted:  # a Ctrl-C whose KeyboardInterrupt was dropped where it was raised
                raise KeyboardInterrupt
            state, metrics = step(state, jax.random.fold_in(key, i))
            history.append({name: float(value) for name, value in metrics.items()})  # waits for the step
            if on_iteration is not None:
                on_iteration(i, history[-1], state)
            if seconds is not None and time.perf_counter() - start >= seconds:
                break
    return TrainingLog(state, history, compile_seconds, time.perf_counter() - start - compile_seconds)
