"""The ``maml-rl`` program as a run: a run killed with SIGKILL and started again ends with the uninterrupted run's
metrics and results, ``jmeta eval`` re-tests its checkpoints, and a meta-iteration's tasks split over several
(simulated) devices give one device's results."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, kill_at_first_checkpoint

pytest.importorskip("distrax", reason="jmeta.rl needs distrax and rlax: pip install 'jmeta[rl]'")
pytest.importorskip("rlax", reason="jmeta.rl needs distrax and rlax: pip install 'jmeta[rl]'")

NAV2D = str(REPO / "experiments" / "nav2d_maml_trpo.py")
# Reptile compiles in ~20 s here (MAML-TRPO's third-order program in ~60 s); the checkpoints are the same.
TINY = ["steps=60", "checkpoint_every=5", "meta_batch=2", "trajectories=2", "hidden=(8,)", "horizon=10",
        "eval_tasks=4", "eval_steps=1", "algorithm=reptile", "baselines=False"]


def _train(workdir: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "jmeta.cli", "train", NAV2D, "--workdir", str(workdir), *TINY]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _lines(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # three processes each compile a meta-iteration: ~1-2 minutes on the loaded 2-core CPU
def test_killed_maml_rl_run_resumes_to_the_uninterrupted_metrics_and_eval_retests_it(tmp_path):
    from jmeta.cli import main

    reference, interrupted = _train(tmp_path / "reference"), _train(tmp_path / "interrupted")
    kill_at_first_checkpoint(interrupted, tmp_path / "interrupted", timeout=300)
    assert len(_lines(tmp_path / "interrupted")) < 60

    resumed = _train(tmp_path / "interrupted")
    for process in (reference, resumed):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    assert "resuming from meta-iteration" in err
    lines = _lines(tmp_path / "interrupted")
    assert [r["step"] for r in lines] == list(range(1, 61))
    assert lines == _lines(tmp_path / "reference")
    results = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("reference", "interrupted")]
    assert results[0]["results"] == results[1]["results"]

    # jmeta eval: the checkpointed policy, evaluated as the run evaluated its last parameters
    assert main(["eval", "--workdir", str(tmp_path / "interrupted")]) == 0
    evaluated = json.loads((tmp_path / "interrupted" / "eval_latest.json").read_text())
    assert evaluated["results"] == results[1]["results"]
    assert main(["eval", "--workdir", str(tmp_path / "interrupted"), "eval_tasks=6", "eval_steps=2"]) == 0
    more = json.loads((tmp_path / "interrupted" / "eval_latest_eval_tasks=6_eval_steps=2.json").read_text())
    assert sorted(more["results"]) == ["0", "1", "2"] and more["results"]["2"]["Reptile"]["tasks"] == 6


@pytest.mark.slow  # compiles a meta-iteration: ~30-60 s on the loaded 2-core CPU
def test_ctrl_c_stops_a_maml_rl_run_and_names_its_last_checkpoint(tmp_path):
    run = _train(tmp_path)
    latest = tmp_path / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while not (latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("jmeta train: interrupted while meta-training reptile (60 meta-iterations); the last "
                           "checkpoint is iteration "), last
    assert last.endswith("rerun the same command to resume"), last
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow  # two second-order MAML meta-iterations compiled: ~3-5 minutes on the loaded 2-core CPU
def test_meta_iteration_on_2_devices_with_padding_equals_1_device():
    """3 tasks on 2 simulated devices (padded to 4, the copy of weight 0) and on one: the same metrics and
    parameters after two second-order MAML meta-iterations, up to the order of floating-point sums. The outer
    step is PPO's: TRPO's full step lands on the KL bound by construction (its quadratic model), so whether the
    line search takes it or half of it can flip with the last bits of the sums."""
    script = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, numpy as np
        from jmeta.parallel import task_mesh
        from jmeta.rl import envs, maml
        assert jax.device_count() == 2
        runs = {}
        for mesh in (None, task_mesh()):
            meta = maml.maml_rl(envs.nav2d(horizon=5), hidden=(4,), num_tasks=3, trajectories=2,
                                outer="ppo", mesh=mesh)
            log = maml.meta_train(meta, jax.random.key(0), 2)
            runs[mesh is None] = log
        one, two = runs[True], runs[False]
        assert two.state.params["log_std"].sharding.is_fully_replicated
        for a, b in zip(one.history, two.history, strict=True):
            for name in a:
                np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)
        for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(two.state.params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        print("equal", one.history[-1]["return_after"], two.history[-1]["return_after"])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "equal" in done.stdout


def test_bench_nav2d_refuses_other_peers_and_a_missing_torch_before_timing(capsys, monkeypatch):
    from jmeta.cli import main

    assert main(["bench", "nav2d-maml", "--peer", "l2l"]) == 2
    assert "--peer torch goes with nav2d-maml only" in capsys.readouterr().err
    monkeypatch.delenv("PEERS_PY", raising=False)
    assert main(["bench", "nav2d-maml", "--peer", "torch"]) == 2
    assert "--peer torch needs PEERS_PY" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("PEERS_PY"), reason="needs PEERS_PY (a Python with torch): setup-peers.sh")
def test_pytorch_reference_computes_jmetas_advantages_and_inner_step(tmp_path):
    """The bench's PyTorch peer runs the same workload: on episodes of jmeta's rollout, its advantages and adapted
    parameters are jmeta's (float32)."""
    import jax
    import numpy as np

    from jmeta.rl import envs, maml
    from jmeta.rl import policy as pol

    params = pol.policy_init(jax.random.key(0), 2, 2)
    episodes = pol.rollout(envs.nav2d(), params, jax.numpy.array([0.3, -0.2]), jax.random.key(1), 5)
    advantages = pol.advantages(episodes)
    adapted = maml.inner_update(params, episodes, advantages, 0.1)

    def flat(p):
        return [np.asarray(x) for layer in p["layers"] for x in (layer["w"], layer["b"])] + [np.asarray(p["log_std"])]

    np.savez(tmp_path / "jmeta.npz", **episodes._asdict(), adv=advantages,
             **{f"p{i}": a for i, a in enumerate(flat(params))}, **{f"q{i}": a for i, a in enumerate(flat(adapted))})
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        sys.path.insert(0, {str(REPO / "benchmarks")!r})
        import peers_nav2d_torch as peer
        d = {{k: torch.tensor(v) for k, v in np.load({str(tmp_path / "jmeta.npz")!r}).items()}}
        adv = peer.advantages(d["observations"], d["rewards"], d["mask"])
        params = [d[f"p{{i}}"].clone().requires_grad_() for i in range(7)]
        adapted = peer.adapt(params, (d["observations"], d["actions"], adv, d["mask"]), 0.1, create_graph=False)
        errors = [(a - d[f"q{{i}}"]).abs().max().item() for i, a in enumerate(adapted)]
        print((adv - d["adv"]).abs().max().item(), max(errors))
        """
    )
    done = subprocess.run([os.environ["PEERS_PY"], "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    advantages_error, params_error = map(float, done.stdout.split())
    assert advantages_error < 1e-4 and params_error < 1e-6, done.stdout
