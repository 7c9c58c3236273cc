"""Ctrl-C around compiled work: a SIGINT held back until a block ends (:func:`interrupt_deferred`), or remembered
so a loop stops at its next check (:func:`interrupts_remembered`). A core module: meta-training loops of any layer
(``jmeta.train``, ``jmeta.rl``) use it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


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
def interrupts_remembered() -> Iterator[list[int]]:
    """Ctrl-C raises KeyboardInterrupt as usual and is also remembered in the yielded list, so that a loop can
    stop at its next check even when the exception was raised where Python drops it (e.g. inside a garbage
    collection callback, which prints "Exception ignored in" and goes on)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def remember(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, remember)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)
