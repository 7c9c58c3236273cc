"""An on-disk cache of prepared arrays, so that decoding a data set's files happens once.

Entries are uncompressed ``.npz`` files in :func:`cache_dir` (``$JMETA_CACHE``, else ``~/.cache/jmeta``),
named by the data set and a hash of the preparation options and of the source files' paths, sizes and
modification times: changing an option or replacing a source file prepares the arrays afresh. Entries are
written to a temporary file and moved into place with ``os.replace``, so a reader never sees a partial
file, and concurrent writers of one entry leave a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Bump when the layout of cached arrays changes, so that old entries are not read.
_FORMAT = 2


def cache_dir() -> Path:
    """The cache folder: ``$JMETA_CACHE`` if set, else ``~/.cache/jmeta``.

    Example::

        >>> cache_dir()  # doctest: +SKIP
        PosixPath('/home/me/.cache/jmeta')
    """
    return Path(os.environ.get("JMETA_CACHE") or Path.home() / ".cache" / "jmeta").expanduser()


def fingerprint(sources: Iterable[Path]) -> list[tuple[str, int, int]]:
    """The resolved path, size and modification time (ns) of each file under ``sources``, sorted.

    Folders are walked recursively. A missing source raises FileNotFoundError naming it.

    Example::

        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = path.write_text("hi")
        >>> fingerprint([path])[0][1]
        2
    """
    entries = []
    for source in sources:
        source = Path(source).resolve()
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for file in files:
            stat = file.stat()
            entries.append((str(file), stat.st_size, stat.st_mtime_ns))
    return sorted(entries)


def cache_path(name: str, options: Mapping[str, Any], sources: Iterable[Path]) -> Path:
    """Where the entry for ``name`` prepared with ``options`` from ``sources`` lives.

    Example::

        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = path.write_text("hi")
        >>> cache_path("toy", {"size": 28}, [path]).name.startswith("toy-")
        True
    """
    key = json.dumps(
        {"format": _FORMAT, "options": dict(options), "sources": fingerprint(sources)}, sort_keys=True
    )
    return cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"


def cached_arrays(
    name: str,
    options: Mapping[str, Any],
    sources: Iterable[Path],
    build: Callable[[], Mapping[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Returns the arrays cached for (``name``, ``options``, ``sources``), calling ``build`` on a miss.

    ``options`` must be JSON-serialisable; arrays must not hold Python objects (strings are fine). An
    unreadable entry is rebuilt; a cache folder that cannot be written is reported with a warning and
    the built arrays are returned uncached.

    Example::

        >>> import pathlib, tempfile, numpy as np
        >>> src = pathlib.Path(tempfile.mkdtemp()) / "src.txt"
        >>> _ = src.write_text("data")
        >>> cached_arrays("toy", {}, [src], lambda: {"x": np.arange(3)})["x"].tolist()  # doctest: +SKIP
        [0, 1, 2]
    """
    sources = list(sources)
    path = cache_path(name, options, sources)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {key: stored[key] for key in stored.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            pass  # an unreadable entry (e.g. a disk that filled up) is prepared again and replaced
    arrays = {key: np.asarray(value) for key, value in build().items()}
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}-", delete=False) as file:
            temporary = Path(file.name)
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except OSError as error:
        warnings.warn(
            f"could not write the jmeta cache entry {path} ({error}); the data will be prepared again next "
            "time. Set JMETA_CACHE to a writable folder to cache it.",
            stacklevel=2,
        )
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)  # already moved into place unless writing failed
    return arrays
