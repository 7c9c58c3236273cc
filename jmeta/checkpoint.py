"""Checkpoints of a meta-training run with Orbax: the latest ones to resume from, and the best by validation.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed during
a write leaves the previous checkpoints readable. In a multi-process run (``jax.distributed``) every
process calls ``save`` and ``restore`` with the same values, as Orbax requires: each writes its part of the
arrays, process 0 the metadata. What is saved is everything the run depends on: the ``TrainState`` (step,
parameters, model state, optimiser state) and the task sampler's state, which for jmeta's on-device
samplers is its PRNG key (the tasks of step ``i`` are drawn from ``fold_in(key, i)``).

Restored arrays are always placed with an explicit sharding (the given one, else the reader's first local
device), never with the one saved: a run trained on 8 devices is read on 1, and the reverse.

Every checkpoint is verified by restoring it. A damaged one (a file cut short or emptied, a missing
``_METADATA``: a full disk, a copy cut off, a crashed file system) is skipped for the next newest:

- ``jmeta train`` (``Checkpoints.resume``) resumes from the newest intact checkpoint of ``latest`` and
  ``best`` (both hold the whole run state) and sets each damaged one aside, renamed to
  ``<step>.damaged-<n>`` beside it (invisible to Orbax, kept for inspection, never deleted), with one
  warning line naming them. It sets nothing aside unless another checkpoint restored: when none does,
  the fault may be the reader's, and the error names each checkpoint with its failure.
- Readers (``read_only=True``: ``jmeta eval``, ``jmeta predict``, ``jmeta.load_run``) skip a damaged
  checkpoint with one warning line and leave it where it is: they may read a workdir that a ``jmeta train``
  writes, and only the run holding the workdir's lock moves its files.

A full disk, which Orbax reports as a ``ValueError`` (``RESOURCE_EXHAUSTED``) among the tracebacks of its
writer threads, raises :class:`jmeta.storage.DiskFullError`, whose one line says what to do.

Example::

    >>> checkpoints = Checkpoints("runs/x/checkpoints", best_metric="loss")      # doctest: +SKIP
    >>> checkpoints.save(state, sampler_key, validation={"loss": 0.4})          # doctest: +SKIP
    >>> state, sampler_key = checkpoints.resume(abstract_state, abstract_key)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from jmeta.interrupts import interrupt_deferred, interrupts_remembered  # noqa: F401 (re-exported)
from jmeta.meta_trainer import TrainState
from jmeta.parallel import put
from jmeta.storage import disk_full_reported, failed_writes_quiet

HIGHER_IS_BETTER = ("accuracy",)
_MOVE_HINT = "Move the damaged checkpoints away to start from an older one, or use a new --workdir."
_LATEST_HINT = "The latest checkpoints may be intact: `jmeta eval --last`, or checkpoint='latest', reads them."
# The file of a checkpoint (a StandardSave, "default") that says what its arrays are.
_ARRAYS_METADATA = "default/_METADATA"


class NoIntactCheckpointError(RuntimeError):
    """Checkpoints exist but none of them restores; the message names each with its failure."""


class Checkpoints:
    """``directory/latest``: the last ``keep`` checkpoints; ``directory/best``: the best by ``best_metric``
    on validation (lowest, or highest for accuracy), where a checkpoint with fewer diverged validation tasks
    (``validation["diverged"]``, non-finite) always ranks above one with more.

    ``read_only=True`` opens the checkpoints of a run that may still be writing them (``jmeta eval``,
    ``jmeta.load_run``): nothing is created, saved, set aside or cleaned up, so a checkpoint being written
    is left alone and only complete ones are seen. ``sharding``: where saved and restored arrays live (e.g.
    replicated over the run's mesh); None: saved as they are, restored onto the first local device."""

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
        self.read_only = read_only
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
        self.restored_from: Path | None = None  # the checkpoint folder the last restore or resume read

    def _open(self, name: str) -> ocp.CheckpointManager:
        with _quiet_absl(self._options[name].read_only):  # Orbax warns that a read-only directory is read-only
            return ocp.CheckpointManager(self._directory / name, options=self._options[name])

    def save(self, state: TrainState, sampler_key: jax.Array, validation: dict[str, float] | None = None) -> None:
        """Saves ``state`` and the sampler key as the latest checkpoint, and as the best if ``validation``
        beats the best so far. Ctrl-C waits until both are written. A full disk raises
        :class:`jmeta.storage.DiskFullError` (one line; Orbax's own tracebacks are held back)."""
        step = int(state.step)
        item = self._placed(_item(state, sampler_key))
        with (
            disk_full_reported(self._directory, f"saving the checkpoint of step {step}"),
            failed_writes_quiet(),
            interrupt_deferred(),
        ):
            self.latest.save(step, args=ocp.args.StandardSave(item), force=True)
            if validation is not None:
                self.best.save(step, args=ocp.args.StandardSave(item), metrics=validation, force=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def saved_steps(self) -> list[int]:
        """The steps of the checkpoints kept in ``latest``, oldest first (``keep`` of them; all with ``keep=None``)."""
        return sorted(self.latest.all_steps())

    def restore(
        self, abstract_state: TrainState, abstract_key: jax.Array, *, best: bool = False, step: int | None = None
    ) -> tuple[TrainState, jax.Array]:
        """The latest (or best) intact checkpoint, shaped like the given abstract state and key; with ``step``,
        only the checkpoint of that step (in ``latest``, e.g. one of :meth:`saved_steps`; in ``best`` with ``best``).

        A damaged checkpoint is skipped for the next newest (next best) with one warning line, and set
        aside unless ``read_only``. A running ``jmeta train`` may delete the step being read when it saves
        a newer one; the newest complete step is then read instead. Raises ``FileNotFoundError`` with no
        checkpoint, :class:`NoIntactCheckpointError` when none restores or all were set aside."""
        name = "best" if best else "latest"
        found = self._first_intact(
            lambda: [(name, s) for s in self._steps(name) if step is None or s == step],
            abstract_state,
            abstract_key,
            hint=_LATEST_HINT if best else _MOVE_HINT,
        )
        if found is None:
            aside = sorted(p.name for p in (self._directory / name).glob("*.damaged-*"))
            if aside:
                raise NoIntactCheckpointError(
                    f"no intact checkpoint in {self._directory / name}: the damaged {', '.join(aside)} were set "
                    f"aside. {_LATEST_HINT if best else _MOVE_HINT}"
                )
            if step is not None:
                saved = sorted(getattr(self, name).all_steps())
                raise FileNotFoundError(f"no checkpoint of step {step} in {self._directory / name}; it holds {saved}.")
            raise FileNotFoundError(f"no checkpoint in {self._directory / name}; train first with `jmeta train`.")
        return found

    def resume(self, abstract_state: TrainState, abstract_key: jax.Array) -> tuple[TrainState, jax.Array] | None:
        """For ``jmeta train``: the newest intact checkpoint of ``latest`` and ``best`` (None if there is
        none at all), after verifying every checkpoint of ``best`` too, so that a damaged best is neither
        compared with nor tested. Damaged checkpoints are set aside as ``<step>.damaged-<n>``, with one
        warning line naming them; raises :class:`NoIntactCheckpointError` when none restores."""

        def newest_first() -> list[tuple[str, int]]:
            steps = [(step, 0, "latest") for step in self._steps("latest")]
            steps += [(step, 1, "best") for step in self._steps("best")]  # at the same step, latest first
            return [(name, step) for step, _, name in sorted(steps, key=lambda s: (-s[0], s[1]))]

        return self._first_intact(newest_first, abstract_state, abstract_key, hint=_MOVE_HINT, verify_best=True)

    def _steps(self, name: str) -> list[int]:
        """The steps of ``latest`` newest first, or of ``best`` best first."""
        manager = getattr(self, name)
        steps = sorted(manager.all_steps(), reverse=True)
        first = manager.best_step() if name == "best" else None
        return [first, *(s for s in steps if s != first)] if first is not None else steps

    def _first_intact(
        self,
        candidates: Callable[[], list[tuple[str, int]]],
        abstract_state: TrainState,
        abstract_key: jax.Array,
        *,
        hint: str,
        verify_best: bool = False,
    ) -> tuple[TrainState, jax.Array] | None:
        """Restores ``candidates()`` in order until one restores (with ``verify_best``, every checkpoint of
        ``best`` is restored too); reports, and unless read-only sets aside, the damaged ones. None without
        candidates; :class:`NoIntactCheckpointError` (ending with ``hint``) when none restores."""
        abstract = self._abstract(abstract_state, abstract_key)
        damaged: dict[tuple[str, int], str] = {}
        found = None
        for _ in range(3):  # a step deleted while it was read (a running trainer saved newer ones): list again
            listed = [c for c in candidates() if c not in damaged]
            if not listed and not damaged:
                return None
            vanished = False
            for name, step in listed:
                if found is not None and not (verify_best and name == "best"):
                    continue
                try:
                    item = self._restore_step(name, step, abstract)
                except Exception as error:  # any failure: TensorStore raises plain Exceptions
                    if not (self._directory / name / str(step)).exists():
                        vanished = True
                        continue
                    damaged[name, step] = _reason(self._directory / name / str(step), error)
                    continue
                if found is None:
                    found = (name, step, item)
            if found is not None or not vanished:
                break
        if found is None:
            failures = "; ".join(f"{name}/{step}: {reason}" for (name, step), reason in damaged.items())
            raise NoIntactCheckpointError(
                f"no intact checkpoint in {self._directory} ({failures}); nothing was moved. {hint}"
            )
        name, step, item = found
        self.restored_from = self._directory / name / str(step)
        if damaged:
            self._report(damaged, f"{name}/{step}")
        return item["state"], jax.random.wrap_key_data(item["sampler_key"])

    def _restore_step(self, name: str, step: int, abstract: dict[str, Any]) -> dict[str, Any]:
        manager = getattr(self, name)
        # Installed before the reads start: those a failed restore abandons may report from TensorStore's threads
        # at any moment once Orbax's event loop is closed, even before the exception below is caught.
        hook = sys.unraisablehook
        _drop_abandoned_reads()
        try:
            with _quiet_absl(True, logging.CRITICAL):  # Orbax logs each unreadable file before raising
                item = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception:
            # The filter stays for the abandoned reads. A failed restore leaves the manager unusable: opened again.
            manager.close()
            setattr(self, name, self._open(name))
            raise
        sys.unraisablehook = hook  # nothing abandoned: the previous hook again
        return item

    def _report(self, damaged: dict[tuple[str, int], str], used: str) -> None:
        """One warning line; unless read-only, sets the damaged checkpoints aside first (process 0 renames,
        every process then opens the managers again)."""
        if self.read_only:
            skipped = "; ".join(f"{name}/{step} ({reason})" for (name, step), reason in damaged.items())
            message = f"skipped damaged checkpoints in {self._directory}: {skipped}; read {used} (left in place)"
        else:
            moved = {key: _set_aside(self._directory / key[0] / str(key[1])) for key in damaged}
            if jax.process_count() > 1:
                ocp.multihost.sync_global_processes(f"jmeta_set_aside_{'_'.join(str(k[1]) for k in damaged)}")
            for name in ("latest", "best"):
                getattr(self, name).close()
                setattr(self, name, self._open(name))
            aside = "; ".join(
                f"{name}/{step} -> {name}/{moved[name, step]} ({reason})" for (name, step), reason in damaged.items()
            )
            message = f"set aside damaged checkpoints in {self._directory}: {aside}; using {used}"
        if jax.process_index() == 0:
            print(f"jmeta: warning: {message}", file=sys.stderr)

    def _placed(self, item: dict[str, Any]) -> dict[str, Any]:
        return item if self.sharding is None else put(item, self.sharding)

    def _abstract(self, abstract_state: TrainState, abstract_key: jax.Array) -> dict[str, Any]:
        """The item to restore, each array with an explicit target sharding: without one Orbax places
        arrays as they were saved, which fails on a machine with other devices ("Topology mismatch")."""
        sharding = self.sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = _item(abstract_state, abstract_key)
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _set_aside(path: Path) -> str:
    """Renames a damaged checkpoint ``<step>`` to ``<step>.damaged-<n>`` (the first free ``n``; process 0
    only) and returns the new name."""
    n = 1
    while (target := path.with_name(f"{path.name}.damaged-{n}")).exists():
        n += 1
    if jax.process_index() == 0:
        path.rename(target)
    return target.name


def _reason(path: Path, error: BaseException) -> str:
    """Why the checkpoint at ``path`` did not restore: an empty folder, a missing metadata file (Orbax then
    fails on the arrays' structure), else the innermost error's first line, short (TensorStore's outer
    message quotes a whole spec)."""
    if not any(path.iterdir()):
        return "an empty folder"
    if not (path / _ARRAYS_METADATA).is_file():
        return f"{_ARRAYS_METADATA} missing"
    while error.__cause__ is not None:
        error = error.__cause__
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"




@contextlib.contextmanager
def _quiet_absl(quiet: bool, level: int = logging.ERROR) -> Iterator[None]:
    """Orbax's log messages below ``level`` are dropped inside the block (if ``quiet``)."""
    logger = logging.getLogger("absl")
    previous = logger.level
    if quiet:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _drop_abandoned_reads() -> None:
    """From now on (installed once per hook it wraps), drops what a failed restore's reads still under
    way report as unraisable, one traceback each, when they end: the "Event loop is closed" RuntimeErrors of
    TensorStore's callbacks once Orbax has closed its event loop, and the errors of Orbax's read coroutines
    (``_read_array_index_and_device_put``) when they are finalised, which may be long after the restore. Every
    other unraisable exception goes to the previous ``sys.unraisablehook``."""
    previous = sys.unraisablehook
    if getattr(previous, "_jmeta_drops_abandoned_reads", False):
        return

    def hook(unraisable: Any) -> None:
        value, source = unraisable.exc_value, unraisable.object
        closed_loop = isinstance(value, RuntimeError) and str(value) == "Event loop is closed"
        read = inspect.iscoroutine(source) and source.__name__ == "_read_array_index_and_device_put"
        if not (closed_loop or read):
            previous(unraisable)

    hook._jmeta_drops_abandoned_reads = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


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
