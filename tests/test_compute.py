"""Training compute in example passes (jmeta.compute): the declared or default passes per learner, and what
`jmeta train` records (cumulative in metrics.jsonl, at the tested checkpoint in results.json's protocol);
`keep_checkpoints=0` keeps every checkpoint for curves against compute."""

import json
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import optax
import pytest

import jmeta
from jmeta.compute import example_passes, passes_per_step
from jmeta.experiment import few_shot_config, load_config
from jmeta.tasks import Task
from jmeta.train import train_and_evaluate

SINUSOID = Path(__file__).resolve().parents[1] / "experiments" / "sinusoid_maml.py"


def tasks(count, support, query):
    return Task(jnp.zeros((count, support, 3)), jnp.zeros((count, support)), jnp.zeros((count, query, 3)),
                jnp.zeros((count, query)))


@pytest.mark.parametrize(
    ("learner", "overrides", "expected"),
    [
        ("maml", {"inner_steps": 5}, (5, 1)),  # the inner loop passes the support set once per step
        ("boil", {"inner_steps": 2}, (2, 1)),
        ("reptile", {"inner_steps": 3}, (3, 1)),
        ("imaml", {"inner_steps": 4, "cg_steps": 5}, (9, 1)),  # declared: a support pass per CG step too
        ("protonet", {}, (1, 1)),  # embedded once
        ("metaoptnet-r2d2", {}, (1, 1)),
        ("matchingnet", {}, (1, 1)),
        ("baseline++", {"inner_steps": 100}, (1, 1)),  # inner_steps are test-time epochs, not training
    ],
)
def test_example_passes_of_the_learners(learner, overrides, expected):
    config = few_shot_config("omniglot", learner, ways=5, shots=1)
    with config.unlocked():
        config.update(overrides)
    assert example_passes(config) == expected


def test_passes_per_step_is_the_maml_formula_and_follows_declarations_not_names():
    config = ml_collections.ConfigDict({"learner": "maml", "inner_steps": 3})
    assert passes_per_step(config, tasks(32, 5, 75)) == 32 * (3 * 5 + 75)

    def builder(config, model, family):
        return jmeta.maml(model, family.loss, 0.1, 1), optax.adam(1e-3)

    jmeta.register_learner("compute-test-inner", builder, replace=True, inner_lr=True)
    jmeta.register_learner("compute-test-declared", builder, replace=True, example_passes=lambda c: (c.k, 2))
    inner = ml_collections.ConfigDict({"learner": "compute-test-inner", "inner_steps": 7})
    declared = ml_collections.ConfigDict({"learner": "compute-test-declared", "k": 4})
    assert passes_per_step(inner, tasks(2, 10, 20)) == 2 * (7 * 10 + 20)
    assert passes_per_step(declared, tasks(2, 10, 20)) == 2 * (4 * 10 + 2 * 20)
    jmeta.register_learner("compute-test-declared", builder, replace=True, example_passes=lambda c: (1.5, 1))
    with pytest.raises(ValueError, match="example_passes must give two non-negative integers .* got \\(1.5, 1\\)"):
        passes_per_step(declared, tasks(2, 10, 20))
    with pytest.raises(ValueError, match="tasks must be a batch of tasks"):
        passes_per_step(config, Task(jnp.zeros((5,)), jnp.zeros((5,)), jnp.zeros((5,)), jnp.zeros((5,))))


def test_train_records_cumulative_passes_and_keeps_every_checkpoint(tmp_path):
    overrides = ["steps=6", "log_every=2", "val_every=2", "val_tasks=5", "eval_tasks=5", "eval_steps=(1,)"]
    config = load_config(SINUSOID, [*overrides, "keep_checkpoints=0"])
    results = train_and_evaluate(config, tmp_path)
    per_step = config.meta_batch * (config.inner_steps * config.shots + config.queries)  # 25 * (1 * 10 + 10)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["training_example_passes"] for r in records] == [2 * per_step, 4 * per_step, 6 * per_step]
    best_step = int(results["protocol"]["checkpoint"].rsplit(" ", 1)[1])
    assert results["protocol"]["training_example_passes"] == best_step * per_step
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints" / "latest").iterdir()) == [2, 4, 6]


def test_keep_checkpoints_must_be_a_count():
    with pytest.raises(ValueError, match="keep_checkpoints must be"):
        train_and_evaluate(load_config(SINUSOID, ["keep_checkpoints=-1"]), "/nonexistent/never-written")
