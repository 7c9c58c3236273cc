"""Figures: learning curves of a run, and a learner's predictions before and after adaptation
(cf. Finn et al. 2017, Figure 2).

Example::

    >>> plot_workdir("runs/sinusoid_maml")                                                   # doctest: +SKIP
    >>> plot_sinusoid_adaptation(learner, params, state, jax.random.key(0), path="fig.png")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jmeta.learners.base import Learner
from jmeta.nn import PyTree
from jmeta.tasks.sinusoid import X_RANGE, sinusoid_functions, sinusoid_tasks


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_workdir(workdir: str | Path, member_labels: Sequence[str] | None = None) -> list[Path]:
    """Writes ``learning_curves.png`` from ``workdir/metrics.jsonl``: each logged quantity against the
    meta-training step, training and validation side by side. Returns the paths of the figures there.
    A population's (:mod:`jmeta.population`) draws a curve per member, named by ``member_labels`` (default
    ``member K``; ``jmeta plot`` passes ``jmeta.population.member_labels`` of the run's config).

    A program's run (``jmeta train`` of a config with a ``program`` key, :mod:`jmeta.systems.programs`) logs
    no learning curves: the figures it drew are returned, and without any a ValueError says so. Raises
    FileNotFoundError for a folder that is not a ``jmeta train`` workdir."""
    workdir = Path(workdir)
    metrics_path = workdir / "metrics.jsonl"
    config_path = workdir / "config.json"
    program = json.loads(config_path.read_text()).get("program") if config_path.is_file() else None
    if program and not metrics_path.is_file():
        figures = sorted(workdir.glob("*.png"))
        if not figures:
            raise ValueError(
                f"this workdir holds a run of program {program!r}, which logs no learning curves (no metrics.jsonl) "
                "and drew no figure; its results are in results.json."
            )
        return figures
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} not found: is {str(workdir)!r} a `jmeta train` workdir?")
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    if not records:
        raise ValueError(f"{metrics_path} holds no logged step yet.")
    plt = _pyplot()
    if "stopped" in records[0]:  # a population's: a curve per member (jmeta.population)
        labels = member_labels or [f"member {k}" for k in range(len(records[0]["stopped"]))]
        figure = population_curves(records, labels)
    else:
        figure = learning_curves(records)
    path = workdir / "learning_curves.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path, *sorted(p for p in workdir.glob("*.png") if p != path)]


def population_curves(records: Sequence[dict[str, Any]], labels: Sequence[str]) -> Any:
    """A matplotlib figure of a population's ``metrics.jsonl`` records: one panel per logged quantity, one
    colour per member (``labels``), meta-training as lines and validation as dashed lines with markers; a
    stopped member's curve ends where it became non-finite."""
    skip = {"step", "tasks_per_s", "training_example_passes", "stopped", "val_diverged"}
    quantities = sorted({name.removeprefix("val_") for r in records for name in r if name not in skip})
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(quantities), figsize=(4.5 * len(quantities), 3.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, name in zip(axes[0], quantities, strict=True):
        for k, label in enumerate(labels):
            colour = colours[k % len(colours)]
            stopped = records[-1]["stopped"][k]
            label += f" (non-finite at step {stopped})" if stopped else ""
            axis.plot([], [], "-", color=colour, label=label)  # in the legend even if it stopped before any point
            for key, style in ((name, "-"), (f"val_{name}", "--.")):
                points = [(r["step"], r[key][k]) for r in records if key in r and r[key][k] is not None]
                if points:
                    axis.plot(*zip(*points, strict=True), style, color=colour)
        axis.set_xlabel("meta-step")
        validated = any(f"val_{name}" in r for r in records)
        axis.set_title(f"{name} (dashed: validation)" if validated else name)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def learning_curves(records: Sequence[dict[str, float]]) -> Any:
    """A matplotlib figure with one panel per logged quantity of ``records`` (the lines of
    ``metrics.jsonl``) against the meta-step, meta-training and validation values together; a series of
    one point (a run logged once) is drawn as a marker."""
    counters = {"step", "tasks_per_s", "training_example_passes"}  # not learning curves
    quantities = sorted({name.removeprefix("val_") for r in records for name in r} - counters)
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(quantities), figsize=(4.5 * len(quantities), 3.4), squeeze=False)
    for axis, name in zip(axes[0], quantities, strict=True):
        for key, label in ((name, "meta-train"), (f"val_{name}", "validation")):
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                marker = "." if label == "validation" or len(points) == 1 else None
                axis.plot(*zip(*points, strict=True), marker=marker, label=label)
        axis.set_xlabel("meta-step")
        axis.set_title(name)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_sinusoid_adaptation(
    learner: Learner,
    params: PyTree,
    model_state: PyTree,
    key: jax.Array,
    *,
    shots: int = 5,
    steps: Sequence[int] = (0, 1, 10),
    num_tasks: int = 3,
    path: str | Path = "sinusoid_adaptation.png",
) -> Path:
    """Saves a PNG with, for each of ``num_tasks`` sine tasks, the truth, the ``shots`` support points and
    the learner's predictions after each count of inner ``steps`` (0 = the meta-learned initialisation)."""
    plt = _pyplot()
    tasks = sinusoid_tasks(key, num_tasks, shots=shots, queries=1)
    truth = sinusoid_functions(key, num_tasks)
    grid = jnp.broadcast_to(jnp.linspace(*X_RANGE, 200)[None, :, None], (num_tasks, 200, 1))
    figure, axes = plt.subplots(1, num_tasks, figsize=(4.5 * num_tasks, 3.6), sharey=True, squeeze=False)
    for i, axis in enumerate(axes[0]):
        axis.plot(grid[i, :, 0], truth(grid)[i, :, 0], color="red", label="ground truth")
        for k in steps:
            adapted = learner.adapt(params, model_state, tasks.support_x[i], tasks.support_y[i], steps=k)
            prediction, _ = learner.predict(adapted, model_state, grid[i])
            style = dict(linestyle=":", color="tab:green") if k == 0 else dict(linestyle="--")
            axis.plot(grid[i, :, 0], prediction[:, 0], label="pre-update" if k == 0 else f"{k} grad steps", **style)
        axis.scatter(
            tasks.support_x[i, :, 0],
            tasks.support_y[i, :, 0],
            color="black",
            marker="^",
            zorder=3,
            label=f"{shots} points used for gradient",
        )
        axis.set_xlabel("x")
    axes[0, 0].set_ylabel("y")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    figure.suptitle(f"MAML, K={shots}: predictions before and after adaptation")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
