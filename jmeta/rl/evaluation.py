"""Meta-test evaluation for meta-reinforcement learning: the average return on new tasks before and after 1, 2, 3
inner policy-gradient steps, with 95% confidence intervals (1.96 std / sqrt(tasks)), beside the baselines of
Finn et al. 2017, Figures 4 and 5: a policy pretrained on all tasks and a random initialisation.

Example::

    >>> import jax
    >>> from jmeta.rl.envs import nav2d
    >>> from jmeta.rl.maml import maml_rl
    >>> meta = maml_rl(nav2d(horizon=10), hidden=(8,), trajectories=4)
    >>> params = meta.init(jax.random.key(0)).params
    >>> results = evaluate(meta, params, jax.random.key(1), num_tasks=5, steps=2)  # doctest: +SKIP
    >>> sorted(results)  # doctest: +SKIP
    [0, 1, 2]
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jmeta.evaluation import Estimate, finite_estimates
from jmeta.rl.maml import MetaRL
from jmeta.validation import positive_int

PyTree = Any


def evaluate(meta: MetaRL, params: PyTree, key: jax.Array, num_tasks: int = 40, steps: int = 3) -> dict[int, Estimate]:
    """The mean episode return before (key 0) and after 1..``steps`` inner steps, over ``num_tasks`` new tasks.

    Each task gets ``meta.config["trajectories"]`` fresh episodes per step (the same episodes adapt the policy and
    measure its return, as the paper's Figure 4 counts returns after each step of the adaptation), inner step
    ``meta.config["inner_lr"]``. Tasks whose returns are not finite are counted as diverged.

    Args:
        meta: from :func:`jmeta.rl.maml.maml_rl`.
        params: the policy's (meta-)parameters.
        key: a PRNG key; the tasks come from ``meta.env.sample_tasks`` with a key split from it.
        num_tasks: new tasks (at least 2).
        steps: the largest number of inner steps (>= 0).

    Returns:
        ``{steps_taken: Estimate}`` for ``steps_taken`` in ``0..steps``.

    Raises:
        ValueError: naming the argument, for ``num_tasks < 2`` or a negative ``steps``.
    """
    num_tasks = positive_int("num_tasks", num_tasks)
    if num_tasks < 2:
        raise ValueError(f"num_tasks must be at least 2 for a confidence interval; got {num_tasks}.")
    steps = positive_int("steps", steps, allow_zero=True)
    task_key, rollout_key = jax.random.split(key)
    tasks = meta.env.sample_tasks(task_key, num_tasks)
    returns = np.asarray(meta.adapt_and_rollout(params, tasks, jax.random.split(rollout_key, num_tasks), steps))
    estimates = finite_estimates({k: returns[:, k] for k in range(steps + 1)})
    return {k: estimates[k] for k in range(steps + 1)}


def compare(
    meta: MetaRL, policies: dict[str, PyTree], key: jax.Array, num_tasks: int = 40, steps: int = 3
) -> dict[str, dict[int, Estimate]]:
    """:func:`evaluate` for each named policy on the same tasks and episodes' keys (e.g. ``{"MAML": ...,
    "pretrained": ..., "random": ...}``, as the paper's Figure 4)."""
    return {name: evaluate(meta, params, key, num_tasks, steps) for name, params in policies.items()}


def format_comparison(results: dict[str, dict[int, Estimate]]) -> str:
    """A Markdown table: one row per policy, one column per number of inner steps (mean ± 95% CI)."""
    steps = sorted(next(iter(results.values())))
    lines = ["| policy | " + " | ".join(f"{k} steps" for k in steps) + " |", "| --- |" + " --- |" * len(steps)]
    lines += [f"| {name} | " + " | ".join(str(r[k]) for k in steps) + " |" for name, r in results.items()]
    return "\n".join(lines)
