"""Meta-training and meta-testing a config: the loop with its side effects (progress, files).

Outputs in ``workdir``: ``metrics.jsonl`` (one JSON object per logging step), ``results.json``
(the meta-test estimates with their protocol) and, for sinusoid, ``sinusoid_adaptation.png``.

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/sinusoid_maml.py", ["steps=200"])   # doctest: +SKIP
    >>> results = train_and_evaluate(config, "runs/try")                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from tqdm import tqdm

from jmeta.evaluation import evaluate
from jmeta.experiment import Experiment, build
from jmeta.meta_trainer import MetaTrainer, TrainState, meta_trainer


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Meta-trains as ``config`` says, evaluates on fresh tasks, writes outputs to ``workdir``."""
    experiment = build(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    trainer = meta_trainer(experiment.learner, experiment.meta_optimizer, batching=config.batching)
    init_key, train_key, eval_key, plot_key = jax.random.split(jax.random.key(config.seed), 4)
    state = meta_train(
        config, experiment, trainer, trainer.init(init_key), train_key, workdir / "metrics.jsonl"
    )
    results = meta_test(config, experiment, state, eval_key)
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if config.task == "sinusoid":
        from jmeta.plotting import plot_sinusoid_adaptation

        plot_sinusoid_adaptation(
            experiment.learner,
            state.params,
            state.model_state,
            plot_key,
            shots=config.eval_shots,
            steps=(0, 1, 10),
            path=workdir / "sinusoid_adaptation.png",
        )
    return results


def meta_train(
    config: ml_collections.ConfigDict,
    experiment: Experiment,
    trainer: MetaTrainer,
    state: TrainState,
    key: jax.Array,
    metrics_path: Path,
) -> TrainState:
    """Runs ``config.steps`` meta-steps, ``config.log_every`` per compiled call, logging each call's mean."""
    run_steps = jax.jit(
        lambda state, n: _scan_steps(experiment, trainer, config.meta_batch, state, key, n), static_argnums=1
    )
    with open(metrics_path, "a") as log, tqdm(total=config.steps, desc="meta-train", unit="step") as bar:
        while (done := int(state.step)) < config.steps:
            count = min(config.log_every, config.steps - done)
            start = time.perf_counter()
            state, metrics = run_steps(state, count)
            metrics = {name: float(value) for name, value in metrics.items()}
            tasks_per_s = count * config.meta_batch / (time.perf_counter() - start)
            log.write(json.dumps({"step": done + count, **metrics, "tasks_per_s": tasks_per_s}) + "\n")
            log.flush()
            bar.set_postfix({**{k: f"{v:.4g}" for k, v in metrics.items()}, "tasks/s": f"{tasks_per_s:.0f}"})
            bar.update(count)
    return state


def _scan_steps(
    experiment: Experiment,
    trainer: MetaTrainer,
    meta_batch: int,
    state: TrainState,
    key: jax.Array,
    count: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """``count`` meta-steps in one program; step ``i``'s tasks come from ``fold_in(key, i)``."""

    def one_step(state: TrainState, _: None) -> tuple[TrainState, dict[str, jax.Array]]:
        tasks = experiment.sample_train(jax.random.fold_in(key, state.step), meta_batch)
        return trainer.update(state, tasks)

    state, metrics = jax.lax.scan(one_step, state, length=count)
    return state, jax.tree.map(jnp.mean, metrics)


def meta_test(
    config: ml_collections.ConfigDict, experiment: Experiment, state: TrainState, key: jax.Array
) -> dict[str, Any]:
    """Evaluates on ``config.eval_tasks`` fresh tasks; returns the estimates with their protocol."""
    estimates = evaluate(
        experiment.learner,
        state.params,
        state.model_state,
        experiment.sample_eval,
        key,
        num_tasks=config.eval_tasks,
        steps=config.eval_steps,
        batching_strategy=config.batching,
    )
    return {
        "protocol": {
            "tasks": config.eval_tasks,
            "shots": config.eval_shots,
            "queries_per_task": config.eval_queries,
            "inner_steps": list(config.eval_steps),
            "inner_lr": config.inner_lr,
            "ci": "95%, 1.96 * std / sqrt(tasks)",
            "meta_train_steps": int(state.step),
            "seed": config.seed,
        },
        "results": {
            str(k): {name: e._asdict() for name, e in by_metric.items()} for k, by_metric in estimates.items()
        },
        "published": dict(config.published),
        "published_source": config.published_source,
    }


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of meta-test results beside the published numbers."""
    lines = [f"{'inner steps':>11}  {'jmeta (mean ± 95% CI)':>24}  {'published':>9}"]
    for steps, by_metric in results["results"].items():
        loss = by_metric["loss"]
        published = results["published"].get(steps)
        lines.append(
            f"{steps:>11}  {loss['mean']:>15.3f} ± {loss['ci95']:<6.3f}  "
            f"{'' if published is None else f'{published:.2f}':>9}"
        )
    protocol = results["protocol"]
    lines.append(
        f"protocol: {protocol['tasks']} tasks, {protocol['shots']}-shot, {protocol['queries_per_task']} query "
        f"points each, SGD lr {protocol['inner_lr']}; published: {results['published_source']}"
    )
    return "\n".join(lines)
