"""The ``maml-rl`` program of ``jmeta train``: MAML-RL on 2D navigation or the half-cheetah tasks (Finn et al.
2017, sec. 5.3), beside the paper's baselines (a policy pretrained on all tasks, a random initialisation), as in
its Figures 4 and 5. Needs ``pip install 'jmeta[rl]'``.

Config keys: ``env`` (``nav2d``, ``half-cheetah-direction``, ``half-cheetah-velocity``), ``algorithm``
(:data:`jmeta.rl.maml.ALGORITHMS`), ``outer`` (``trpo`` or ``ppo``), ``steps`` (meta-iterations), ``seconds``
(a wall-clock budget per training and invocation, 0 for none), ``seed``, ``meta_batch`` (tasks per
meta-iteration), ``trajectories`` (episodes per task and step), ``inner_lr``, ``max_kl``, ``hidden``,
``eval_tasks``, ``eval_steps`` (the largest number of inner steps at test), ``baselines`` (also train the
pretrained policy), ``checkpoint_every`` (meta-iterations between checkpoints), ``devices`` (0: every local
device) and, optionally, ``horizon`` (the episode length; default the environment's: 100 and 200).

A run like every other (:mod:`jmeta.train`):

* ``metrics.jsonl``: one line per meta-iteration (``run``, ``step`` and the meta-iteration's metrics);
* checkpoints of each training's state (policy, optimiser state, iteration) and its key (meta-iteration ``i`` uses
  ``fold_in(key, i)``) every ``checkpoint_every`` meta-iterations and at its end, with
  :class:`jmeta.checkpoint.Checkpoints`: ``checkpoints/`` for ``algorithm``, ``checkpoints/pretrain/`` for the
  pretrained baseline. Running ``jmeta train`` again on the workdir resumes from them (lines past a checkpoint are
  dropped from ``metrics.jsonl``) and, with ``seconds=0``, ends with the uninterrupted run's metrics and results;
  with a budget, each invocation trains for at most ``seconds`` more;
* Ctrl-C stops between meta-iterations (``jmeta.train.TrainingInterrupted`` names the last checkpoint);
* each meta-iteration's tasks are split over the run's devices (``jmeta.rl.maml.maml_rl``'s ``mesh``);
* ``jmeta eval --workdir D [eval_tasks=N eval_steps=K]`` evaluates the checkpointed policies again
  (:func:`evaluate_run`, this program's ``evaluate`` hook) into ``eval_latest*.json``.

The results (``results.json``) have one row per number of inner steps at test and one column per policy: the mean
episode return ± 95% CI over the test tasks.

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/nav2d_maml_trpo.py", ["steps=2"])  # doctest: +SKIP
    >>> run_program(config, "runs/nav2d")["results"]["1"]["MAML"]["mean"]    # doctest: +SKIP
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jmeta import registry
from jmeta.checkpoint import Checkpoints
from jmeta.distributed import run_mesh
from jmeta.parallel import replicate, replicated
from jmeta.rl import envs
from jmeta.rl.evaluation import compare
from jmeta.rl.maml import MetaRL, MetaRLState, env_steps_per_iteration, maml_rl, meta_train
from jmeta.rl.policy import policy_init
from jmeta.systems.common import report
from jmeta.validation import one_of, positive_int

ENVS = ("nav2d", "half-cheetah-direction", "half-cheetah-velocity")
ROWS = {"maml": "MAML", "fomaml": "first-order MAML", "pretrain": "pretrained", "reptile": "Reptile"}


def make_env(name: str, horizon: int | None = None) -> envs.Env:
    """The environment a config's ``env`` names (one of :data:`ENVS`), with ``horizon`` steps per episode (None:
    the paper's, 100 or 200); ValueError otherwise."""
    name = one_of("env", name, ENVS)
    options = {} if horizon is None else {"horizon": positive_int("horizon", horizon)}
    if name == "nav2d":
        return envs.nav2d(**options)
    return envs.half_cheetah(name.removeprefix("half-cheetah-"), **options)


def trainings(config: ml_collections.ConfigDict) -> dict[str, str]:
    """``{algorithm: row name}`` of the policies a run trains, in order: ``config.algorithm``, then the pretrained
    baseline if ``config.baselines``."""
    algorithm = one_of("algorithm", config.algorithm, tuple(ROWS))
    return {algorithm: ROWS[algorithm], **({"pretrain": ROWS["pretrain"]} if config.baselines else {})}


def checkpoint_directory(workdir: Path, config: ml_collections.ConfigDict, algorithm: str) -> Path:
    """Where a training's checkpoints are: ``checkpoints/`` for ``config.algorithm`` (where ``jmeta train`` looks
    for a run to resume), ``checkpoints/<algorithm>/`` for a baseline."""
    return workdir / "checkpoints" if algorithm == config.algorithm else workdir / "checkpoints" / algorithm


def build(config: ml_collections.ConfigDict, algorithm: str, mesh: jax.sharding.Mesh | None = None) -> MetaRL:
    """The :func:`jmeta.rl.maml.maml_rl` of one training (or of evaluation) of the run ``config``."""
    return maml_rl(
        make_env(config.env, config.get("horizon")),
        algorithm=algorithm,
        hidden=tuple(config.hidden),
        num_tasks=config.meta_batch,
        trajectories=config.trajectories,
        inner_lr=config.inner_lr,
        max_kl=config.max_kl,
        outer=config.outer,
        mesh=mesh,
    )


def program(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Meta-trains ``config.algorithm`` (and, with ``config.baselines``, the pretrained policy) on ``config.env``,
    resuming from the workdir's checkpoints, and evaluates them and a random initialisation on ``config.eval_tasks``
    new tasks (module docstring)."""
    from jmeta.train import interrupted_at

    steps = positive_int("steps", config.steps)
    every = positive_int("checkpoint_every", config.checkpoint_every)
    seconds = float(config.seconds) or None
    mesh = run_mesh(config.devices)
    key = jax.random.key(config.seed)
    policies, speed, reached = {}, {}, {}
    metrics_path = workdir / "metrics.jsonl"
    for algorithm, row in trainings(config).items():
        meta = build(config, algorithm, mesh)
        checkpoints = Checkpoints(checkpoint_directory(workdir, config, algorithm), sharding=replicated(mesh))
        try:
            state = resume_or_init(meta, checkpoints, key, mesh)
            keep_lines(metrics_path, algorithm, int(state.iteration))
            with open(metrics_path, "a") as log:

                def record(
                    i: int, metrics: dict[str, float], state: MetaRLState, run: str = algorithm, saved=checkpoints
                ) -> None:
                    # the line goes out before the checkpoint: a resumed run drops lines past its checkpoint
                    log.write(json.dumps({"run": run, "step": i + 1, **metrics}) + "\n")
                    log.flush()
                    if (i + 1) % every == 0 or i + 1 == steps:
                        saved.save(state, key)

                trained = meta_train(meta, key, steps, seconds=seconds, state=state, on_iteration=record)
            if checkpoints.latest_step() != int(trained.state.iteration):  # stopped by the budget in between
                checkpoints.save(trained.state, key)
        except KeyboardInterrupt:
            where = f"while meta-training {algorithm} ({steps} meta-iterations)"
            raise interrupted_at(where, checkpoints, unit="iteration") from None
        finally:
            checkpoints.close()
        policies[row], reached[row] = trained.state.params, int(trained.state.iteration)
        speed[row] = {
            "meta_iterations_run": len(trained.history),
            "compile_s": round(trained.compile_seconds, 2),
            "meta_iterations_per_s": trained.iterations_per_second(),
            "env_steps_per_s": env_steps_per_iteration(meta) * trained.iterations_per_second(),
        }
    return evaluate_policies(config, policies, reached, "the last parameters of each training", speed=speed)


def resume_or_init(meta: MetaRL, checkpoints: Checkpoints, key: jax.Array, mesh: jax.sharding.Mesh) -> MetaRLState:
    """The state of the newest intact checkpoint, else the initial state :func:`jmeta.rl.maml.meta_train` starts
    from with ``key``; replicated over ``mesh``. ValueError when the checkpoint's key is not ``key`` (another
    seed)."""
    init_key = jax.random.split(key)[0]  # as meta_train splits it
    restored = checkpoints.resume(jax.eval_shape(meta.init, init_key), jax.eval_shape(lambda: key))
    if restored is None:
        return replicate(meta.init(init_key), mesh)
    state, saved_key = restored
    if not np.array_equal(jax.random.key_data(saved_key), jax.random.key_data(key)):
        raise ValueError(f"the checkpoint in {checkpoints.restored_from} has another key than config.seed gives; "
                         "use a new --workdir.")
    print(f"resuming from meta-iteration {int(state.iteration)} ({checkpoints.restored_from})", file=sys.stderr)
    return replicate(state, mesh)


def keep_lines(path: Path, run: str, iteration: int) -> None:
    """Drops the lines of training ``run`` past ``iteration`` from ``metrics.jsonl`` (written after the checkpoint
    it resumes from)."""
    from jmeta.train import write_atomically

    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line]
        kept = [line for line in lines if (r := json.loads(line))["run"] != run or r["step"] <= iteration]
        write_atomically(path, "".join(line + "\n" for line in kept))


def evaluate_policies(
    config: ml_collections.ConfigDict,
    policies: dict[str, Any],
    reached: dict[str, int],
    checkpoint: str,
    **details: Any,
) -> dict[str, Any]:
    """The results of a run: ``policies`` (``{row: params}``, trained for ``reached[row]`` meta-iterations) and a
    random initialisation evaluated on ``config.eval_tasks`` new tasks, before and after 1..``config.eval_steps``
    inner steps (:func:`jmeta.rl.evaluation.compare`), as :func:`jmeta.systems.common.report` shapes them."""
    evaluator = build(config, config.algorithm)
    env = evaluator.env
    key = jax.random.key(config.seed)
    policies = {
        **policies,
        "random init": policy_init(jax.random.fold_in(key, 1), env.observation_size, env.action_size,
                                   tuple(config.hidden)),
    }
    eval_steps = positive_int("eval_steps", config.eval_steps, allow_zero=True)
    results = compare(evaluator, policies, jax.random.fold_in(key, 2), positive_int("eval_tasks", config.eval_tasks),
                      eval_steps)
    rows = {str(k): {name: by_steps[k] for name, by_steps in results.items()} for k in range(eval_steps + 1)}
    runs = ", ".join(f"{name}: {n}" for name, n in reached.items())
    protocol = {
        "tasks": config.eval_tasks,
        "shots": f"{config.trajectories} episodes",
        "queries_per_task": f"{config.trajectories} episodes (the same ones: the return while adapting)",
        "inner_lr": config.inner_lr,
        "checkpoint": f"{checkpoint} ({runs} meta-iterations); rows: inner steps at test",
    }
    return report(config, rows, protocol, **details)


def evaluate_run(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """``jmeta eval``'s hook for a ``maml-rl`` run: evaluates the latest checkpoint of each training (read only;
    the run may still be writing) as the run's results do, with ``config``'s ``eval_tasks`` and ``eval_steps``.

    Raises:
        FileNotFoundError: naming the training without a checkpoint.
    """
    policies, reached = {}, {}
    for algorithm, row in trainings(config).items():
        meta = build(config, algorithm)
        directory = checkpoint_directory(workdir, config, algorithm)
        checkpoints = Checkpoints(directory, read_only=True)
        try:
            abstract = jax.eval_shape(meta.init, jax.random.key(0))
            state, _ = checkpoints.restore(abstract, jax.eval_shape(lambda: jax.random.key(config.seed)))
        except FileNotFoundError:
            raise FileNotFoundError(f"no checkpoint of the {row} training in {directory}; train first with "
                                    "`jmeta train`.") from None
        finally:
            checkpoints.close()
        policies[row], reached[row] = state.params, int(state.iteration)
    return evaluate_policies(config, policies, reached, "the latest checkpoint of each training")


registry.register_program("maml-rl", program, evaluate=evaluate_run)
