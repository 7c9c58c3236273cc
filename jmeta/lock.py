"""One run per workdir: an exclusive lock on ``workdir/.lock`` held by the ``jmeta train`` that writes there.

The lock is an advisory ``fcntl.flock`` on an open file, so the operating system drops it when the process
ends, whether it exits, crashes or is killed: a stale lock file never blocks the next run. The file
records who holds it (process id, host, start time) for the error a second run gets. Readers
(``jmeta eval``, ``jmeta plot``, ``jmeta.load_run``) never take it.

``flock`` is local to one machine on most network file systems; two hosts sharing a workdir over NFS are
not kept apart.

Example::

    >>> with workdir_lock("runs/s"):   # doctest: +SKIP
    ...     pass                        # meta-train, write checkpoints and results
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another process holds the workdir's lock."""


@contextlib.contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[Path]:
    """Holds the exclusive lock of ``workdir`` (created if missing) for the ``with`` block.

    Raises ``WorkdirBusyError`` at once, naming the holder's process id and host, if another process holds it.
    """
    path = Path(workdir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip() or "an unknown process"
            raise WorkdirBusyError(
                f"workdir {str(workdir)!r} is in use by another `jmeta train` ({holder}); wait for it to end or "
                "stop it, or use another --workdir. `jmeta eval`, `jmeta plot` and jmeta.load_run can read the "
                "workdir meanwhile."
            ) from None
        os.ftruncate(descriptor, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.pwrite(descriptor, f"pid {os.getpid()} on host {socket.gethostname()}, since {started}\n".encode(), 0)
        yield path
    finally:
        os.close(descriptor)  # closing drops the lock
