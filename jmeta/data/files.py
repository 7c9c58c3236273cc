"""Where data sets live by default, which files of a data folder or zip are images, and what was
skipped: one rule for every reader.

Data sets that are files you download (Omniglot's zips, mini-ImageNet, your own folders) are looked for
in :func:`default_data_dir` by the configs in ``experiments/``: ``$JMETA_DATA_DIR/<name>`` when the
environment variable ``JMETA_DATA_DIR`` is set, else ``~/jmeta_data/<name>``.

A file is read as an image when no part of its path is hidden (starts with ``.``, such as macOS's
AppleDouble companions ``._0709_01.png`` and ``.DS_Store``) or is macOS's ``__MACOSX`` folder, it is not
one of the system files ``Thumbs.db`` and ``desktop.ini``, and its suffix is an image format that Pillow
reads (:data:`IMAGE_SUFFIXES`, any case). Everything else is skipped and counted, so that a data summary
can say how many files were left out and why.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SYSTEM_FILES = ("thumbs.db", "desktop.ini", "__macosx")
HIDDEN, SYSTEM, NOT_IMAGE = "hidden", "system file", "not an image"


def default_data_dir(name: str) -> Path:
    """The folder where data set ``name`` is looked for by default: ``$JMETA_DATA_DIR/<name>``, else
    ``~/jmeta_data/<name>`` (expanded; it need not exist).

    Example::

        >>> default_data_dir("omniglot").name
        'omniglot'
    """
    return Path(os.environ.get("JMETA_DATA_DIR") or Path.home() / "jmeta_data").expanduser() / name


def skip_reason(path: str | Sequence[str]) -> str | None:
    """Why the file at ``path`` (relative, ``/``-separated, or its parts) is not read; ``None`` for an image.

    Example::

        >>> skip_reason("images_background/Alpha/character01/._0709_01.png")
        'hidden'
        >>> skip_reason("Alpha/character01/0709_01.png") is None, skip_reason("notes.txt")
        (True, 'not an image')
    """
    parts = [part for part in (path.split("/") if isinstance(path, str) else path) if part]
    reason = folder_skip_reason(parts)
    if reason is None and (not parts or not parts[-1].lower().endswith(IMAGE_SUFFIXES)):
        return NOT_IMAGE
    return reason


def folder_skip_reason(path: str | Sequence[str]) -> str | None:
    """Why the folder at ``path`` (relative, ``/``-separated, or its parts) is not read (``"hidden"``,
    ``"system file"``), by the rule of :func:`skip_reason`; ``None`` for a folder that is read.

    Example::

        >>> folder_skip_reason("__MACOSX/Alpha"), folder_skip_reason("Alpha/character01") is None
        ('system file', True)
    """
    parts = [part for part in (path.split("/") if isinstance(path, str) else path) if part]
    if any(part.startswith(".") for part in parts):
        return HIDDEN
    if any(part.lower() in SYSTEM_FILES for part in parts):
        return SYSTEM
    return None


def describe_skipped(paths: Sequence[str], reasons: Sequence[str]) -> str:
    """One line counting skipped files by reason, with an example, for a data summary.

    Example::

        >>> describe_skipped(["a/._x.png", "a/.DS_Store", "a/notes.txt"], ["hidden", "hidden", "not an image"])
        '3 (2 hidden, 1 not an image; e.g. a/._x.png)'
        >>> describe_skipped([], [])
        'none'
    """
    if not len(paths):
        return "none"
    counts = Counter(reasons)
    by_reason = ", ".join(f"{counts[reason]} {reason}" for reason in sorted(counts))
    return f"{len(paths)} ({by_reason}; e.g. {paths[0]})"


def describe_empty_folders(folders: Sequence[str]) -> str:
    """One line naming the class folders skipped because they hold no image, for a data summary.

    Example::

        >>> describe_empty_folders(["dogs"]), describe_empty_folders([])
        ('1 empty class folder skipped: dogs', 'none')
    """
    if not folders:
        return "none"
    shown = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
    return f"{len(folders)} empty class folder{'s' if len(folders) > 1 else ''} skipped: {shown}"


def partition(paths: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Splits relative paths into the images to read and the ``(path, reason)`` pairs skipped.

    Example::

        >>> partition(["a/1.png", "a/Thumbs.db"])
        (['a/1.png'], [('a/Thumbs.db', 'system file')])
    """
    images, skipped = [], []
    for path in paths:
        reason = skip_reason(path)
        if reason is None:
            images.append(path)
        else:
            skipped.append((path, reason))
    return images, skipped
