"""Populations (jmeta.population): each member equals the separate run with its seed and setting."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
from conftest import REPO, kill_at_first_checkpoint

import jmeta
from jmeta.cli import main
from jmeta.experiment import load_config
from jmeta.population import member_config, members, population_mesh, train_population
from jmeta.train import train_and_evaluate

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
# Short runs: 2 blocks of 5 steps, validated after each; small validation and test sets.
SHORT = [
    "steps=10",
    "log_every=5",
    "val_every=5",
    "val_tasks=10",
    "eval_tasks=10",
    "eval_steps=(0, 1)",
    "meta_batch=4",
    "hidden=(16, 16)",
]


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


@pytest.mark.slow
def test_three_seeds_are_the_three_separate_runs(tmp_path):
    population = train_population(_config("seeds=3", "seed=5"), tmp_path / "population")
    assert [m["seed"] for m in population["members"]] == [5, 6, 7]
    for k in range(3):
        single = train_and_evaluate(_config(f"seed={5 + k}"), tmp_path / f"seed{k}")
        _assert_member_is_run(population, k, single, tmp_path / f"seed{k}", tmp_path / "population")
    # the summary across seeds is the mean of the members' results, with Student's t CI (t(0.975, 2) = 4.303)
    means = [m["results"]["1"]["loss"]["mean"] for m in population["members"]]
    summary = population["settings"][0]["results"]["1"]["loss"]
    assert summary["mean"] == pytest.approx(np.mean(means))
    assert summary["ci95_seeds"] == pytest.approx(4.3027 * np.std(means, ddof=1) / np.sqrt(3), rel=1e-4)


@pytest.mark.slow
def test_a_sweep_member_is_the_run_with_its_setting_and_a_diverging_member_stops_alone(tmp_path, capsys):
    # meta_lr=1e38: the first Adam step sends the parameters to ~1e38, the second step's loss is infinite
    sweep = 'sweep={"inner_lr": (0.01, 0.05), "meta_lr": (0.001, 1e38)}'
    population = train_population(_config(sweep), tmp_path / "population")
    settings = [m["setting"] for m in population["members"]]
    assert settings == [{"inner_lr": a, "meta_lr": b} for a in (0.01, 0.05) for b in (0.001, 1e38)]
    assert [m["stopped_at"] for m in population["members"]] == [None, 2, None, 2]
    assert "member 1 (seed 0, inner_lr=0.01, meta_lr=1e+38) became non-finite at meta-step 2" in capsys.readouterr().err
    assert [line["stopped"] for line in _lines(tmp_path / "population")] == [[None, 2, None, 2]] * 2
    assert population["members"][1]["checkpoint"] == "last finite (stopped before its first validation), step 1"
    # the others are unchanged: member 2 is the single run with its setting
    single = train_and_evaluate(_config("inner_lr=0.05", "meta_lr=0.001"), tmp_path / "single")
    _assert_member_is_run(population, 2, single, tmp_path / "single", tmp_path / "population")
    # the best setting is chosen by validation alone
    chosen = min((s for s in population["settings"] if not s["stopped"]), key=lambda s: s["mean_best_val_loss"])
    assert population["best_setting"]["setting"] == chosen["setting"]
    run, reference = jmeta.load_run(tmp_path / "population", member=2), jmeta.load_run(tmp_path / "single")
    assert run.config.inner_lr == 0.05 and "sweep" not in run.config and run.step == reference.step
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # jmeta eval of one member re-tests it as the run tested it
    assert main(["eval", "--workdir", str(tmp_path / "population"), "member=2"]) == 0
    again = json.loads((tmp_path / "population" / "eval_best_member=2.json").read_text())
    assert [m["member"] for m in again["members"]] == [2]
    assert again["members"][0]["results"] == population["members"][2]["results"]
    with pytest.raises(ValueError, match="pass member=K"):
        jmeta.load_run(tmp_path / "population")
    with pytest.raises(ValueError, match="member must be an int from 0 to 3"):
        jmeta.load_run(tmp_path / "population", member=4)


@pytest.mark.slow
def test_a_population_on_4_simulated_devices_is_the_one_on_1(tmp_path):
    script = textwrap.dedent(
        f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax
        from jmeta.experiment import load_config
        from jmeta.population import train_population
        assert jax.device_count() == 4, jax.devices()
        for devices in (1, 4):
            config = load_config({SINUSOID!r}, {SHORT!r} + ["seeds=2", f"devices={{devices}}"])
            train_population(config, {str(tmp_path)!r} + f"/d{{devices}}")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {d: json.loads((tmp_path / f"d{d}" / "results.json").read_text()) for d in (1, 4)}
    # 2 members over 2 devices, each member's 4 tasks over 2
    assert results[1]["population"]["mesh"] == {"population": 1, "tasks": 1}
    assert results[4]["population"]["mesh"] == {"population": 2, "tasks": 2}
    for a, b in zip(_lines(tmp_path / "d1"), _lines(tmp_path / "d4"), strict=True):
        for name in ("loss", "grad_norm", "val_loss"):
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5)
    for one, four in zip(results[1]["members"], results[4]["members"], strict=True):
        for steps, mean in _test_means(one).items():
            np.testing.assert_allclose(_test_means(four)[steps], mean, rtol=1e-5)


def _train(workdir, *overrides):
    command = [sys.executable, "-m", "jmeta.cli", "train", SINUSOID, "--workdir", str(workdir), *overrides]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_population_resumes_exactly(tmp_path):
    run = [*SHORT, "steps=3000", "log_every=50", "val_every=100", "seeds=2", 'sweep={"inner_lr": (0.01, 0.02)}']
    reference, interrupted = _train(tmp_path / "reference", *run), _train(tmp_path / "interrupted", *run)
    kill_at_first_checkpoint(interrupted, tmp_path / "interrupted", timeout=300)
    resumed = _train(tmp_path / "interrupted", *run)
    for process in (reference, resumed):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    assert "resuming from step" in err

    def without_speed(workdir):
        return [{k: v for k, v in line.items() if k != "tasks_per_s"} for line in _lines(workdir)]

    assert without_speed(tmp_path / "interrupted") == without_speed(tmp_path / "reference")
    results = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("reference", "interrupted")]
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('sweep={"inner_steps": (1, 2)}', "sweep key 'inner_steps' cannot be swept: it is 1, not a float"),
        ('sweep={"hidden": ((8,), (16,))}', "Keys that can be swept here: meta_lr, inner_lr, init_std"),
        ('sweep={"inner_lrr": (0.1,)}', "did you mean 'inner_lr'"),
        ('sweep={"inner_lr": ("a", 0.1)}', r"sweep\['inner_lr'\] must hold numbers; got 'a'"),
        ('sweep={"inner_lr": ()}', "must be a non-empty tuple of numbers"),
        ('sweep={"inner_lr": (0.1, -1.0)}', r"the sweep's setting \{'inner_lr': -1.0\}: inner_lr must be a finite"),
        ("seeds=0", "seeds must be a positive integer"),
        ("sweep=3", "sweep must be a non-empty dict"),
    ],
)
def test_a_bad_population_is_refused_before_the_workdir_is_touched(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        train_population(_config(override), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_key_whose_builder_needs_a_concrete_value_is_refused_naming_it(tmp_path):
    # a learner that turns a swept value into a Python float cannot take a traced one
    from jmeta.experiment import maml_learner

    def concrete(config, model, family):
        return maml_learner(config, model, family, first_order=False)[0], optax.adam(float(config.meta_lr))

    keys, optional = ("inner_lr", "inner_steps"), {"inner_optimizer": None}
    jmeta.register_learner("maml_concrete_meta_lr", concrete, keys=keys, optional_keys=optional, inner_lr=True)
    config = _config("learner='maml_concrete_meta_lr'", 'sweep={"meta_lr": (0.001, 0.01)}')
    refused = r"sweep keys \['meta_lr'\] cannot be traced by learner 'maml_concrete_meta_lr'"
    with pytest.raises(ValueError, match=refused + r".*Sweep other keys \(inner_lr, init_std\)"):
        train_population(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_single_run_functions_refuse_a_population_and_name_the_population_ones(tmp_path):
    from jmeta import runs
    from jmeta.train import evaluate_workdir

    config = _config("seeds=2")
    with pytest.raises(ValueError, match="a population.*jmeta.population.train_population"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(config.to_json())
    with pytest.raises(ValueError, match=r"a population.*jmeta.load_run\(workdir, member=K\)"):
        runs.load_run(tmp_path / "run")
    with pytest.raises(ValueError, match="a population.*jmeta.population.evaluate_population_workdir"):
        evaluate_workdir(tmp_path / "run")


def test_the_population_functions_refuse_a_single_run_and_name_the_single_run_ones(tmp_path):
    from jmeta.experiment import apply_override
    from jmeta.population import evaluate_population_workdir
    from jmeta.train import evaluate_workdir

    config = _config()
    with pytest.raises(ValueError, match="neither seeds nor sweep.*jmeta.train.train_and_evaluate"):
        train_population(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(config.to_json())
    with pytest.raises(ValueError, match="a single run, not a population.*jmeta.train.evaluate_workdir"):
        evaluate_population_workdir(tmp_path / "run")
    with pytest.raises(ValueError, match="member=K selects a member of a population; this workdir holds a single"):
        evaluate_workdir(tmp_path / "run", ["member=0"])
    with pytest.raises(ValueError, match=r"did you mean 'sweep'.*known keys: .*seeds.*sweep"):
        apply_override(config, 'sweeps={"inner_lr": (0.1, 0.2)}')


def test_members_cross_settings_with_seeds_and_the_mesh_takes_members_first():
    config = _config("seeds=2", "seed=3", 'sweep={"inner_lr": (0.1, 0.2, 0.3)}')
    found = [(m.index, m.setting_index, m.setting["inner_lr"], m.seed) for m in members(config)]
    assert found == [(i * 2 + s, i, lr, 3 + s) for i, lr in enumerate((0.1, 0.2, 0.3)) for s in range(2)]
    assert member_config(config, members(config)[5]).inner_lr == 0.3 and "seeds" not in member_config(
        config, members(config)[5]
    )
    devices = [object()] * 8
    assert dict(population_mesh(devices, 6).shape) == {"population": 2, "tasks": 4}
    assert dict(population_mesh(devices, 8).shape) == {"population": 8, "tasks": 1}
    assert dict(population_mesh(devices, 3).shape) == {"population": 1, "tasks": 8}


@pytest.mark.parametrize("how", ["vmap", "map"])
def test_the_bench_population_step_is_each_members_own_step(how):
    from jmeta import bench
    from jmeta.population_bench import population_update

    trainer, _, tasks = bench.build("sinusoid-maml")
    keys = jax.random.split(jax.random.key(0), 2)
    stacked = jax.tree.map(lambda a: np.stack([a, a[::-1]]), tasks)  # each member its own task order
    states, metrics = jax.jit(population_update(trainer, how))(jax.vmap(trainer.init)(keys), stacked)
    for k in range(2):
        state, own = jax.jit(trainer.update)(trainer.init(keys[k]), jax.tree.map(lambda a, k=k: a[k], stacked))
        np.testing.assert_allclose(metrics["loss"][k], own["loss"], rtol=1e-5)
        for a, b in zip(jax.tree.leaves(states.params), jax.tree.leaves(state.params), strict=True):
            np.testing.assert_allclose(a[k], b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_population_over_two_processes_is_the_one_of_one_process_with_two_devices(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = [*SHORT, "seeds=2"]

    def start(workdir, devices, *flags):
        command = [sys.executable, "-m", "jmeta.cli", "train", SINUSOID, "--workdir", str(workdir), *run, *flags]
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    processes = [start(tmp_path / "one", 2)]
    flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id"]
    processes += [start(tmp_path / "two", 1, *flags, str(index)) for index in (0, 1)]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two")}
    assert results["two"]["population"]["mesh"] == {"population": 2, "tasks": 1}
    for a, b in zip(_lines(tmp_path / "one"), _lines(tmp_path / "two"), strict=True):
        for name in ("loss", "grad_norm", "val_loss"):
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5)
    for one, two in zip(results["one"]["members"], results["two"]["members"], strict=True):
        for steps, mean in _test_means(one).items():
            np.testing.assert_allclose(_test_means(two)[steps], mean, rtol=1e-5)


def test_the_members_curves_are_drawn_in_one_figure():
    from jmeta.plotting import population_curves

    records = [
        {"step": 5, "loss": [1.0, None], "stopped": [None, 2], "tasks_per_s": 9.0, "val_loss": [2.0, None]},
        {"step": 10, "loss": [0.5, None], "stopped": [None, 2], "tasks_per_s": 9.0, "val_loss": [1.5, None]},
    ]
    figure = population_curves(records, ["0: seed 0", "1: seed 1"])
    (axis,) = figure.axes
    assert axis.get_title() == "loss (dashed: validation)"
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend == ["0: seed 0", "1: seed 1 (non-finite at step 2)"]
    drawn = [line for line in axis.get_lines() if len(line.get_xdata())]
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in drawn] == [
        ([5, 10], [1.0, 0.5]),
        ([5, 10], [2.0, 1.5]),
    ]
