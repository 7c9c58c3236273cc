"""`jmeta bench`: the workloads are those of the PyTorch peers, the command prints `tasks/s N` last (or
`memory_bytes N` with --memory), and its FLOP count handles loops, which XLA's cost analysis counts once.

No speed is asserted here (figures come from running the command: docs/benchmarks.md).
"""

import re

import jax
import pytest

from jmeta import bench, cli


def test_omniglot_workload_is_the_peer_workload():
    trainer, state, tasks = bench.build("omniglot-maml")
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
    assert len(lines) == 5  # one call per step, two steps per call, FLOPs per step, FLOP/s, the figure
    assert re.fullmatch(r"FLOP/s \S+ = \d+\.\d% of the measured peak \S+", lines[-2]), lines[-2]
    assert re.fullmatch(r"tasks/s \d+\.\d", lines[-1])


def test_bench_refuses_bad_input_before_running():
    with pytest.raises(ValueError, match="name must be one of 'sinusoid-maml', 'omniglot-maml', 'omniglot-imaml'"):
        bench.run("omniglot")
    with pytest.raises(ValueError, match="conv applies to the Conv-4 workloads; sinusoid-maml has no convolution"):
        bench.run("sinusoid-maml", conv="xla")
    with pytest.raises(ValueError, match="remat does not apply to omniglot-imaml"):
        bench.memory("omniglot-imaml", remat=True)
    with pytest.raises(ValueError, match="compute_dtype must be one of 'float32', 'bfloat16'; got 'float16'"):
        bench.memory("sinusoid-maml", compute_dtype="float16")
    with pytest.raises(ValueError, match="inner_steps must be a positive integer"):
        bench.memory("sinusoid-maml", inner_steps=0)
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


def test_memory_flag_prints_the_compiled_memory_last(capsys):
    assert cli.main("bench sinusoid-maml --inner-steps 3 --remat --memory".split()) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "inner_steps=3, remat" in lines[0]
    parts = re.search(r"arguments (\d+), outputs (\d+) \(\d+ of them .*\), temporaries (\d+) bytes", lines[0])
    assert re.fullmatch(r"memory_bytes \d+", lines[-1])
    assert int(lines[-1].split()[1]) == sum(map(int, parts.groups())) > 0


def test_step_flops_count_loop_bodies_per_trip_where_xla_counts_them_once():
    def xla_flops(workload):
        trainer, state, tasks = workload
        return jax.jit(trainer.update).lower(state, tasks).compile().cost_analysis()["flops"]

    vmapped, looped = bench.build("sinusoid-maml", batching="vmap"), bench.build("sinusoid-maml", batching="accumulate")
    flops = bench.step_flops(vmapped)
    assert bench.step_flops(looped) == pytest.approx(flops, rel=1e-6)  # the same work, 25 tasks
    # Without loops (vmap, one inner step) XLA agrees, counting elementwise work too; over a loop of 25 tasks
    # (two per iteration) it counts one iteration.
    assert flops <= xla_flops(vmapped) <= 1.15 * flops
    assert xla_flops(looped) < 0.2 * flops


CONFIG_WORKLOADS = {
    "omniglot-metaoptnet-r2d2": "experiments/omniglot_metaoptnet_r2d2.py",
    "omniglot-matchingnet": "experiments/omniglot_matchingnet.py",
}


def config_learner(name):
    """The config of workload ``name`` and the learner that jmeta.experiment builds from it (independently of
    jmeta.bench)."""
    from jmeta.experiment import build_learner, family_without_data, load_config

    config = load_config(CONFIG_WORKLOADS[name], ["data_dir="])
    return config, build_learner(config, family_without_data(config, (28, 28, 1)))[0]


@pytest.mark.parametrize("name", sorted(CONFIG_WORKLOADS))
def test_config_workloads_have_their_configs_episodes_and_parameters(name):
    config, learner = config_learner(name)
    trainer, state, tasks = bench.build(name)
    ways, shots, queries = config.ways, config.shots, config.queries
    assert tasks.support_x.shape == (config.meta_batch, ways * shots, 28, 28, 1)
    assert tasks.query_x.shape == (config.meta_batch, ways * queries, 28, 28, 1)
    assert (tasks.support_y[0] == jax.numpy.repeat(jax.numpy.arange(ways), shots)).all()
    shapes = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), jax.eval_shape(learner.init, jax.random.key(0)))
    assert jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), (state.params, state.model_state)) == shapes


@pytest.mark.slow  # about 40 s each on 2 busy cores (compilation)
@pytest.mark.parametrize("name", sorted(CONFIG_WORKLOADS))
def test_config_workloads_compute_their_configs_loss_and_run_a_step(name):
    """The same query loss on the bench's first task as the config's learner, then one timed meta-step."""
    _, learner = config_learner(name)
    trainer, state, tasks = bench.build(name)
    config_loss, _ = jax.jit(learner.task_loss)(state.params, state.model_state, jax.tree.map(lambda x: x[0], tasks))
    first = jax.tree.map(lambda leaf: leaf[:1], tasks)
    bench_loss, _ = jax.jit(trainer.loss)(state.params, state.model_state, first)
    assert float(bench_loss) == pytest.approx(float(config_loss), rel=1e-5)
    result = bench.run(name, steps=1)
    assert result.tasks_per_step == tasks.support_x.shape[0] and result.tasks_per_s > 0 and result.flops_per_step > 0


def test_workloads_without_inner_loop_refuse_inner_steps_and_remat():
    with pytest.raises(ValueError, match="omniglot-matchingnet has none \\(got inner_steps=3, remat=False"):
        bench.build("omniglot-matchingnet", inner_steps=3)
    with pytest.raises(ValueError, match="omniglot-metaoptnet-r2d2 has none \\(got inner_steps=1, remat=True"):
        bench.memory("omniglot-metaoptnet-r2d2", remat=True)
