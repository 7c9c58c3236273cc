"""Meta-trains MAML-TRPO (and the paper's "pretrained" baseline) on 2D navigation for a wall-clock budget, then
reports the return before and after 1, 2, 3 inner steps on new tasks (mean ± 95% CI), beside a random
initialisation, and the compiled meta-iteration's speed. Finn et al. 2017, sec. 5.3 and Figure 4.

Run: PYTHONPATH=. python benchmarks/nav2d_maml_rl.py --seconds 300 --out runs/nav2d_maml_rl.json
"""

import argparse
import json
import time

import jax

from jmeta.rl import envs, maml
from jmeta.rl.evaluation import compare, format_comparison
from jmeta.rl.policy import policy_init, rollout


def rollout_speed(env: envs.Env, tasks: int, trajectories: int, repeats: int = 5) -> float:
    """Env steps/s of one compiled call that rolls out the 2 x 100 policy on ``tasks`` x ``trajectories`` episodes
    (best of ``repeats`` after compiling)."""
    params = policy_init(jax.random.key(0), env.observation_size, env.action_size)

    @jax.jit
    def run(key: jax.Array) -> jax.Array:
        goals = env.sample_tasks(key, tasks)
        keys = jax.random.split(key, tasks)
        return jax.vmap(lambda goal, k: rollout(env, params, goal, k, trajectories).rewards)(goals, keys)

    run(jax.random.key(0)).block_until_ready()
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        run(jax.random.key(i + 1)).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return tasks * trajectories * env.horizon / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="wall-clock budget per training")
    parser.add_argument("--iterations", type=int, default=500, help="at most this many meta-iterations")
    parser.add_argument("--tasks", type=int, default=20, help="tasks per meta-iteration (the paper: 20)")
    parser.add_argument("--trajectories", type=int, default=20, help="episodes per task (the paper: 20)")
    parser.add_argument("--eval-tasks", type=int, default=40)
    parser.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rollouts-only", action="store_true", help="only the rollouts' env steps/s")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    env = envs.nav2d()
    speed = rollout_speed(env, args.tasks, args.trajectories)
    print(f"rollouts alone: {speed:.0f} env steps/s ({args.tasks} tasks x {args.trajectories} episodes, one call)")
    if args.rollouts_only:
        return
    report = {"args": vars(args), "rollout_env_steps_per_s": speed, "train": {}}
    policies = {}
    for algorithm in ("maml", "pretrain") if args.baselines else ("maml",):
        meta = maml.maml_rl(env, num_tasks=args.tasks, trajectories=args.trajectories, algorithm=algorithm)
        log = maml.meta_train(meta, jax.random.key(0), args.iterations, seconds=args.seconds,
                              on_iteration=lambda i, m, _, a=algorithm: print(a, i, json.dumps(m), flush=True))
        steps_per_iteration = maml.env_steps_per_iteration(meta)
        report["train"][algorithm] = {
            "iterations": len(log.history),
            "compile_s": log.compile_seconds,
            "meta_iterations_per_s": log.iterations_per_second(),
            "env_steps_per_iteration": steps_per_iteration,
            "env_steps_per_s": steps_per_iteration * log.iterations_per_second(),
            "history": log.history,
        }
        policies["MAML" if algorithm == "maml" else "pretrained"] = log.state.params
    policies["random init"] = policy_init(jax.random.key(12345), env.observation_size, env.action_size)
    evaluator = maml.maml_rl(env, trajectories=args.trajectories)  # inner step 0.1, 20 episodes per step
    results = compare(evaluator, policies, jax.random.key(2024), num_tasks=args.eval_tasks, steps=3)
    report["evaluation"] = {name: {k: est._asdict() for k, est in r.items()} for name, r in results.items()}
    table = format_comparison(results)
    report["table"] = table
    print(table)
    for name, train in report["train"].items():
        print(f"{name}: {train['iterations']} meta-iterations, compile {train['compile_s']:.1f} s, "
              f"{train['meta_iterations_per_s']:.4f} meta-iterations/s, {train['env_steps_per_s']:.0f} env steps/s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
