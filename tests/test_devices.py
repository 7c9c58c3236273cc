"""`jmeta train` / `jmeta eval` on every local device: one mesh, each task batch split along it (padded with
tasks of weight 0 when it does not divide), the same tasks and (within float tolerance) the same metrics and
results whatever the number of devices."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO

import jmeta
from jmeta import distributed, parallel
from jmeta.cli import main
from jmeta.experiment import load_config

SINUSOID = str(REPO / "experiments" / "sinusoid_maml.py")
OMNIGLOT_DATA = Path("/work/shared/data/omniglot")
SHORT = ["log_every=100", "val_every=100", "val_tasks=20", "eval_tasks=30", "eval_steps=(1,)", "meta_batch=24"]


def _runs_on_8_devices(config: str, overrides: list[str], workdir: Path) -> dict[int, Path]:
    """Trains ``config`` with devices=1 and devices=8 in one process of 8 simulated CPU devices."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax
        from jmeta.experiment import load_config
        from jmeta.train import train_and_evaluate
        assert jax.device_count() == 8, jax.devices()
        for devices in (1, 8):
            config = load_config({config!r}, {overrides!r} + [f"devices={{devices}}"])
            train_and_evaluate(config, {str(workdir)!r} + f"/d{{devices}}")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {devices: workdir / f"d{devices}" for devices in (1, 8)}


def _metrics(workdir: Path) -> list[dict[str, float]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tasks_per_s"} for line in lines]


def _assert_same_run(one: Path, eight: Path, rtol: float) -> None:
    first, second = _metrics(one), _metrics(eight)
    assert [r["step"] for r in first] == [r["step"] for r in second]
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=rtol)
    results = [json.loads((workdir / "results.json").read_text()) for workdir in (one, eight)]
    assert (results[0]["protocol"]["devices"], results[1]["protocol"]["devices"]) == (1, 8)
    assert results[0]["protocol"]["processes"] == results[1]["protocol"]["processes"] == 1
    for steps, by_metric in results[0]["results"].items():
        for name, estimate in by_metric.items():
            other = results[1]["results"][steps][name]
            assert other["tasks"] == estimate["tasks"]
            np.testing.assert_allclose(other["mean"], estimate["mean"], rtol=rtol)
            np.testing.assert_allclose(other["ci95"], estimate["ci95"], rtol=rtol)


def test_the_demo_config_with_its_meta_batch_of_25_on_8_simulated_devices_gives_the_one_device_run(tmp_path):
    # 25 tasks do not divide over 8 devices: each step pads them to 32 with tasks of weight 0.
    assert load_config(SINUSOID).meta_batch == 25
    runs = _runs_on_8_devices(SINUSOID, ["steps=300", *SHORT[:-1]], tmp_path)
    _assert_same_run(runs[1], runs[8], rtol=1e-5)


def test_25_tasks_padded_over_8_simulated_devices_give_the_one_device_step():
    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import jax, jax.numpy as jnp, numpy as np, optax, jmeta
        from jmeta import parallel
        mesh = parallel.task_mesh()
        assert mesh.size == 8, jax.devices()
        model = jmeta.from_linen(jmeta.models.MLP((16, 16, 1)), jnp.zeros((1, 1)))
        learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.1, steps=2)
        tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 25, shots=10, queries=10)
        padded, weights = parallel.shard_tasks(parallel.pad_with_weights(tasks, mesh.size), mesh)
        assert padded.support_x.shape[0] == 32 and len(weights.sharding.device_set) == 8
        for batching, chunk_size in (("vmap", None), ("accumulate", 8)):
            trainer = jmeta.meta_trainer(learner, optax.adam(1e-2), batching=batching, chunk_size=chunk_size)
            one = trainer.step(trainer.init(jax.random.key(0)), tasks)
            eight = trainer.step(parallel.replicate(trainer.init(jax.random.key(0)), mesh), padded, weights)
            for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
        print("padded step on 8 devices equals the 1-device step")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "padded step on 8 devices equals the 1-device step" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not (OMNIGLOT_DATA / "images_background.zip").exists(), reason=f"no Omniglot in {OMNIGLOT_DATA}")
def test_omniglot_on_8_simulated_devices_gives_the_one_device_run(tmp_path):
    config = str(REPO / "experiments" / "omniglot_maml.py")
    overrides = [f"data_dir={OMNIGLOT_DATA}", "steps=4", "log_every=2", "val_every=2", "val_tasks=10"]
    runs = _runs_on_8_devices(config, [*overrides, "eval_tasks=12", "meta_batch=8"], tmp_path)
    _assert_same_run(runs[1], runs[8], rtol=1e-4)


def test_devices_beyond_the_local_ones_are_refused():
    with pytest.raises(ValueError, match=rf"devices must be 0 \(all\) to {jax.local_device_count()}.*got 99"):
        distributed.run_mesh(99)
    assert distributed.run_mesh(0).size == jax.device_count()


def test_evaluation_on_a_mesh_pads_batches_and_gives_the_same_estimates(mlp_model):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    sampler = jmeta.tasks.SinusoidSampler(shots=5, queries=10)
    kwargs = dict(num_tasks=6, steps=(1,), batch_size=3)
    plain = jmeta.evaluate(learner, params, state, sampler, jax.random.key(1), **kwargs)
    mesh = parallel.task_mesh(jax.devices()[:1])
    meshed = jmeta.evaluate(learner, params, state, sampler, jax.random.key(1), mesh=mesh, **kwargs)
    assert meshed == plain


def test_pad_tasks_repeats_the_first_tasks():
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(0), 3, shots=2, queries=2)
    padded = parallel.pad_tasks(tasks, 8)
    assert padded.support_x.shape[0] == 8
    np.testing.assert_array_equal(padded.query_y[3:6], tasks.query_y)
    assert parallel.pad_tasks(tasks, 3) is tasks


def test_pad_with_weights_weighs_the_copies_zero():
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(0), 5, shots=2, queries=2)
    padded, weights = parallel.pad_with_weights(tasks, 4)
    assert padded.query_x.shape[0] == 8 and weights.dtype == np.float32
    np.testing.assert_array_equal(weights, [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(padded.query_y[5:], tasks.query_y[:3])
    assert parallel.pad_with_weights(tasks, 5) == (tasks, None)
    with pytest.raises(ValueError, match=r"multiple must be a positive integer \(>= 1\); got 0"):
        parallel.pad_with_weights(tasks, 0)


class Reference(NamedTuple):
    """A learner, its initial meta-parameters, a batch of tasks, and each task's query loss and meta-gradient
    computed one task at a time (no batching strategy, no weights involved)."""

    learner: jmeta.Learner
    params: Any
    state: Any
    tasks: jmeta.Task
    losses: np.ndarray
    grads: list


@pytest.fixture(scope="module")
def references() -> dict[str, Reference]:
    """MAML (a mean of per-task meta-gradients) and Reptile (a mean of per-task differences theta - theta')."""
    model = jmeta.from_linen(jmeta.models.MLP((16, 16, 1)), jnp.zeros((1, 1)))
    learners = {
        "maml": jmeta.maml(model, jmeta.losses.mse, inner_lr=0.1, steps=2),
        "reptile": jmeta.learners.reptile(model, jmeta.losses.mse, inner_lr=0.02, steps=2),
    }
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 6, shots=10, queries=10)
    found = {}
    for name, learner in learners.items():
        params, state = learner.init(jax.random.key(0))
        value_and_grad = jax.jit(jax.value_and_grad(learner.task_loss, has_aux=True))
        losses, grads = [], []
        for i in range(6):
            (_, output), grad = value_and_grad(params, state, jax.tree.map(lambda a, i=i: a[i], tasks))
            losses.append(float(output.metrics["loss"]))
            grads.append(grad)
        found[name] = Reference(learner, params, state, tasks, np.asarray(losses), grads)
    return found


def _weighted_mean(trees: list, weights: np.ndarray) -> Any:
    """sum_i w_i tree_i / sum_i w_i, leaf by leaf, in float64."""
    weights = np.asarray(weights, np.float64)
    return jax.tree.map(
        lambda *leaves: np.tensordot(weights, np.stack(leaves).astype(np.float64), 1) / weights.sum(), *trees
    )


@pytest.mark.parametrize(
    ("batching", "chunk_size"), [("vmap", None), ("map", 4), ("unroll", None), ("accumulate", None), ("accumulate", 4)]
)
def test_every_batching_strategy_honours_task_weights(references, batching, chunk_size):
    ref = references["maml"]  # the strategies weigh whatever task_loss gives; Reptile's: the test below
    weights = np.array([0.5, 2.0, 0.0, 1.0, 3.0, 0.25], np.float32)  # with chunks of 4: a remainder of 2
    batched = jmeta.batching.over_tasks_with_mean_grad(ref.learner.task_loss, batching, chunk_size)
    (losses, _), grads = jax.jit(batched)(ref.params, ref.state, ref.tasks, weights)
    np.testing.assert_allclose(losses, ref.losses, rtol=1e-6)
    chex.assert_trees_all_close(grads, _weighted_mean(ref.grads, weights), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["maml", "reptile"])
def test_padded_meta_step_equals_the_step_on_the_real_tasks(references, name):
    ref = references[name]
    tasks = jax.tree.map(lambda a: a[:5], ref.tasks)
    padded, weights = parallel.pad_with_weights(tasks, 4)  # 3 copies of weight 0
    real_grad = _weighted_mean(ref.grads[:5], np.ones(5))

    batched = jax.jit(jmeta.batching.over_tasks_with_mean_grad(ref.learner.task_loss, "vmap"))
    _, unpadded_grads = batched(ref.params, ref.state, tasks)
    _, padded_grads = batched(ref.params, ref.state, padded, weights)
    chex.assert_trees_all_close(padded_grads, unpadded_grads, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(padded_grads, real_grad, rtol=1e-5, atol=1e-5)

    trainer = jmeta.meta_trainer(ref.learner, optax.adam(1e-2), batching="vmap")
    unpadded_state, unpadded_metrics = trainer.step(trainer.init(jax.random.key(0)), tasks)
    padded_state, padded_metrics = trainer.step(trainer.init(jax.random.key(0)), padded, weights)
    chex.assert_trees_all_close(padded_state, unpadded_state, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(padded_metrics["loss"], ref.losses[:5].mean(), rtol=1e-6)
    np.testing.assert_allclose(padded_metrics["grad_norm"], optax.tree.norm(real_grad), rtol=1e-5)
    loss, output = trainer.loss(ref.params, ref.state, padded, weights)
    np.testing.assert_allclose([loss, output.metrics["loss"]], [ref.losses[:5].mean()] * 2, rtol=1e-6)


def test_padding_leaves_the_batch_norm_statistics_of_the_real_tasks():
    from flax import linen

    class WithBatchNorm(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.BatchNorm(use_running_average=False, momentum=0.5)(linen.Dense(8)(x))
            return linen.Dense(1)(linen.relu(x))

    learner = jmeta.maml(jmeta.from_linen(WithBatchNorm(), jnp.zeros((1, 1))), jmeta.losses.mse, inner_lr=0.1)
    tasks = jmeta.tasks.sinusoid_tasks(jax.random.key(1), 3, shots=5, queries=7)
    padded, weights = parallel.pad_with_weights(tasks, 8)
    trainer = jmeta.meta_trainer(learner, optax.sgd(0.1), batching="vmap")
    expected = trainer.step(trainer.init(jax.random.key(0)), tasks)
    got = trainer.step(trainer.init(jax.random.key(0)), padded, weights)
    assert jax.tree.leaves(got[0].model_state)  # BatchNorm statistics, averaged over the real tasks
    chex.assert_trees_all_close(got, expected, rtol=1e-6, atol=1e-7)


def test_step_refuses_bad_weights_before_compiling(mlp_model, sine_tasks):
    trainer = jmeta.meta_trainer(jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.1), optax.sgd(0.1))
    state = trainer.init(jax.random.key(0))
    cases = {
        r"weights must be a \(6,\) array of real numbers, one per task of the batch; got shape \(5,\)": np.ones(5),
        r"weights must be a \(6,\) array .* got shape \(6,\) and dtype bool": np.ones(6, bool),
        r"weights must be finite and >= 0; got \[ 1\. -1\.": [1.0, -1.0, 1.0, 1.0, 1.0, 1.0],
        r"weights must be finite and >= 0; got \[nan": [np.nan, 1.0, 1.0, 1.0, 1.0, 1.0],
        r"weights must not all be 0": np.zeros(6),
    }
    for message, weights in cases.items():
        with pytest.raises(ValueError, match=message):
            trainer.step(state, sine_tasks, weights)


def test_shard_tasks_names_padding_as_the_way_out():
    with pytest.raises(ValueError, match=r"use a meta-batch of 8, or pad it: tasks, weights = shard_tasks\("):
        parallel.shard_tasks(jnp.ones((5, 2)), SimpleNamespace(size=8))


def test_process_flags_must_come_together(capsys):
    assert main(["train", SINUSOID, "--workdir", "unused", "--coordinator", "127.0.0.1:1234"]) == 2
    error = capsys.readouterr().err
    assert "needs --coordinator HOST:PORT, --num-processes N and --process-id I together" in error
    assert "--num-processes and --process-id missing" in error
    assert main(["eval", "--workdir", "unused", "--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"])
    assert "--coordinator must be HOST:PORT of process 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"--process-id must be 0 to 1 for --num-processes 2; got 2"):
        distributed.setup("127.0.0.1:1234", 2, 2)


def test_a_plain_machine_is_not_a_cluster(monkeypatch):
    for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.detected_cluster() is None
    assert distributed.setup() == "one process"
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    for name, value in {**slurm, "SLURM_NTASKS": "1"}.items():
        monkeypatch.setenv(name, value)
    assert distributed.detected_cluster() is None  # one SLURM task: nothing to join
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed.detected_cluster() == "SLURM"
