"""A meta-optimiser schedule that spans the run (Reptile's annealed meta step, MAML++'s cosine) has its
horizon fixed when the run starts and recorded: extending a run keeps it, said in one line, so the extended
run agrees with an uninterrupted run of the first length."""

import json

from conftest import REPO

from jmeta.cli import main

REPTILE = f'''
from jmeta.experiment import load_config


def get_config():
    c = load_config({str(REPO / "experiments" / "sinusoid_maml.py")!r})
    c.learner, c.inner_lr, c.inner_steps, c.transductive, c.meta_lr = "reptile", 0.01, 3, True, 1.0
    c.meta_batch, c.log_every, c.val_every, c.eval_tasks, c.eval_steps = 4, 1, 0, 4, (1,)
    return c
'''


def losses(workdir):
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_extending_a_run_keeps_its_schedule_horizon(tmp_path, capsys):
    config = tmp_path / "reptile.py"
    config.write_text(REPTILE)
    straight, extended = tmp_path / "straight", tmp_path / "extended"
    assert main(["train", str(config), "--workdir", str(straight), "steps=2"]) == 0
    assert main(["train", str(config), "--workdir", str(extended), "steps=1"]) == 0
    capsys.readouterr()
    assert main(["train", str(config), "--workdir", str(extended), "steps=2"]) == 0
    assert "schedule keeps the horizon the run started with, schedule_steps=1 (steps=2 now)" in capsys.readouterr().err
    assert json.loads((extended / "config.json").read_text())["schedule_steps"] == 1
    assert json.loads((straight / "config.json").read_text())["schedule_steps"] == 2
    # Horizon 1: the meta step is annealed to 0 after step 1, so the extended run's step 2 changes nothing
    # that a horizon-2 run's step 2 changes; the first steps agree exactly.
    assert losses(extended)[0] == losses(straight)[0]
    same_horizon = tmp_path / "same"
    assert main(["train", str(config), "--workdir", str(same_horizon), "steps=2", "schedule_steps=1"]) == 0
    assert losses(same_horizon) == losses(extended)


def test_a_lower_steps_on_a_finished_run_keeps_its_record(tmp_path, capsys):
    config = tmp_path / "reptile.py"
    config.write_text(REPTILE)
    assert main(["train", str(config), "--workdir", str(tmp_path / "run"), "steps=2"]) == 0
    assert main(["train", str(config), "--workdir", str(tmp_path / "run"), "steps=1"]) == 0
    assert "already reached step 2; steps=1 trains nothing more" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 2
