"""Populations (jmeta.population): each member equals the separate run with its seed and setting."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO

import jmeta
from jmeta.experiment import load_config
from jmeta.train import train_and_evaluate

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
# Short runs: 2 blocks of 5 steps, validated after each; small validation and test sets.
SHORT = ["steps=10", "log_every=5", "val_every=5", "val_tasks=10", "eval_tasks=10", "eval_steps=(0, 1)",
         "meta_batch=4", "hidden=(16, 16)"]


def _config(*overrides):
    return load_config(SINUSOID, [*SHORT, *overrides])


def _lines(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _member_lines(workdir, k):
    """Member ``k``'s metrics as a single run logs them."""
    return [
        {name: value[k] for name, value in line.items() if isinstance(value, list) and name != "stopped"}
        for line in _lines(workdir)
    ]


def _single_lines(workdir):
    return [{k: v for k, v in line.items() if k not in ("step", "tasks_per_s")} for line in _lines(workdir)]


def _test_means(results):
    return {steps: by_metric["loss"]["mean"] for steps, by_metric in results["results"].items()}


def _assert_member_is_run(population, k, single, single_workdir, population_workdir):
    member = population["members"][k]
    for got, want in zip(_member_lines(population_workdir, k), _single_lines(single_workdir), strict=True):
        assert got.keys() == want.keys()
        for name in got:
            np.testing.assert_allclose(got[name], want[name], rtol=2e-4, err_msg=name)
    for steps, mean in _test_means(single).items():
        np.testing.assert_allclose(member["results"][steps]["loss"]["mean"], mean, rtol=2e-4)


def test_three_seeds_are_the_three_separate_runs(tmp_path):
    population = train_and_evaluate(_config("seeds=3", "seed=5"), tmp_path / "population")
    assert [m["seed"] for m in population["members"]] == [5, 6, 7]
    for k in range(3):
        single = train_and_evaluate(_config(f"seed={5 + k}"), tmp_path / f"seed{k}")
        _assert_member_is_run(population, k, single, tmp_path / f"seed{k}", tmp_path / "population")
    # the summary across seeds is the mean of the members' results, with Student's t CI (t(0.975, 2) = 4.303)
    means = [m["results"]["1"]["loss"]["mean"] for m in population["members"]]
    summary = population["settings"][0]["results"]["1"]["loss"]
    assert summary["mean"] == pytest.approx(np.mean(means))
    assert summary["ci95_seeds"] == pytest.approx(4.3027 * np.std(means, ddof=1) / np.sqrt(3), rel=1e-4)


def test_a_sweep_member_is_the_run_with_its_setting(tmp_path):
    sweep = 'sweep={"inner_lr": (0.01, 0.05), "meta_lr": (0.001, 0.01)}'
    population = train_and_evaluate(_config(sweep), tmp_path / "population")
    assert [m["setting"] for m in population["members"]][3] == {"inner_lr": 0.05, "meta_lr": 0.01}
    single = train_and_evaluate(_config("inner_lr=0.05", "meta_lr=0.01"), tmp_path / "single")
    _assert_member_is_run(population, 3, single, tmp_path / "single", tmp_path / "population")
    assert population["best_setting"]["setting"] in [s["setting"] for s in population["settings"]]
    chosen = min(population["settings"], key=lambda s: s["mean_best_val_loss"])
    assert population["best_setting"]["setting"] == chosen["setting"]
    run = jmeta.load_run(tmp_path / "population", member=3)
    reference = jmeta.load_run(tmp_path / "single")
    assert run.config.inner_lr == 0.05 and run.step == reference.step
    for a, b in zip(jax_leaves(run.params), jax_leaves(reference.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def jax_leaves(tree):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]
