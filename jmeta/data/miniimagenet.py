"""mini-ImageNet (Vinyals et al., 2016; split of Ravi & Larochelle, 2017): 100 ImageNet classes split
64/16/20, 600 colour images each, 84x84x3 uint8.

Two layouts of ``data_dir`` are read:

* the common pickles ``mini-imagenet-cache-{train,val,test}.pkl``, each a dict with ``image_data``
  (uint8, ``(N, 84, 84, 3)``) and ``class_dict`` (``{class name: [indices into image_data]}``). Pickles
  can run code when loaded: load only files you trust.
* an image folder ``images/*.jpg`` with Ravi & Larochelle's split files ``train.csv``, ``val.csv`` and
  ``test.csv`` (columns ``filename,label``). Images are resized to 84x84 (Lanczos), decoded on a thread
  pool, and cached (:mod:`jmeta.data.cache`).

Classes are ordered by name; examples within a class keep their order in the source.
"""

from __future__ import annotations

import csv
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from jmeta.data.cache import cached_arrays
from jmeta.data.dataset import ClassDataset, FewShotData
from jmeta.data.imaging import as_batch, prepare

SPLITS = ("train", "val", "test")
IMAGE_SIZE = 84


def load_mini_imagenet(data_dir: str | Path | None) -> FewShotData:
    """Loads mini-ImageNet from ``data_dir`` holding the pickles or ``images/`` with the CSV split files.

    Example::

        >>> data = load_mini_imagenet("data/mini-imagenet")  # doctest: +SKIP
        >>> [data[s].num_classes for s in ("train", "val", "test")]  # doctest: +SKIP
        [64, 16, 20]
    """
    layouts = (
        "pass data_dir=... holding mini-imagenet-cache-train.pkl, mini-imagenet-cache-val.pkl and "
        "mini-imagenet-cache-test.pkl, or an images/ folder of .jpg files with train.csv, val.csv and "
        "test.csv (columns filename,label)"
    )
    if data_dir is None:
        raise ValueError(f"mini-ImageNet has no download here; {layouts}.")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"mini-ImageNet was looked for in {root} ({root.resolve()}), which is not a folder; {layouts}."
        )
    pickles = {split: root / f"mini-imagenet-cache-{split}.pkl" for split in SPLITS}
    tables = {split: root / f"{split}.csv" for split in SPLITS}
    if any(path.is_file() for path in pickles.values()):
        missing = [path.name for path in pickles.values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"mini-ImageNet in {root} lacks {', '.join(missing)}; {layouts}.")
        splits = {split: _from_pickle(path) for split, path in pickles.items()}
        source = f"{root} (pickles)"
    else:
        missing = [path.name for path in tables.values() if not path.is_file()]
        if not (root / "images").is_dir():
            missing.append("images/")
        if missing:
            raise FileNotFoundError(
                f"mini-ImageNet was looked for in {root}, which lacks the pickles and {', '.join(missing)}; "
                f"{layouts}."
            )
        splits = _from_folder(root, tables)
        source = f"{root} (images/ and CSV split files)"
    return FewShotData("mini-imagenet", splits, {"source": source})


def _from_pickle(path: Path) -> ClassDataset:
    with path.open("rb") as file:
        try:
            content = pickle.load(file)
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"{path} is not a readable pickle ({error}); use a fresh copy.") from error
    if not isinstance(content, dict) or not {"image_data", "class_dict"} <= set(content):
        raise ValueError(
            f"{path} must hold a dict with keys 'image_data' and 'class_dict'; got "
            f"{sorted(content) if isinstance(content, dict) else type(content).__name__}."
        )
    images = np.asarray(content["image_data"])
    expected = (IMAGE_SIZE, IMAGE_SIZE, 3)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(
            f"{path}: image_data must be uint8 of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3); got "
            f"{images.dtype} of shape {images.shape}. Use the mini-ImageNet pickles of 84x84 colour images."
        )
    names = sorted(content["class_dict"])
    rows = [np.asarray(content["class_dict"][name], dtype=np.int64) for name in names]
    order = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    if order.size and (order.min() < 0 or order.max() >= len(images)):
        raise ValueError(
            f"{path}: class_dict indices must lie in 0..{len(images) - 1} (rows of image_data); got values "
            f"from {order.min()} to {order.max()}."
        )
    labels = np.repeat(np.arange(len(names)), [len(row) for row in rows])
    return ClassDataset(images[order], labels, tuple(names))


def _read_table(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{path} must start with the header 'filename,label'; got {rows[:1]}.")
    if len(rows) == 1:
        raise ValueError(f"{path} lists no images; it needs one 'filename,label' row per image.")
    bad = [number for number, row in enumerate(rows[1:], start=2) if len(row) != 2]
    if bad:
        raise ValueError(f"{path}: every row must be 'filename,label'; lines {bad[:5]} are not.")
    return [(filename.strip(), label.strip()) for filename, label in rows[1:]]


def preprocess(images: Any) -> np.ndarray:
    """Prepares outside images exactly as the ``images/`` layout's JPEGs are prepared: RGB, resized to
    84x84 (Lanczos; JPEGs decoded at a reduced scale no smaller than 84 first); uint8 ``(N, 84, 84, 3)``.

    ``images`` is a sequence of image sources (paths, bytes, PIL images, uint8 arrays), a uint8 array
    ``(N, H, W)`` or ``(N, H, W, C)``, or one path; boolean arrays (``numpy.asarray`` of a 1-bit PNG) are
    read as 0/255. Divide by 255 for the model's float32 input.

    Example::

        >>> import numpy as np
        >>> preprocess(np.zeros((2, 100, 120, 3), np.uint8)).shape
        (2, 84, 84, 3)
    """
    return np.stack([_decode(image) for image in as_batch(images)])


def _decode(source: Any) -> np.ndarray:
    return prepare(source, (IMAGE_SIZE, IMAGE_SIZE), 3, "lanczos", draft=True)


def _from_folder(root: Path, tables: dict[str, Path]) -> dict[str, ClassDataset]:
    entries = {split: _read_table(path) for split, path in tables.items()}
    files = {split: [root / "images" / filename for filename, _ in rows] for split, rows in entries.items()}
    absent = [str(path) for paths in files.values() for path in paths if not path.is_file()]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} images listed in the CSV split files of {root} are missing, e.g. {absent[:3]}; "
            "put every listed file in images/."
        )

    def build() -> dict[str, np.ndarray]:
        arrays = {}
        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            for split, rows in entries.items():
                names = sorted({label for _, label in rows})
                number = {name: i for i, name in enumerate(names)}
                labels = np.array([number[label] for _, label in rows])
                order = np.argsort(labels, kind="stable")
                try:
                    images = list(pool.map(_decode, [files[split][i] for i in order]))
                except (OSError, ValueError) as error:
                    raise ValueError(f"could not decode an image in {root / 'images'}: {error}") from error
                arrays[f"{split}_images"] = np.stack(images)
                arrays[f"{split}_labels"] = labels[order]
                arrays[f"{split}_names"] = np.array(names)
        return arrays

    sources = [*tables.values(), *(path for paths in files.values() for path in paths)]
    arrays = cached_arrays("mini-imagenet", {"image_size": IMAGE_SIZE}, sources, build)
    splits = {}
    for split in SPLITS:
        images, labels, names = (arrays[f"{split}_{part}"] for part in ("images", "labels", "names"))
        splits[split] = ClassDataset(images, labels, names.tolist())
    return splits
