"""A full disk, whichever layer reports it, as one error that says so.

Python raises ``OSError`` with ``errno.ENOSPC``; Orbax and TensorStore raise ``ValueError("RESOURCE_EXHAUSTED:
... No space left on device [os_error_code='28']")`` (or a plain ``Exception`` whose cause is one), and log
each failed writer thread's traceback on the way. :func:`disk_full_reported` turns any of them into a
:class:`DiskFullError` naming the folder and what was being written; :func:`failed_writes_quiet` holds the
tracebacks of a failed Orbax save back, so that the one line is all a full disk prints.

Example::

    >>> from pathlib import Path
    >>> try:
    ...     with disk_full_reported(Path("runs/s/results.json"), "writing the meta-test results"):
    ...         raise ValueError("RESOURCE_EXHAUSTED: Failed writing: No space left on device [os_error_code='28']")
    ... except DiskFullError as error:
    ...     print(str(error).split(";")[0])
    [Errno 28] no space left on the device holding runs/s while writing the meta-test results
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# What TensorStore's messages carry for ENOSPC (e.g. "[os_error_code='28']") and the C library's text for it.
_DISK_FULL_TEXTS = (f"os_error_code='{errno.ENOSPC}'", os.strerror(errno.ENOSPC))
_LOCAL_FILE = re.compile(r'local file "([^"]+)"')


class DiskFullError(OSError):
    """No space left on the device holding ``folder`` while ``doing`` something; ``errno`` is ENOSPC."""

    def __init__(self, folder: str | Path, doing: str):
        super().__init__(
            errno.ENOSPC,
            f"no space left on the device holding {folder} while {doing}; free some space and run the same command "
            "again (a training run resumes from its last complete checkpoint)",
        )


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says the disk is full: an ``OSError`` with
    ``errno.ENOSPC``, or a message (TensorStore's ``RESOURCE_EXHAUSTED``) with ``os_error_code='28'`` or
    "No space left on device"."""
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC) or any(text in str(e) for text in _DISK_FULL_TEXTS)
        for e in _chain(error)
    )


def as_disk_full(error: BaseException, doing: str = "writing the run's files") -> DiskFullError | None:
    """``error`` as a :class:`DiskFullError` (itself if it is one) if it says the disk is full, else None;
    the folder is the file the error names (``OSError.filename``, TensorStore's ``local file "..."``)."""
    if isinstance(error, DiskFullError):
        return error
    if not is_disk_full(error):
        return None
    for e in _chain(error):
        found = e.filename if isinstance(e, OSError) and e.filename else _LOCAL_FILE.search(str(e))
        if found:
            name = found if isinstance(found, str | os.PathLike) else found.group(1)
            return DiskFullError(Path(os.fsdecode(name)).parent, doing)
    return DiskFullError("the run's files", doing)


@contextlib.contextmanager
def disk_full_reported(path: str | Path, doing: str) -> Iterator[None]:
    """Raises :class:`DiskFullError` for ``path``'s folder (``path`` itself if it is one) when the block
    fails because the disk is full; any other error passes unchanged."""
    try:
        yield
    except Exception as error:
        if not is_disk_full(error) or isinstance(error, DiskFullError):
            raise
        path = Path(path)
        raise DiskFullError(path if path.is_dir() else path.parent, doing) from error


@contextlib.contextmanager
def failed_writes_quiet() -> Iterator[None]:
    """Holds back what Orbax's writer threads print while the block runs (their errors logged by
    ``absl``, their tracebacks on ``sys.stderr``); it is printed after all unless the block fails on a full
    disk, whose one-line error says everything. The failed save's abandoned asyncio tasks report their
    errors later, when collected: those that say the disk is full are dropped (:class:`_DiskFullTasks`)."""
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _DiskFullTasks) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_DiskFullTasks())
    absl_logger = logging.getLogger("absl")
    propagate = absl_logger.propagate
    held, stderr = io.StringIO(), sys.stderr
    logging_held = logging.StreamHandler(held)
    absl_logger.addHandler(logging_held)
    absl_logger.propagate = False
    sys.stderr = held
    disk_full = False
    try:
        yield
    except Exception as error:
        disk_full = is_disk_full(error)
        raise
    finally:
        sys.stderr = stderr
        absl_logger.removeHandler(logging_held)
        absl_logger.propagate = propagate
        if not disk_full and held.getvalue():
            stderr.write(held.getvalue())


class _DiskFullTasks(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records of errors that say the disk is full: the
    writer tasks of a failed Orbax save, already reported as one :class:`DiskFullError`."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not is_disk_full(error)


def close_event_writer(board: Any, folder: Path) -> None:
    """Closes a tensorboardX ``SummaryWriter`` (which writes its queued events out); a full disk raises
    :class:`DiskFullError` for ``folder``, after giving the writer's events up: its exit handler would
    otherwise fail again and print a traceback after the one line."""
    with disk_full_reported(folder, "writing the TensorBoard events"):
        try:
            board.close()
        except Exception as error:
            if is_disk_full(error):
                for writer in (board.all_writers or {}).values():
                    events = writer.event_writer
                    if not events._closed:
                        events._worker.stop()  # its thread ends
                        events._closed = True  # its close() and flush() then do nothing
            raise


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
