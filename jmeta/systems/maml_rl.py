"""The ``maml-rl`` program of ``jmeta train``: MAML-RL on 2D navigation or the half-cheetah tasks (Finn et al.
2017, sec. 5.3), beside the paper's baselines (a policy pretrained on all tasks, a random initialisation), as in
its Figures 4 and 5. Needs ``pip install 'jmeta[rl]'``.

Config keys: ``env`` (``nav2d``, ``half-cheetah-direction``, ``half-cheetah-velocity``), ``algorithm``
(:data:`jmeta.rl.maml.ALGORITHMS`), ``outer`` (``trpo`` or ``ppo``), ``steps`` (meta-iterations), ``seconds``
(a wall-clock budget per training, 0 for none), ``seed``, ``meta_batch`` (tasks per meta-iteration),
``trajectories`` (episodes per task and step), ``inner_lr``, ``max_kl``, ``hidden``, ``eval_tasks``,
``eval_steps`` (the largest number of inner steps at test) and ``baselines`` (also train the pretrained policy).

Writes ``metrics.jsonl`` (one line per meta-iteration: ``run``, ``step`` and the meta-iteration's metrics) and
returns the results that ``run_program`` writes to ``results.json``: one row per number of inner steps at test,
one column per policy (mean episode return ± 95% CI over the test tasks).

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/nav2d_maml_trpo.py", ["steps=2"])  # doctest: +SKIP
    >>> run_program(config, "runs/nav2d")["results"]["1"]["MAML"]["mean"]    # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jmeta import registry
from jmeta.rl import envs
from jmeta.rl.evaluation import compare
from jmeta.rl.maml import env_steps_per_iteration, maml_rl, meta_train
from jmeta.rl.policy import policy_init
from jmeta.systems.common import report
from jmeta.validation import one_of, positive_int

ENVS = ("nav2d", "half-cheetah-direction", "half-cheetah-velocity")


def make_env(name: str) -> envs.Env:
    """The environment a config's ``env`` names (one of :data:`ENVS`); ValueError otherwise."""
    name = one_of("env", name, ENVS)
    return envs.nav2d() if name == "nav2d" else envs.half_cheetah(name.removeprefix("half-cheetah-"))


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Meta-trains ``config.algorithm`` (and, with ``config.baselines``, the pretrained policy) on ``config.env``
    and evaluates them and a random initialisation on ``config.eval_tasks`` new tasks (module docstring)."""
    env = make_env(config.env)
    settings = {
        "hidden": tuple(config.hidden),
        "num_tasks": config.meta_batch,
        "trajectories": config.trajectories,
        "inner_lr": config.inner_lr,
        "max_kl": config.max_kl,
        "outer": config.outer,
    }
    steps = positive_int("steps", config.steps)
    seconds = float(config.seconds) or None
    algorithms = {config.algorithm: config.algorithm.upper().replace("FOMAML", "first-order MAML")}
    if config.baselines:
        algorithms["pretrain"] = "pretrained"
    policies, speed = {}, {}
    key = jax.random.key(config.seed)
    with open(workdir / "metrics.jsonl", "w") as log:
        for algorithm, row in algorithms.items():
            meta = maml_rl(env, algorithm=algorithm, **settings)

            def write(i: int, metrics: dict[str, float], run: str = algorithm) -> None:
                log.write(json.dumps({"run": run, "step": i + 1, **metrics}) + "\n")
                log.flush()

            trained = meta_train(meta, key, steps, seconds=seconds, on_iteration=write)
            policies[row] = trained.state.params
            speed[row] = {
                "meta_iterations": len(trained.history),
                "compile_plus_first_s": round(trained.compile_seconds, 2),
                "meta_iterations_per_s": trained.iterations_per_second(),
                "env_steps_per_s": env_steps_per_iteration(meta) * trained.iterations_per_second(),
            }
    policies["random init"] = policy_init(jax.random.fold_in(key, 1), env.observation_size, env.action_size,
                                          tuple(config.hidden))
    evaluator = maml_rl(env, **settings)
    eval_steps = positive_int("eval_steps", config.eval_steps, allow_zero=True)
    results = compare(evaluator, policies, jax.random.fold_in(key, 2), positive_int("eval_tasks", config.eval_tasks),
                      eval_steps)
    rows = {str(k): {name: by_steps[k] for name, by_steps in results.items()} for k in range(eval_steps + 1)}
    runs = ", ".join(f"{name}: {s['meta_iterations']}" for name, s in speed.items())
    protocol = {
        "tasks": config.eval_tasks,
        "shots": f"{config.trajectories} episodes",
        "queries_per_task": f"{config.trajectories} episodes (the same ones: the return while adapting)",
        "inner_lr": config.inner_lr,
        "checkpoint": f"the last parameters of each run ({runs} meta-iterations); rows: inner steps at test",
    }
    return report(config, rows, protocol, speed=speed)


registry.register_program("maml-rl", program)
