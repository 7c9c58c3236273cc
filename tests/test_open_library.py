"""A researcher's own learner, task family and model (registered in a module of their own) go through every
part of jmeta as jmeta's own do: train, eval, plot, predict and load_run from fresh processes, the config
checks, and no behaviour keyed on a built-in's name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import jmeta
from jmeta.experiment import build, load_config

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import jmeta
from jmeta.experiment import TaskFamily


def linreg_tasks(key, num_tasks, *, shots, queries, features):
    """y = x w for a weight vector w ~ N(0, I) per task; x ~ N(0, I)."""
    w = jax.random.normal(key, (num_tasks, features, 1))
    x = jax.random.normal(jax.random.fold_in(key, 1), (num_tasks, shots + queries, features))
    y = x @ w
    return jmeta.Task(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def mae(predictions, targets):
    return jnp.mean(jnp.abs(predictions - targets))


@jmeta.register_task_family(
    "linreg",
    keys=("shots", "queries", "eval_shots", "eval_queries", "features"),
    loss=jmeta.losses.mse,
    metrics={"mae": mae},
    labels="values",
    outputs=lambda config: 1,
)
def linreg(config):
    train = jmeta.sampler(linreg_tasks, shots=config.shots, queries=config.queries, features=config.features)
    test = jmeta.sampler(linreg_tasks, shots=config.eval_shots, queries=config.eval_queries, features=config.features)
    return TaskFamily(train, test, test, jnp.zeros((1, config.features)))


@jmeta.register_model("two_layer", keys=("width",))
def two_layer(config, example_input, outputs):
    module = nn.Sequential([nn.Dense(config.width), nn.relu, nn.Dense(outputs)])
    return jmeta.from_linen(module, example_input)


@jmeta.register_learner("my_maml", keys=("inner_lr", "inner_steps"), inner_lr=True)
def my_maml(config, model, family):
    learner = jmeta.maml(model, family.loss, config.inner_lr, config.inner_steps, metrics=family.metrics)
    return learner, optax.adam(config.meta_lr)
'''

CONFIG = """
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.imports = ("linreg_plugin",)
    c.task, c.learner, c.model = "linreg", "my_maml", "two_layer"
    c.features, c.width = 3, 16
    c.shots, c.queries, c.eval_shots, c.eval_queries = 5, 10, 5, 10
    c.inner_lr, c.inner_steps = 0.1, 1
    c.meta_batch, c.meta_lr, c.steps, c.seed = 8, 0.01, 40, 0
    c.log_every, c.val_every, c.val_tasks, c.val_metric = 20, 20, 20, "mae"
    c.eval_tasks, c.eval_steps = 20, (0, 1)
    c.published, c.published_source = {}, ""
    return c
"""


def jmeta_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A fresh process running the jmeta command in ``cwd`` (where the plugin module lies)."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "jmeta.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    (folder / "linreg_plugin.py").write_text(PLUGIN)
    (folder / "linreg_config.py").write_text(CONFIG)
    done = jmeta_cli(folder, "train", "linreg_config.py", "--workdir", "run")
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def test_a_plugin_run_is_evaluated_plotted_and_predicted_from_fresh_processes(plugin_run):
    trained = json.loads((plugin_run / "run" / "results.json").read_text())
    # found in the working folder, the module is recorded by its path: the run reads from any folder
    assert json.loads((plugin_run / "run" / "config.json").read_text())["imports"] == [
        str((plugin_run / "linreg_plugin.py").resolve())
    ]
    done = jmeta_cli(plugin_run, "eval", "--workdir", "run")
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated = json.loads((plugin_run / "run" / "eval_best.json").read_text())
    assert evaluated["results"] == trained["results"]
    assert set(trained["results"]["1"]) == {"loss", "mae"}
    assert jmeta_cli(plugin_run, "plot", "--workdir", "run").returncode == 0
    assert list((plugin_run / "run").glob("*.png"))
    xs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.save(plugin_run / "xs.npy", xs)
    np.save(plugin_run / "ys.npy", xs @ np.ones((3, 1), np.float32))
    np.save(plugin_run / "xq.npy", xs[:2])
    done = jmeta_cli(
        plugin_run,
        "predict",
        "--workdir",
        "run",
        "--support-x",
        "xs.npy",
        "--support-y",
        "ys.npy",
        "--query",
        "xq.npy",
        "--steps",
        "1",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = np.array([float(line) for line in done.stdout.split()])
    script = textwrap.dedent("""
        import json, numpy as np, jax, jmeta
        from jmeta.runs import predict
        from jmeta.train import run_keys
        from jmeta.experiment import build
        run = jmeta.load_run("run")
        family = build(run.config).family
        estimates = jmeta.evaluate(run.learner, run.params, run.model_state, family.sample_test,
                                   run_keys(run.config.seed).test, num_tasks=20, steps=(0, 1))
        out = predict(run, np.load("xs.npy"), np.load("ys.npy"), np.load("xq.npy"), steps=1)
        print(json.dumps({"mae": estimates[1]["mae"].mean, "predicted": out[:, 0].tolist()}))
    """)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=plugin_run,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    api = json.loads(done.stdout.splitlines()[-1])
    assert api["mae"] == pytest.approx(trained["results"]["1"]["mae"]["mean"], rel=1e-5)
    np.testing.assert_allclose(printed, api["predicted"], rtol=1e-5)


def test_an_unimportable_module_is_named_with_its_key(tmp_path):
    (tmp_path / "c.py").write_text(CONFIG.replace('("linreg_plugin",)', '("no_such_lab.module",)'))
    with pytest.raises(ImportError, match=r"config key 'imports' names the module 'no_such_lab.module'"):
        load_config(tmp_path / "c.py")


SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")


@pytest.mark.parametrize(
    "edit, message",
    [
        ("del c.published", r"missing key 'published' \(read by every meta-learner run\)"),
        ("c.inner_rl = 0.1", r"unknown key 'inner_rl' \(did you mean 'inner_lr'"),
        ("c.lam = 1.0", r"key 'lam' is read by learner 'imaml' but not by this config's learner 'maml'"),
        ("c.seed = None", r"seed must be a non-negative integer"),
        ("del c.hidden", r"missing key 'hidden' \(read by model 'mlp'\)"),
    ],
)
def test_a_bad_config_fails_before_the_workdir_is_touched_and_the_fix_then_runs(tmp_path, capsys, edit, message):
    from jmeta.cli import main

    path = tmp_path / "bad.py"
    path.write_text(
        f"from jmeta.experiment import load_config\n\ndef get_config():\n    c = load_config({SINUSOID!r})\n"
        f"    {edit}\n    return c\n"
    )
    workdir = tmp_path / "run"
    short = ["steps=2", "log_every=1", "val_every=0", "eval_tasks=2", "eval_steps=(1,)"]
    assert main(["train", str(path), "--workdir", str(workdir), *short]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not workdir.exists()
    build(load_config(SINUSOID, short))  # the corrected config builds; test_training runs such configs to the end


def test_a_config_that_registers_its_own_data_set_is_imported_again_by_readers(tmp_path):
    (tmp_path / "own.py").write_text(
        textwrap.dedent("""
        import numpy as np
        import jmeta
        from jmeta.data import ClassDataset, FewShotData
        from jmeta.experiment import few_shot_config

        def load_toy(data_dir=None):
            rng = np.random.default_rng(0)
            images = (rng.random((40, 8, 8, 1)) * 255).astype(np.uint8)
            ds = ClassDataset(images, np.repeat(np.arange(8), 5), [f"c{i}" for i in range(8)])
            return FewShotData("toy", {"train": ds, "test": ds})

        jmeta.register_dataset("toy-own", load_toy, replace=True)

        def get_config():
            c = few_shot_config("toy-own", "protonet", ways=2, shots=1)
            c.split, c.val_every, c.steps, c.log_every, c.meta_batch, c.eval_tasks = "", 0, 2, 1, 2, 4
            c.hidden, c.downsample, c.pool = 8, "stride", "mean"
            return c
    """)
    )
    config = load_config(tmp_path / "own.py")
    assert config.imports == (str((tmp_path / "own.py").resolve()),)


def test_no_behaviour_is_keyed_on_a_built_in_name():
    names = "|".join(re.escape(name) for name in (*jmeta.registry.LEARNERS, *jmeta.registry.TASK_FAMILIES))
    pattern = re.compile(rf"""(\.(learner|task|model)\s*[!=]=\s*["']({names})["'])|__qualname__.*["']({names})["']""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted((REPO / "jmeta").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
    assert pattern.search('if config.learner != "protonet":')  # the test can fail


def test_a_plain_function_sampler_gets_the_fix_and_a_wrapped_one_evaluates(mlp_model):
    def plain(key, num_tasks):
        return jmeta.tasks.sinusoid_tasks(key, num_tasks, shots=5, queries=5)

    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    with pytest.raises(TypeError, match=r"Wrap it: jmeta.tasks.sampler\(plain"):
        jmeta.evaluate(learner, params, state, plain, jax.random.key(1), num_tasks=4, steps=(1,))
    wrapped = jmeta.sampler(jmeta.tasks.sinusoid_tasks, shots=5, queries=5)
    direct = jmeta.evaluate(
        learner, params, state, jmeta.tasks.SinusoidSampler(5, 5), jax.random.key(1), num_tasks=4, steps=(1,)
    )
    assert jmeta.evaluate(learner, params, state, wrapped, jax.random.key(1), num_tasks=4, steps=(1,)) == direct


def test_a_learner_declaring_any_ways_tests_with_other_ways_and_gets_an_embedding():
    from jmeta.experiment import few_shot_config

    jmeta.register_learner(
        "my_protonet", jmeta.registry.LEARNERS["protonet"].builder, embedding=True, any_ways=True, replace=True
    )
    config = few_shot_config("digits", "my_protonet", ways=4, shots=1)
    config.eval_ways, config.split = 2, ""
    jmeta.experiment.check_config(config)
    config.learner = "maml"
    config.inner_lr, config.inner_steps = 0.4, 1
    with pytest.raises(ValueError, match=r"eval_ways \(2\) must equal ways \(4\) for learner 'maml'"):
        jmeta.experiment.check_config(config)


def test_inner_optimizer_names_any_optax_optimiser_with_a_schedule(mlp_model):
    import optax

    spec = (
        '{"name": "adam", "learning_rate": {"schedule": "linear_schedule", "init_value": 0.1, "end_value": 0.01, '
        '"transition_steps": 3}}'
    )
    config = load_config(SINUSOID, [f"inner_optimizer={spec}", "inner_steps=3", "hidden=(16, 16)", "init_std=None"])
    experiment = build(config)
    schedule = optax.linear_schedule(init_value=0.1, end_value=0.01, transition_steps=3)
    by_hand = jmeta.maml(mlp_model, jmeta.losses.mse, steps=3, inner_optimizer=optax.adam(schedule))
    params, state = by_hand.init(jax.random.key(0))
    task = jax.tree.map(lambda a: a[0], jmeta.tasks.sinusoid_tasks(jax.random.key(1), 1, shots=5, queries=5))
    ours = experiment.learner.task_loss(params, state, task)[0]
    assert float(ours) == pytest.approx(float(by_hand.task_loss(params, state, task)[0]), rel=1e-6)
    assert float(ours) != pytest.approx(
        float(jmeta.maml(mlp_model, jmeta.losses.mse, 0.01, 3).task_loss(params, state, task)[0])
    )
    with pytest.raises(ValueError, match=r"inner_optimizer must name an optax function.*got 'adma' \(did you mean"):
        build(load_config(SINUSOID, ['inner_optimizer={"name": "adma", "learning_rate": 0.1}']))
    with pytest.raises(ValueError, match=r"unexpected keyword argument 'lr'; optax.adam takes learning_rate, b1, b2"):
        build(load_config(SINUSOID, ['inner_optimizer={"name": "adam", "lr": 0.1}']))


def blob_tasks(key, num_tasks, *, ways, shots, queries):
    """Classes of points around a mean ~ N(0, 9 I) per class and task, labels 0..ways-1."""
    means = 3 * jax.random.normal(key, (num_tasks, ways, 1, 2))

    def points(k, n):
        x = (means + jax.random.normal(k, (num_tasks, ways, n, 2))).reshape(num_tasks, ways * n, 2)
        return x, jax.numpy.broadcast_to(jax.numpy.repeat(jax.numpy.arange(ways), n), (num_tasks, ways * n))

    return jmeta.Task(*points(jax.random.fold_in(key, 1), shots), *points(jax.random.fold_in(key, 2), queries))


def register_blobs(name, keys):
    """A user's classification family reading ``keys`` (no ``eval_ways``), 4 ways unless the config says."""

    def family(config):
        sampler = jmeta.sampler(blob_tasks, ways=config.get("ways", 4), shots=2, queries=3)
        return jmeta.experiment.TaskFamily(sampler, sampler, sampler, jax.numpy.zeros((1, 2)))

    jmeta.register_task_family(
        name,
        family,
        keys=keys,
        loss=jmeta.losses.cross_entropy,
        metrics={"accuracy": jmeta.losses.accuracy},
        labels="classes",
        outputs=lambda config: config.get("ways", 4),
        replace=True,
    )


def test_protonet_builds_for_a_users_family_without_eval_ways_and_names_a_missing_ways():
    register_blobs("blobs-ways", ("ways",))
    config = load_config(SINUSOID, ["hidden=(8,)", "init_std=None"])
    for key in (
        "inner_lr",
        "inner_steps",
        "inner_optimizer",
        "outputs",
        "shots",
        "queries",
        "eval_shots",
        "eval_queries",
    ):
        del config[key]
    config.task, config.learner, config.ways, config.val_metric = "blobs-ways", "protonet", 3, "accuracy"
    experiment = build(config)
    params, state = experiment.learner.init(jax.random.key(0))
    task = jax.tree.map(lambda a: a[0], blob_tasks(jax.random.key(1), 1, ways=3, shots=2, queries=3))
    prototypes = experiment.learner.adapt(params, state, task.support_x, task.support_y)
    assert prototypes.prototypes.shape == (3, 8)  # (ways, embedding width): sized by the config's ways
    register_blobs("blobs-fixed", ())
    config.task = "blobs-fixed"
    del config["ways"]
    with pytest.raises(ValueError, match=r"missing key 'ways' \(read by learner 'protonet'\)"):
        build(config)


@pytest.mark.parametrize(
    "learner, head, message",
    [
        (
            "protonet",
            "always",
            r"model 'head-mistakes' built with outputs=None \(learner 'protonet' declares embedding=True: return the "
            r"embedding, without a head\) fails on an example input of shape \(1, 2\): TypeError",
        ),
        (
            "maml",
            "seven",
            r"model 'head-mistakes' built with outputs=4 \(the outputs task family 'blobs-ways' declares\) returns "
            r"predictions of shape \(1, 7\) for an example input of shape \(1, 2\); they must have shape \(1, 4\)",
        ),
    ],
)
def test_a_model_builder_that_ignores_its_outputs_is_named_before_the_workdir_is_touched(
    tmp_path, capsys, learner, head, message
):
    from flax import linen

    from jmeta.cli import main

    def builder(config, example_input, outputs):
        last = {"always": outputs, "seven": 7}[head]
        return jmeta.from_linen(linen.Sequential([linen.Dense(8), linen.relu, linen.Dense(last)]), example_input)

    jmeta.register_model("head-mistakes", builder, replace=True)
    register_blobs("blobs-ways", ("ways",))
    path = tmp_path / "c.py"
    path.write_text(
        f"from jmeta.experiment import load_config\n\ndef get_config():\n    c = load_config({SINUSOID!r})\n"
        "    for key in ('outputs', 'hidden', 'init_std', 'shots', 'queries', 'eval_shots', 'eval_queries'):\n"
        "        del c[key]\n"
        f"    c.task, c.model, c.learner, c.val_metric = 'blobs-ways', 'head-mistakes', {learner!r}, 'accuracy'\n"
        f"    if c.learner == 'protonet':\n        del c.inner_lr, c.inner_steps, c.inner_optimizer\n    c.ways = 4\n"
        "    return c\n"
    )
    workdir = tmp_path / "run"
    assert main(["train", str(path), "--workdir", str(workdir), "steps=2"]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not workdir.exists()


@pytest.mark.parametrize(
    "metrics, val_metric, message",
    [
        (("mse",), "loss", r"returns the metrics \['mse'\]; they must hold 'loss' \(the query loss\)\.$"),
        (("loss",), "accuracy", r"\['loss'\]; they must hold 'loss' \(the query loss\) and 'accuracy' \(val_metric\)"),
    ],
)
def test_a_learner_whose_metrics_lack_loss_or_val_metric_is_named_before_the_workdir_is_touched(
    tmp_path, capsys, metrics, val_metric, message
):
    import optax

    from jmeta.cli import main

    def builder(config, model, family):
        def task_loss(params, state, task, steps=None):
            predictions, state = model.apply(params, state, task.query_x)
            loss = family.loss(predictions, task.query_y)
            return loss, jmeta.learners.toolkit.TaskOutput(dict.fromkeys(metrics, loss), state)

        learner = jmeta.Learner(model.init, lambda p, s, x, y, steps=None: p, model.apply, task_loss, False)
        return learner, optax.adam(config.meta_lr)

    jmeta.register_learner("forgetful", builder, replace=True)
    register_blobs("blobs-ways", ("ways",))
    path = tmp_path / "c.py"
    path.write_text(
        f"from jmeta.experiment import load_config\n\ndef get_config():\n    c = load_config({SINUSOID!r})\n"
        "    for key in ('outputs', 'shots', 'queries', 'eval_shots', 'eval_queries', 'inner_lr', 'inner_steps',\n"
        "                'inner_optimizer'):\n        del c[key]\n"
        f"    c.task, c.learner, c.ways, c.val_metric = 'blobs-ways', 'forgetful', 4, {val_metric!r}\n    return c\n"
    )
    workdir = tmp_path / "run"
    assert main(["train", str(path), "--workdir", str(workdir)]) == 2
    assert re.search(rf"error: the task_loss of learner 'forgetful' .*{message}", capsys.readouterr().err.strip())
    assert not workdir.exists()


def test_registering_a_taken_name_names_the_function_that_holds_it():
    with pytest.raises(ValueError, match=r"a learner named 'maml' is already registered \(to jmeta.experiment.maml_l"):
        jmeta.register_learner("maml", lambda config, model, family: None)


def test_an_override_of_a_key_only_another_component_reads_names_those_that_read_it():
    with pytest.raises(
        ValueError, match=r"unknown config key 'lam' in override 'lam=1.0' \(read by learner 'imaml', no"
    ):
        load_config(SINUSOID, ["lam=1.0"])
    config = load_config(SINUSOID)
    config.learner = "protonet"
    del config.inner_lr, config.inner_steps, config.outputs
    with pytest.raises(
        ValueError, match=r"'inner_optimizer' is read by learner 'maml', learner '\w+', learner '\w+', \.\.\. but"
    ):
        jmeta.experiment.check_config(config)
