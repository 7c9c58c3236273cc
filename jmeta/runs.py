"""A trained run back as a learner: ``load_run(workdir)`` and predictions on a support and a query set.

``load_run`` rebuilds the model and learner from the workdir's ``config.json`` and ``model_input.json``
(the shape of one input, saved by ``jmeta train``), so no data set is loaded and no sampler key is needed,
and restores the meta-parameters and model state from a checkpoint. Checkpoints are opened read-only: it
is safe while ``jmeta train`` is still writing to the workdir (a checkpoint being written is neither
read nor cleaned up; only complete ones are seen). The arrays are placed on this process's first device,
whatever devices the run was trained on. A damaged checkpoint is skipped for the next newest with one
warning line and left where it is (only ``jmeta train``, holding the workdir's lock, sets it aside).

Example::

    >>> import jmeta
    >>> run = jmeta.load_run("runs/s")                                            # doctest: +SKIP
    >>> task_params = run.learner.adapt(run.params, run.model_state, xs, ys, steps=10)  # doctest: +SKIP
    >>> predictions, _ = run.learner.predict(task_params, run.model_state, xq)    # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jmeta.checkpoint import Checkpoints
from jmeta.experiment import (
    apply_run_defaults,
    build_learner,
    components,
    family_without_data,
    import_components,
    is_population,
)
from jmeta.learners.base import Learner
from jmeta.meta_trainer import TrainState, meta_trainer
from jmeta.nn import PyTree
from jmeta.validation import one_of, positive_int

MODEL_INPUT = "model_input.json"
CHECKPOINTS = ("best", "latest")


class Run(NamedTuple):
    """A trained run: its learner, meta-parameters and model state at ``step``, from the ``checkpoint``
    (``"best"`` or ``"latest"``), the run's config, and the shape of one input of its model."""

    learner: Learner
    params: PyTree
    model_state: PyTree
    config: ml_collections.ConfigDict
    step: int
    checkpoint: str
    input_shape: tuple[int, ...]


def load_run(workdir: str | Path, checkpoint: str = "best") -> Run:
    """Loads the run in ``workdir`` (written by ``jmeta train``) from its best checkpoint by validation,
    or its ``"latest"``; a run without validation (``val_every=0``) has no best, and its latest is used
    (``Run.checkpoint`` says which was read). A population's members are loaded by ``jmeta.load_run(workdir,
    member=K)`` (``jmeta.population.load_run``), which calls this function for a single run.

    Raises ``FileNotFoundError`` if ``workdir`` is not a run or has no checkpoint yet, ``ValueError`` for
    an unknown ``checkpoint`` or a run whose model cannot be rebuilt (``program`` runs),
    ``jmeta.checkpoint.NoIntactCheckpointError`` if no checkpoint of the kind asked for restores (a
    damaged one is skipped with a warning).

    Example::

        >>> run = load_run("runs/s", checkpoint="latest")  # doctest: +SKIP
        >>> run.step, run.config.learner                   # doctest: +SKIP
        (2000, 'maml')
    """
    one_of("checkpoint", checkpoint, CHECKPOINTS)
    workdir = Path(workdir)
    config = read_config(workdir)
    if config.get("program"):
        raise ValueError(
            f"{str(workdir)!r} is a run of program {config.program!r}: load_run rebuilds meta-learner runs only "
            "(a program's results are in its results.json)."
        )
    if is_population(config):
        raise ValueError(
            f"{str(workdir)!r} holds a population (seeds or sweep): load a member with "
            "jmeta.load_run(workdir, member=K) (jmeta.population.load_run)."
        )
    input_shape = model_input_shape(workdir, config)
    learner, meta_optimizer = build_learner(config, family_without_data(config, input_shape))
    best = checkpoint == "best" and bool(config.val_every)
    state = restore_state(workdir, config, learner, meta_optimizer, best=best)
    checkpoint = "best" if best else "latest"
    return Run(learner, state.params, state.model_state, config, int(state.step), checkpoint, input_shape)


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run was trained with (``workdir/config.json``), after importing the modules that register
    its components (``imports``), so that a user's learner, task family or model rebuilds in a fresh process."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {str(workdir)!r} a `jmeta train` workdir?")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    import_components(config)
    return apply_run_defaults(config)


def save_model_input(workdir: Path, example_input: jax.Array) -> None:
    """Writes ``workdir/model_input.json``: the shape and dtype of one input of the run's model."""
    text = json.dumps({"shape": list(example_input.shape[1:]), "dtype": str(example_input.dtype)}) + "\n"
    (workdir / MODEL_INPUT).write_text(text)


def model_input_shape(workdir: Path, config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The shape of one input of the run's model, from ``model_input.json``."""
    path = workdir / MODEL_INPUT
    if path.is_file():
        return tuple(json.loads(path.read_text())["shape"])
    raise FileNotFoundError(
        f"{path} not found: the run was written by an older jmeta. Run its `jmeta train` command again (a "
        "finished run only meta-tests again) to write it."
    )


def restore_state(
    workdir: Path,
    config: ml_collections.ConfigDict,
    learner: Learner,
    meta_optimizer: optax.GradientTransformation,
    *,
    best: bool,
    step: int | None = None,
) -> TrainState:
    """The best (or latest) intact checkpoint's ``TrainState`` on this process's first device, opened
    read-only (safe during training); with ``step``, that step's (``Checkpoints.restore``)."""
    abstract_state = jax.eval_shape(meta_trainer(learner, meta_optimizer).init, jax.random.key(0))
    abstract_key = jax.eval_shape(lambda: jax.random.key(0))
    checkpoints = Checkpoints(workdir / "checkpoints", best_metric=config.val_metric, read_only=True)
    try:
        return checkpoints.restore(abstract_state, abstract_key, best=best, step=step)[0]
    finally:
        checkpoints.close()


def predict(run: Run, support_x: Any, support_y: Any, query_x: Any, *, steps: int | None = None) -> np.ndarray:
    """Adapts ``run``'s learner to one support set with ``steps`` inner steps (default: the most the run
    was tested with, ``max(config.eval_steps)``) and returns its outputs on the query set.

    Shapes: ``support_x`` ``(points, *input_shape)`` and ``query_x`` ``(queries, *input_shape)`` float32
    (images scaled to [0, 1] as the run's data were); ``support_y`` ``(points,)`` integer labels in
    ``[0, ways)`` for classification, ``(points, outputs)`` float targets for regression. Returns
    ``(queries, ways)`` logits or ``(queries, outputs)`` values. BatchNorm uses the statistics of the
    query set (transductive). Raises ValueError for shapes or labels that do not fit the run.

    Example::

        >>> outputs = predict(load_run("runs/s"), xs, ys, xq, steps=10)  # doctest: +SKIP
    """
    config = run.config
    steps = max(config.eval_steps) if steps is None else positive_int("steps", steps, allow_zero=True)
    support_x, query_x = np.asarray(support_x, np.float32), np.asarray(query_x, np.float32)
    input_shape = run.input_shape
    for name, x in (("support_x", support_x), ("query_x", query_x)):
        if x.shape[1:] != input_shape or x.shape[0] < 1:
            raise ValueError(
                f"{name} must have shape (points, {', '.join(map(str, input_shape))}) for this run's model; got "
                f"{x.shape}."
            )
    support_y = _support_labels(run, support_y, len(support_x))

    @jax.jit
    def adapt_and_predict(params: PyTree, state: PyTree, sx: jax.Array, sy: jax.Array, qx: jax.Array) -> jax.Array:
        return run.learner.predict(run.learner.adapt(params, state, sx, sy, steps=steps), state, qx)[0]

    return np.asarray(adapt_and_predict(run.params, run.model_state, support_x, support_y, query_x))


def _support_labels(run: Run, support_y: Any, points: int) -> jax.Array:
    """``support_y`` checked against what the run's task family declares: float targets ``(points,
    outputs)`` for ``labels="values"``, else integer class labels below the classes the learner handles."""
    support_y = np.asarray(support_y)
    family, _, learner = components(run.config)
    outputs = family.properties["outputs"](run.config)
    if family.properties["labels"] == "values":
        if support_y.shape != (points, outputs):
            raise ValueError(f"support_y must have shape ({points}, {outputs}); got {support_y.shape}.")
        return jnp.asarray(support_y, jnp.float32)
    ways = max(outputs, run.config.get("eval_ways", outputs)) if learner.properties["any_ways"] else outputs
    if support_y.shape != (points,) or not np.issubdtype(support_y.dtype, np.integer):
        raise ValueError(
            f"support_y must be {points} integer class labels, shape ({points},); got dtype {support_y.dtype} and "
            f"shape {support_y.shape}."
        )
    if support_y.min() < 0 or support_y.max() >= ways:
        raise ValueError(
            f"support_y must lie in 0..{ways - 1} (the run's model has {ways} ways); got labels from "
            f"{support_y.min()} to {support_y.max()}."
        )
    return jnp.asarray(support_y, jnp.int32)


def read_images(paths: Sequence[Path], run: Run) -> np.ndarray:
    """Image files prepared as ``run``'s data set prepares its own, as a ``(len(paths), *run.input_shape)``
    float32 array in [0, 1]: by the data set's registered ``preprocess`` (e.g. Omniglot's resizing and
    inversion, with the run's data options), else converted to the run's channels and size as
    :func:`jmeta.data.from_folder` does. Raises ValueError for no paths or a run whose task has no images.
    """
    from jmeta import data
    from jmeta.data.registry import entry
    from jmeta.experiment import data_options

    if not paths:
        raise ValueError("no image files to read.")
    task = run.config.task
    if task not in data.dataset_names():  # a task family of its own, not episodes of a registered data set
        raise ValueError(f"the run's task {task!r} is not a data set of images; give .npy inputs instead.")
    if entry(task).preprocess is not None:
        images = data.preprocess(task, list(paths), **data_options(run.config))
    else:
        height, width, channels = run.input_shape
        images = data.folder.preprocess(list(paths), image_size=(height, width), channels=channels)
    return images.astype(np.float32) / 255.0


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted; hidden, system and non-image files are skipped as
    the data readers skip them (``jmeta.data.files.skip_reason``)."""
    from jmeta.data.files import skip_reason

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images.")
    return sorted(p for p in folder.iterdir() if p.is_file() and skip_reason(p.name) is None)
