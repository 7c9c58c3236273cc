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

import errno
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jmeta.meta_trainer import TrainState
from jmeta.parallel import put

HIGHER_IS_BETTER = ("accuracy",)


class Checkpoints:
    """``directory/latest``: the last ``keep`` checkpoints; ``directory/best``: the best by ``best_metric``
    on validation (lowest, or highest for accuracy). ``sharding``: where saved and restored arrays live
    (e.g. replicated over the run's mesh; None: the default device)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        best_metric: str = "loss",
        keep: int = 2,
        sharding: jax.sharding.Sharding | None = None,
    ):
        directory = Path(directory).absolute()
        options = dict(enable_async_checkpointing=False, cleanup_tmp_directories=True)
        self.best_metric = best_metric
        self.sharding = sharding
        self.latest = ocp.CheckpointManager(
            directory / "latest",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **options, **_processes("latest")),
        )
        self.best = ocp.CheckpointManager(
            directory / "best",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1,
                best_fn=lambda metrics: metrics[best_metric],
                best_mode="max" if best_metric in HIGHER_IS_BETTER else "min",
                **options,
                **_processes("best"),
            ),
        )

    def save(self, state: TrainState, sampler_key: jax.Array, validation: dict[str, float] | None = None) -> None:
        """Saves ``state`` and the sampler key as the latest checkpoint, and as the best if ``validation``
        beats the best so far. A full disk raises an OSError that says so."""
        step = int(state.step)
        item = self._placed(_item(state, sampler_key))
        try:
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
        """The latest (or best) checkpoint, shaped like the given abstract state and key."""
        manager = self.best if best else self.latest
        step = manager.best_step() if best else manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {manager.directory}; train first with `jmeta train`.")
        abstract = _item(abstract_state, abstract_key)
        if self.sharding is not None:
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.sharding), abstract)
        item = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return item["state"], jax.random.wrap_key_data(item["sampler_key"])

    def _placed(self, item: dict[str, Any]) -> dict[str, Any]:
        return item if self.sharding is None else put(item, self.sharding)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


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
