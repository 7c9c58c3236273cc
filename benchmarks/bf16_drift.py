"""Where bfloat16 sinusoid MAML departs from float32: one piece of the meta-step rounded to bfloat16 at a time.

Each variant meta-trains ``experiments/sinusoid_maml.py`` as ``jmeta train`` does (same config, keys, task
draws ``fold_in(train_key, step)``, Adam, ``batching="auto"``) for ``--steps`` meta-steps, then meta-tests
the last parameters with the config's protocol (``jmeta.train.meta_test``: 600 tasks, K=5, 100 query points).
It prints, per variant and seed, the mean training loss over the last 100 steps (what the last line of
``metrics.jsonl`` holds with ``log_every=100``) and the test MSE after 1, 5 and 10 inner steps with 95% CIs.

A variant is a pair of wrappers, one for the model's passes on the support set (the inner step: the
support loss and its gradient) and one for the pass on the query set (the meta-loss), each one of:

  f32      the model as it is
  bf16     ``jmeta.nn.with_compute_dtype(model, "bfloat16")``: parameters and input cast to bfloat16,
           every product, activation and backward pass in bfloat16, outputs cast back to float32
  inputs   float32 computation on the input rounded to bfloat16
  params   float32 computation on the parameters rounded to bfloat16 (and their gradients, through the cast)
  outputs  float32 computation, the outputs rounded to bfloat16 (and their cotangents)

The parameters the inner step updates, the update itself, the losses and Adam stay float32 in every variant
(as in ``with_compute_dtype``). ``perturbed`` is float32 from parameters initialised 1e-6 (relative) away
from the run's: how far float32 itself drifts from a perturbation at the level of its own round-off;
``init rounded`` is float32 from the run's initial parameters rounded to bfloat16 once: one bfloat16-sized
perturbation, then no precision lost anywhere.

``--step-errors`` instead measures one meta-step of each pass variant against float32 at the same parameters
(the initial ones, and those after ``--steps`` float32 meta-steps), on one meta-batch: the relative errors of
the meta-loss, the meta-gradient and the inner updates (adapted minus meta-parameters).

Run (about 10 s per variant and seed on 2 busy CPU cores)::

    PYTHONPATH=. python benchmarks/bf16_drift.py --seeds 0 1 2 --steps 1500 [--curves DIR]
    PYTHONPATH=. python benchmarks/bf16_drift.py --step-errors --steps 1000
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jmeta.experiment import MODELS, Experiment, build, load_config
from jmeta.learners.base import (
    Learner,
    TaskOutput,
    call_apply,
    gradient_inner_loop,
    query_metrics,
    resolve_inner_optimizer,
    steps_or_default,
)
from jmeta.meta_trainer import meta_trainer
from jmeta.nn import Model, cast_floating, with_compute_dtype
from jmeta.train import meta_test, run_keys

REPO = Path(__file__).resolve().parents[1]


def rounded(tree):
    """``tree`` with its floating-point leaves rounded to bfloat16 and kept float32."""
    return cast_floating(cast_floating(tree, jnp.bfloat16), jnp.float32)


WRAPPERS: dict[str, Callable[[Model], Model]] = {
    "f32": lambda m: m,
    "bf16": lambda m: with_compute_dtype(m, "bfloat16"),
    "inputs": lambda m: Model(m.init, lambda p, s, x: m.apply(p, s, rounded(x))),
    "params": lambda m: Model(m.init, lambda p, s, x: m.apply(rounded(p), s, x)),
    "outputs": lambda m: Model(m.init, lambda p, s, x: rounded(m.apply(p, s, x))),
}
# name: (support pass, query pass)
VARIANTS = {
    "float32": ("f32", "f32"),
    "bfloat16": ("bf16", "bf16"),
    "bf16 support pass only": ("bf16", "f32"),
    "bf16 query pass only": ("f32", "bf16"),
    "inputs rounded": ("inputs", "inputs"),
    "params rounded": ("params", "params"),
    "outputs rounded": ("outputs", "outputs"),
    "perturbed": ("f32", "f32"),
    "init rounded": ("f32", "f32"),
}


def perturbed(params):
    """``params`` times ``1 + 1e-6 n``, ``n`` standard normal (fixed key)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(99), len(leaves))
    noise = [jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return treedef.unflatten([p * (1 + 1e-6 * n) for p, n in zip(leaves, noise, strict=True)])


# Variants that start from other initial parameters than the run's.
INITIAL = {"perturbed": perturbed, "init rounded": rounded}


def split_maml(support: Model, query: Model, loss_fn, inner_lr: float, default_steps: int) -> Learner:
    """MAML (as ``jmeta.maml`` with plain SGD) whose support and query passes use different models over the
    same parameters; test-time adaptation uses ``support``, prediction ``query``."""
    run_inner_loop = gradient_inner_loop(
        support.apply, loss_fn, resolve_inner_optimizer(inner_lr, None), first_order=False, remat=False
    )

    def adapt(params, state, x, y, steps=None):
        return run_inner_loop(params, state, x, y, steps_or_default(steps, default_steps))

    def task_loss(params, state, task, steps=None):
        adapted = adapt(params, state, task.support_x, task.support_y, steps)
        predictions, new_state = call_apply(query.apply, adapted, state, task.query_x)
        loss, values = query_metrics(loss_fn, {}, predictions, task.query_y)
        return loss, TaskOutput(values, new_state)

    return Learner(support.init, adapt, query.apply, task_loss)


def sinusoid_config(seed: int, steps: int):
    return load_config(REPO / "experiments" / "sinusoid_maml.py", [f"steps={steps}", f"seed={seed}", "val_every=0"])


def variant_experiment(name: str, config) -> Experiment:
    """``config``'s experiment (float32, as its ``compute_dtype`` says) with the learner of variant ``name``."""
    experiment = build(config)
    base = MODELS[config.model](config, experiment.family)
    support, query = (WRAPPERS[w](base) for w in VARIANTS[name])
    learner = split_maml(support, query, experiment.family.loss, config.inner_lr, config.inner_steps)
    return Experiment(experiment.family, learner, experiment.meta_optimizer)


def train_variant(name: str, config):
    """Meta-trains as ``jmeta train`` does; returns the experiment, keys, last state and per-step losses."""
    experiment = variant_experiment(name, config)
    trainer = meta_trainer(experiment.learner, experiment.meta_optimizer, batching=config.batching)
    keys = run_keys(config.seed)
    state = trainer.init(keys.init)
    state = state._replace(params=INITIAL.get(name, lambda p: p)(state.params))
    sampler = experiment.family.sample_train

    @jax.jit
    def train(state):
        def one_step(state, _):
            tasks = sampler(jax.random.fold_in(keys.train, state.step), config.meta_batch)
            return trainer.update(state, tasks)

        return jax.lax.scan(one_step, state, length=config.steps)

    state, metrics = train(state)
    return experiment, keys, state, np.asarray(metrics["loss"])


def relative_error(tree, reference) -> float:
    """``|tree - reference| / |reference|`` over all leaves together (Euclidean norms)."""
    flat = lambda t: np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(t)])  # noqa: E731
    return float(np.linalg.norm(flat(tree) - flat(reference)) / np.linalg.norm(flat(reference)))


def step_errors(config, params, state, tasks) -> dict[str, dict[str, float]]:
    """Per variant: the relative error against float32 of the meta-loss, the meta-gradient (mean over
    ``tasks``) and the inner updates (adapted minus ``params``, every task), all at the same ``params``."""

    def quantities(learner):
        def meta_loss(p):
            return jnp.mean(jax.vmap(lambda t: learner.task_loss(p, state, t)[0])(tasks))

        adapt = jax.vmap(lambda t: learner.adapt(params, state, t.support_x, t.support_y))
        loss, grad = jax.jit(jax.value_and_grad(meta_loss))(params)
        return loss, grad, jax.tree.map(jnp.subtract, jax.jit(adapt)(tasks), params)

    loss32, grad32, update32 = quantities(variant_experiment("float32", config).learner)
    errors = {}
    for name in VARIANTS:
        if name in INITIAL or name == "float32":
            continue
        loss, grad, update = quantities(variant_experiment(name, config).learner)
        errors[name] = {
            "meta-loss": abs(float(loss) / float(loss32) - 1),
            "meta-gradient": relative_error(grad, grad32),
            "inner update": relative_error(update, update32),
        }
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--curves", type=Path, help="folder to save each run's per-step losses in (.npy)")
    parser.add_argument(
        "--step-errors",
        action="store_true",
        help="instead: one meta-step's errors per variant, at the initial parameters and after --steps float32 steps",
    )
    args = parser.parse_args()
    if args.step_errors:
        config = sinusoid_config(args.seeds[0], args.steps)
        experiment, keys, state, _ = train_variant("float32", config)
        tasks = experiment.family.sample_train(jax.random.fold_in(keys.train, config.steps), config.meta_batch)
        initial = experiment.learner.init(keys.init)[0]
        print("variant | parameters | relative error against float32: meta-loss / meta-gradient / inner update")
        for label, params in (("initial", initial), (f"after {config.steps} steps", state.params)):
            for name, errors in step_errors(config, params, state.model_state, tasks).items():
                print(f"{name} | {label} | " + " / ".join(f"{value:.2e}" for value in errors.values()), flush=True)
        return
    window = f"{args.steps - 99}-{args.steps}"
    print(f"variant | seed | train loss, mean of steps {window} | test MSE after 1 / 5 / 10 steps (95% CI)")
    for name in args.variants:
        for seed in args.seeds:
            config = sinusoid_config(seed, args.steps)
            experiment, keys, state, losses = train_variant(name, config)
            results = meta_test(config, experiment, state, keys.test)["results"]
            test = " / ".join(
                f"{results[k]['loss']['mean']:.3f} ± {results[k]['loss']['ci95']:.3f}" for k in "1 5 10".split()
            )
            print(f"{name} | {seed} | {losses[-100:].mean():.4f} | {test}", flush=True)
            if args.curves:
                args.curves.mkdir(parents=True, exist_ok=True)
                np.save(args.curves / f"{name.replace(' ', '_')}_{seed}.npy", losses)


if __name__ == "__main__":
    main()
