"""Few-shot data from a folder of images: one sub-folder per class, or two levels (group/class, like
Omniglot's alphabet/character).

::

    my_data/                      my_data/
      cats/001.png                  Latin/character01/a.png
      cats/002.jpg                  Latin/character02/b.png
      dogs/001.png                  Greek/character01/c.png

Every image is decoded once, converted to ``channels`` (1 grey, 3 RGB; transparent pixels over white),
resized to ``image_size`` and cached (:mod:`jmeta.data.cache`), so a second load reads one file. Hidden
and non-image files (``.DS_Store``, ``._x.png``, ``Thumbs.db``, ``notes.txt``) are skipped by the rule of
:mod:`jmeta.data.files` and counted in the summary, and so are class folders that hold no image. Classes
are split into train/val/test by seeded ``fractions``, by a ``split_file`` (:mod:`jmeta.data.splits`) or
by a ``split`` registered for ``"folder"`` (:func:`jmeta.data.register_split`). Class names are the class
folders' paths below the root (``cats``, ``Latin/character01``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from jmeta.data import files, imaging, registry, splits
from jmeta.data.cache import cached_arrays
from jmeta.data.dataset import FewShotData
from jmeta.data.tfds_sets import split_by_class
from jmeta.validation import one_of

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def from_folder(
    path: str | Path | None,
    *,
    image_size: int | Sequence[int] = 28,
    channels: int = 1,
    resample: str = "lanczos",
    fractions: Sequence[float] | None = None,
    split_file: str | Path | None = None,
    split: str | None = None,
    seed: int = 0,
) -> FewShotData:
    """Loads an image folder (see the module docstring) as few-shot data.

    Images come out uint8 ``(N, H, W, channels)``, values 0..255 (the episode sampler scales them to
    [0, 1]); ``image_size`` is one int (square) or ``(height, width)``; ``resample`` is ``"lanczos"`` or
    ``"box"``. Classes go to train/val/test by one of: ``fractions=(train, val, test)`` of the classes
    drawn with ``seed`` (the default, ``(0.7, 0.15, 0.15)``; val may be 0), a ``split_file``, or a
    registered ``split``. Registered as the data set ``"folder"``, so ``jmeta.data.load("folder", PATH,
    ...)`` and ``task=folder`` in a config call it. Raises FileNotFoundError for a missing folder and
    ValueError for a folder without class folders of images, mixed depths, or an undecodable image
    (naming the file).

    Example::

        >>> import pathlib, tempfile, numpy as np
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for c in range(4):
        ...     (root / f"class{c}").mkdir()
        ...     for i in range(3):
        ...         Image.new("RGB", (40, 30), (60 * c, 0, 0)).save(root / f"class{c}" / f"{i}.png")
        >>> _ = (root / ".DS_Store").write_bytes(b"junk")
        >>> data = from_folder(root, image_size=16, fractions=(0.5, 0.25, 0.25))  # doctest: +SKIP
        >>> data["train"].num_classes, data["train"].input_shape  # doctest: +SKIP
        (2, (16, 16, 1))
    """
    if path is None:
        raise ValueError("the folder data set needs data_dir=PATH, a folder of one sub-folder of images per class.")
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise FileNotFoundError(
            f"image folder {str(root)!r} ({root.resolve()}) {what}; pass the folder holding one sub-folder of "
            "images per class (or group/class sub-folders)."
        )
    size = imaging.image_shape(image_size)
    channels = one_of("channels", channels, tuple(imaging.CHANNELS))
    resample = one_of("resample", resample, tuple(imaging.RESAMPLE))
    chosen = [name for name, value in (("fractions", fractions), ("split_file", split_file), ("split", split)) if value]
    if len(chosen) > 1:
        raise ValueError(f"give one of fractions, split_file and split; got {', '.join(chosen)}.")
    found, folders = _walk(root)
    images, skipped = files.partition(found)
    depth = _class_depth(root, images, folders)
    names = sorted({"/".join(Path(p).parts[:depth]) for p in images})

    def build() -> dict[str, np.ndarray]:
        number = {name: i for i, name in enumerate(names)}
        labels = np.array([number["/".join(Path(p).parts[:depth])] for p in images], dtype=np.int64)
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            decoded = list(pool.map(lambda p: imaging.prepare(root / p, size, channels, resample), images))
        return {"images": np.stack(decoded), "labels": labels, "names": np.array(names)}

    options = {"image_size": list(size), "channels": channels, "resample": resample, "depth": depth}
    arrays = cached_arrays("folder", options, [root], build)
    if split:
        assignment, how = registry.assign_split("folder", split, names), f"registered split {split!r}"
    elif split_file:
        assignment, how = splits.read_split_file(split_file, names), f"split file {split_file}"
    else:
        fractions = tuple(fractions or DEFAULT_FRACTIONS)
        assignment = splits.fraction_split(len(names), fractions, seed)
        how = f"fractions {'/'.join(map(str, fractions))} of the classes at random (seed {seed})"
    parts = split_by_class(arrays["images"], arrays["labels"], names, assignment)
    layout = "one folder per class" if depth == 1 else "group/class folders (two levels)"
    metadata: dict[str, Any] = {
        "layout": layout,
        "split": f"{splits.describe_assignment(assignment, len(names))}, by {how}",
        "skipped files": files.describe_skipped([p for p, _ in skipped], [r for _, r in skipped]),
        "skipped folders": files.describe_empty_folders(_empty_folders(folders, images, depth)),
        "pixels": f"{size[0]}x{size[1]}x{channels} uint8 ({resample} resize)",
        "source": str(root),
    }
    return FewShotData("folder", parts, metadata)


def preprocess(
    images: Any, *, image_size: int | Sequence[int] = 28, channels: int = 1, resample: str = "lanczos"
) -> np.ndarray:
    """Prepares outside images exactly as :func:`from_folder` prepares a folder's: uint8 ``(N, H, W, C)``.

    ``images`` is a sequence of image sources (paths, bytes, PIL images, uint8 arrays), a uint8 array
    ``(N, H, W)`` or ``(N, H, W, C)``, or one path; boolean arrays (``numpy.asarray`` of a 1-bit PNG) are
    read as 0/255. Pass the options the data was loaded with. Divide by 255 for the model's float32 input,
    as the episode sampler does.

    Example::

        >>> import numpy as np
        >>> preprocess(np.full((2, 50, 40, 3), 255, np.uint8), image_size=(20, 16)).shape
        (2, 20, 16, 1)
    """
    size = imaging.image_shape(image_size)
    return np.stack([imaging.prepare(image, size, channels, resample) for image in imaging.as_batch(images)])


def _walk(root: Path) -> tuple[list[str], list[str]]:
    """The files and the folders below ``root``, as sorted ``/``-separated paths relative to it."""
    found, folders = [], []
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        relative = Path(folder).relative_to(root)
        folders.extend((relative / name).as_posix() for name in subfolders)
        found.extend((relative / name).as_posix() for name in sorted(names))
    return found, sorted(folders)


def _empty_folders(folders: list[str], images: list[str], depth: int) -> list[str]:
    """The folders at most ``depth`` levels down that would be read but hold no image: class folders
    without images (and, with group/class folders, groups without any), the topmost of each empty tree."""
    holding = {"/".join(Path(p).parts[:level]) for p in images for level in range(1, depth + 1)}
    empty = [
        f
        for f in folders
        if len(Path(f).parts) <= depth and f not in holding and files.folder_skip_reason(f) is None
    ]
    tops = set(empty)
    return [f for f in empty if "/".join(Path(f).parts[:-1]) not in tops]


def _class_depth(root: Path, images: list[str], folders: list[str]) -> int:
    depths = {len(Path(p).parts) - 1 for p in images}
    if not images or 0 in depths:
        loose = [p for p in images if len(Path(p).parts) == 1][:3]
        empty = [f for f in folders if len(Path(f).parts) == 1 and files.folder_skip_reason(f) is None]
        detail = (
            f"images lie directly in it ({loose})"
            if loose
            else f"it holds no image files ({files.describe_empty_folders(empty)})"
        )
        raise ValueError(
            f"image folder {root}: {detail}; put each class's images in a sub-folder of its own "
            "(root/class/image.png, or root/group/class/image.png)."
        )
    if len(depths) > 1 or not depths <= {1, 2}:
        examples = {depth: next(p for p in images if len(Path(p).parts) - 1 == depth) for depth in sorted(depths)}
        raise ValueError(
            f"image folder {root}: images must all lie one level (class/image) or all two levels "
            f"(group/class/image) deep; found depths {sorted(depths)}, e.g. {list(examples.values())}."
        )
    return depths.pop()
