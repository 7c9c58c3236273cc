"""Checkpoints of a meta-training run with Orbax: the latest ones to resume from, and the best by validation.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed during
a write leaves the previous checkpoints readable. In a multi-process run (``jax.distributed``) every
process calls ``save`` and ``restore`` with the same values, as Orbax requires: each writes its part of the
arrays, process 0 the metadata, and restored arrays are placed with the given ``sharding``. What is saved
is everything the run depends on: the ``TrainState`` (step, parameters, model state, optimiser state)
and the task sampler's state, which for jmeta's on-device samplers is its PRNG key (the tasks of step
``i`` are drawn from ``fold_in(key, i)``).

Example::

    >>> checkpoints = Checkpoints("runs/x/checkpoints", best_metric="loss")      # doctest: +SKIP
    >>> checkpoints.save(state, sampler_key, validation={"loss": 0.4})          # doctest: +SKIP
    >>> state, sampler_key = checkpoints.restore(abstract_state, abstract_key)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jmeta.meta_trainer import TrainState
from jmeta.parallel import put

HIGHER_IS_BETTER = ("accuracy",)


class Checkpoints:
    """``directory/latest``: the last ``keep`` checkpoints; ``directory/best``: the best by ``best_metric``
    on validation (lowest, or highest for accuracy), where a checkpoint with fewer diverged validation tasks
    (``validation["diverged"]``, non-finite) always ranks above one with more.

    ``read_only=True`` opens the checkpoints of a run that may still be writing them (``jmeta eval``,
    ``jmeta.load_run``): nothing is created, saved or cleaned up, so a checkpoint being written is left
    alone and only complete ones are seen. ``sharding``: where saved and restored arrays live (e.g.
    replicated over the run's mesh; None: the default device)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        best_metric: str = "loss",
        keep: int = 2,
        read_only: bool = False,
        sharding: jax.sharding.Sharding | None = None,
    ):
        directory = Path(directory).absolute()
        if read_only:
            options = dict(enable_async_checkpointing=False, read_only=True, create=False, save_interval_steps=0)
        else:
            options = dict(enable_async_checkpointing=False, cleanup_tmp_directories=True, max_to_keep=keep)
        self.best_metric = best_metric
        self.sharding = sharding
        higher_is_better = best_metric in HIGHER_IS_BETTER

        def rank(metrics: dict[str, float]) -> tuple[float, float]:
            diverged = metrics.get("diverged", 0)
            return (-diverged, metrics[best_metric]) if higher_is_better else (diverged, metrics[best_metric])

        self._options = {
            "latest": ocp.CheckpointManagerOptions(**options, **_processes("latest")),
            "best": ocp.CheckpointManagerOptions(
                best_fn=rank,
                best_mode="max" if higher_is_better else "min",
                **(options if read_only else {**options, "max_to_keep": 1}),
                **_processes("best"),
            ),
        }
        self._directory = directory
        self.latest, self.best = self._open("latest"), self._open("best")

    def _open(self, name: str) -> ocp.CheckpointManager:
        with _quiet_absl(self._options[name].read_only):  # Orbax warns that a read-only directory is read-only
            return ocp.CheckpointManager(self._directory / name, options=self._options[name])

    def save(self, state: TrainState, sampler_key: jax.Array, validation: dict[str, float] | None = None) -> None:
        """Saves ``state`` and the sampler key as the latest checkpoint, and as the best if ``validation``
        beats the best so far. Ctrl-C waits until both are written. A full disk raises an OSError that says so."""
        step = int(state.step)
        item = self._placed(_item(state, sampler_key))
        try:
            with interrupt_deferred():
                self.latest.save(step, args=ocp.args.StandardSave(item), force=True)
                if validation is not None:
                    self.best.save(step, args=ocp.args.StandardSave(item), metrics=validation, force=True)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise OSError(
                    errno.ENOSPC,
                    f"no space left on the device holding {self.latest.directory} while saving the checkpoint "
                    f"of step {step}; free some space and run the same command again to resume from the last "
                    "complete checkpoint",
                ) from error
            raise

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(
        self, abstract_state: TrainState, abstract_key: jax.Array, *, best: bool = False
    ) -> tuple[TrainState, jax.Array]:
        """The latest (or best) checkpoint, shaped like the given abstract state and key.

        A running ``jmeta train`` may delete the step being read when it saves a newer one; the newest
        complete step is then read instead."""
        name = "best" if best else "latest"
        for attempt in range(3):
            manager = getattr(self, name)
            step = manager.best_step() if best else manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {manager.directory}; train first with `jmeta train`.")
            try:
                abstract = self._abstract(abstract_state, abstract_key)
                item = manager.restore(step, args=ocp.args.StandardRestore(abstract))
                return item["state"], jax.random.wrap_key_data(item["sampler_key"])
            except (ValueError, FileNotFoundError):
                if attempt == 2 or (Path(manager.directory) / str(step)).exists():
                    raise
                # The step was replaced by a newer one while it was read; a failed restore leaves the
                # manager unusable, so it is opened again.
                manager.close()
                setattr(self, name, self._open(name))
        raise AssertionError("unreachable")

    def _placed(self, item: dict[str, Any]) -> dict[str, Any]:
        return item if self.sharding is None else put(item, self.sharding)

    def _abstract(self, abstract_state: TrainState, abstract_key: jax.Array) -> dict[str, Any]:
        abstract = _item(abstract_state, abstract_key)
        if self.sharding is None:
            return abstract
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.sharding), abstract)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


@contextlib.contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Holds a SIGINT (Ctrl-C) back until the block ends, then delivers it: a checkpoint is written whole."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
        previous(signal.SIGINT, received[0])


@contextlib.contextmanager
def _quiet_absl(quiet: bool) -> Iterator[None]:
    logger = logging.getLogger("absl")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _processes(name: str) -> dict[str, Any]:
    """Process 0 writes the metadata; each manager has its own barrier names (they save one after the other)."""
    return {"multiprocessing_options": ocp.options.MultiprocessingOptions(primary_host=0, barrier_sync_key_prefix=name)}


def _item(state: TrainState, sampler_key: Any) -> dict[str, Any]:
    key_data = (
        jax.random.key_data(sampler_key)
        if not isinstance(sampler_key, jax.ShapeDtypeStruct)
        else jax.eval_shape(jax.random.key_data, sampler_key)
    )
    return {"state": state, "sampler_key": key_data}
