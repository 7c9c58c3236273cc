"""`jmeta bench`: the workloads are those of the PyTorch peers, and the command prints `tasks/s N` last.

No speed is asserted here (figures come from running the command: docs/benchmarks.md).
"""

import re

import jax
import pytest

from jmeta import bench, cli


def test_omniglot_workload_is_the_peer_workload():
    trainer, state, tasks = bench.omniglot_maml("auto")
    assert tasks.support_x.shape == (32, 5, 28, 28, 1) and tasks.query_x.shape == (32, 75, 28, 28, 1)
    assert (tasks.support_y[0] == jax.numpy.arange(5)).all()
    # peers_torch.conv4(): 4 x Conv2d(c, 64, 3) with bias, 4 x BatchNorm2d(64) scale and offset, Linear(64, 5)
    torch_parameters = (9 * 1 * 64 + 64) + 3 * (9 * 64 * 64 + 64) + 4 * 2 * 64 + (64 * 5 + 5)
    assert sum(leaf.size for leaf in jax.tree.leaves(state.params)) == torch_parameters


def test_bench_runs_the_omniglot_step():
    result = bench.run("omniglot-maml", steps=1)
    assert result.tasks_per_step == 32 and result.tasks_per_s > 0 and result.compile_s > 0


def test_bench_command_prints_tasks_per_second_last(capsys):
    assert cli.main(["bench", "sinusoid-maml", "--steps", "4", "--steps-per-call", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # one call per step, two steps per call, the figure
    assert re.fullmatch(r"tasks/s \d+\.\d", lines[-1])


def test_bench_refuses_bad_input_before_running():
    with pytest.raises(ValueError, match="name must be one of 'sinusoid-maml', 'omniglot-maml'"):
        bench.run("omniglot")
    with pytest.raises(ValueError, match=r"steps \(10\) must be a multiple of steps_per_call \(3\)"):
        bench.run("sinusoid-maml", steps=10, steps_per_call=3)


def test_peer_without_its_environment_says_how_to_set_it_up(monkeypatch, capsys):
    monkeypatch.delenv("PEERS_PY", raising=False)
    assert cli.main(["bench", "sinusoid-maml", "--steps", "1", "--peer", "l2l"]) != 0
    assert 'PEERS_PY and L2L_SRC in the environment; set them with eval "$(bash' in capsys.readouterr().err


def test_bench_command_passes_the_chunk_size_on(capsys):
    command = "bench sinusoid-maml --steps 2 --steps-per-call 1 --batching accumulate --chunk-size 5"
    assert cli.main(command.split()) == 0
    assert "batching=accumulate (chunks of 5)" in capsys.readouterr().out
