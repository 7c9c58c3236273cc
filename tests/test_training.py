"""End to end: configs, a short sinusoid meta-training run, evaluation with confidence intervals, the CLI."""

import json
import re
from typing import NamedTuple

import jax
import numpy as np
import pytest
from conftest import REPO

import jmeta
from jmeta.cli import main
from jmeta.experiment import load_config

SINUSOID = REPO / "experiments" / "sinusoid_maml.py"


def test_estimate_is_the_normal_95_percent_interval():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    result = jmeta.estimate(values)
    assert result.mean == 2.5
    assert result.ci95 == pytest.approx(1.96 * np.std(values, ddof=1) / 2)
    assert result.tasks == 4


def test_short_meta_training_lowers_sinusoid_mse_well_below_the_untrained_model(tmp_path):
    config = load_config(SINUSOID, ["steps=4000", "log_every=1000", "eval_tasks=200", "eval_steps=(1,)"])
    untrained = load_config(SINUSOID, ["steps=1", "log_every=1", "eval_tasks=200", "eval_steps=(1,)"])
    from jmeta.train import train_and_evaluate

    trained_mse = train_and_evaluate(config, tmp_path / "trained")["results"]["1"]["loss"]["mean"]
    untrained_mse = train_and_evaluate(untrained, tmp_path / "untrained")["results"]["1"]["loss"]["mean"]
    assert trained_mse < 0.5 * untrained_mse, (trained_mse, untrained_mse)
    lines = (tmp_path / "trained" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1000, 2000, 3000, 4000]
    assert (tmp_path / "trained" / "sinusoid_adaptation.png").stat().st_size > 10_000


def test_cli_train_prints_the_results_table_beside_the_paper(tmp_path, capsys):
    assert main(["train", str(SINUSOID), "--workdir", str(tmp_path), "steps=20", "log_every=10", "eval_tasks=10"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+10\s+\d+\.\d+ ± \d+\.\d+\s+0\.35$", out, re.MULTILINE), out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["protocol"]["tasks"] == 10 and results["protocol"]["checkpoint"].endswith("step 20")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stepz=3", "unknown config key 'stepz'"),
        ("steps=abc", "config key 'steps' expects an int"),
        ("meta_lr=abc", "config key 'meta_lr' expects a float"),
        ("steps", "overrides must look like key=value"),
    ],
)
def test_bad_overrides_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(SINUSOID, [override])


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["train", str(SINUSOID), "--workdir", str(tmp_path), "steps=0"]) == 2
    assert "steps must be a positive integer (>= 1); got 0" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.py"), "--workdir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_reports_each_step_count_on_the_same_tasks(mlp_model):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    pool = jmeta.tasks.sinusoid_tasks(jax.random.key(5), 10, shots=5, queries=20)

    class PoolTasks(NamedTuple):  # a pytree sampler drawing tasks of a pool of 10 by a random index
        tasks: jmeta.Task

        def __call__(self, key, n):
            return jax.tree.map(lambda a: a[jax.random.randint(key, (n,), 0, 10)], self.tasks)

    sample = PoolTasks(pool)
    results = jmeta.evaluate(
        learner, params, state, sample, jax.random.key(1), num_tasks=30, steps=(0, 3), batch_size=10
    )
    assert set(results) == {0, 3}
    # evaluate draws task j alone, from fold_in(key, j)
    drawn = [int(jax.random.randint(jax.random.fold_in(jax.random.key(1), j), (1,), 0, 10)[0]) for j in range(30)]
    assert len(set(drawn)) > 1
    for k in (0, 3):
        per_task = [
            learner.task_loss(params, state, jax.tree.map(lambda a, i=i: a[i], pool), steps=k)[0] for i in range(10)
        ]
        assert results[k]["loss"].tasks == 30
        np.testing.assert_allclose(results[k]["loss"].mean, np.mean([per_task[i] for i in drawn]), rtol=1e-5)
    assert results[3]["loss"].mean != results[0]["loss"].mean


def test_readme_example_runs_as_written():
    text = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    exec(compile(example, "README.md", "exec"), {})
