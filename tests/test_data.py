"""Data loading: containers, cache, Omniglot (tiny zips and the real data), mini-ImageNet, TFDS and
scikit-learn sets, the registry, and the errors for bad inputs."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image, ImageDraw

import jmeta.data
import jmeta.data.miniimagenet as miniimagenet
import jmeta.data.omniglot as omniglot
import jmeta.data.tfds_sets as tfds_sets
from jmeta.data import ClassDataset, FewShotData, load, summary
from jmeta.data.cache import cache_path, cached_arrays
from jmeta.data.tfds_sets import (
    CIFAR100_CLASSES,
    CIFAR100_SUPERCLASSES,
    CIFAR_FS_CLASSES,
    FC100_SUPERCLASSES,
    tfds_builder,
)
from jmeta.tasks.episodes import make_episode_sampler

REAL_OMNIGLOT = Path(__file__).parents[1] / ".." / "shared" / "data" / "omniglot"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test but the real-Omniglot ones caches into its own folder."""
    monkeypatch.setenv("JMETA_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------------------
# ClassDataset and FewShotData


def test_class_dataset_derives_offsets_and_counts_for_unequal_classes():
    ds = ClassDataset(np.zeros((6, 2, 2, 1), np.uint8), np.array([0, 1, 1, 1, 2, 2]), ("a", "b", "c"))
    assert ds.counts.tolist() == [1, 3, 2] and ds.offsets.tolist() == [0, 1, 4]
    assert ds.num_classes == 3 and ds.input_shape == (2, 2, 1) and ds.labels.dtype == np.int32
    assert ds.summary() == "3 classes x 1 to 3 examples = 6 examples of 2x2x1 uint8"
    assert ds.device_arrays().index.tolist() == [[0, -1, -1], [1, 2, 3], [4, 5, -1]]


def test_class_dataset_is_immutable():
    ds = ClassDataset(np.zeros((2, 1), np.float32), np.array([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="read-only"):
        ds.images[0] = 1.0
    with pytest.raises(AttributeError):
        ds.class_names = ("x", "y")


def test_class_dataset_from_unsorted_sorts_stably():
    ds = ClassDataset.from_unsorted(np.arange(4, dtype=np.float32)[:, None], [1, 0, 1, 0], ("a", "b"))
    assert ds.images[:, 0].tolist() == [1.0, 3.0, 0.0, 2.0] and ds.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("images", "labels", "names", "message"),
    [
        (np.zeros((2, 28, 28), np.uint8), [0, 1], "ab", r"\(N, H, W, C\); got shape \(2, 28, 28\).*None\]"),
        (np.zeros(2, np.float32), [0, 1], "ab", r"float32 must have shape \(N, \*feature_shape\)"),
        (np.zeros((2, 1), np.float64), [0, 1], "ab", "got dtype float64"),
        (np.zeros((2, 1), np.float32), [0], "ab", r"labels must be integers of shape \(2,\)"),
        (np.zeros((2, 1), np.float32), [1, 0], "ab", "labels must be sorted"),
        (np.zeros((2, 1), np.float32), [0, 2], "ab", r"labels must lie in 0\.\.1"),
        (np.zeros((2, 1), np.float32), [0, 0], "ab", r"without examples: \['b'\]"),
        (np.zeros((2, 1), np.float32), [0, 1], ("a", "a"), "class_names must be distinct"),
    ],
)
def test_class_dataset_rejects_bad_inputs(images, labels, names, message):
    with pytest.raises(ValueError, match=message):
        ClassDataset(images, np.asarray(labels), names)


def test_few_shot_data_names_its_splits_on_a_missing_one():
    ds = ClassDataset(np.zeros((2, 1), np.float32), np.array([0, 1]), ("a", "b"))
    data = FewShotData("toy", {"train": ds}, {"note": "x"})
    with pytest.raises(KeyError, match="toy has no split 'val'; its splits are 'train'"):
        data["val"]
    assert summary(data) == "toy\n  train: 2 classes x 1 examples = 2 examples of 1 float32\n  note: x"
    with pytest.raises(TypeError, match=r"splits\['train'\] must be a ClassDataset; got str"):
        FewShotData("toy", {"train": "not a dataset"})


# ---------------------------------------------------------------------------------------------------------
# Cache


def test_cache_builds_once_and_rebuilds_when_the_source_changes(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"abc")
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(3), "names": np.array(["a", "b", "c"])}

    first = cached_arrays("toy", {"size": 1}, [source], build)
    second = cached_arrays("toy", {"size": 1}, [source], build)
    assert len(calls) == 1 and second["names"].tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(first["x"], second["x"])
    assert cache_path("toy", {"size": 1}, [source]).parent == tmp_path / "cache"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache_path("toy", {"size": 1}, [source]).name]
    cached_arrays("toy", {"size": 2}, [source], build)  # another option
    os.utime(source, ns=(1, 1))  # another modification time
    cached_arrays("toy", {"size": 1}, [source], build)
    assert len(calls) == 3


def test_cache_replaces_an_unreadable_entry(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"abc")
    path = cache_path("toy", {}, [source])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert cached_arrays("toy", {}, [source], lambda: {"x": np.ones(2)})["x"].tolist() == [1.0, 1.0]
    assert np.load(path)["x"].tolist() == [1.0, 1.0]


# ---------------------------------------------------------------------------------------------------------
# Omniglot from tiny zips in the official layout

# (set, alphabet, character) -> number of drawings; unequal on purpose.
TINY = {
    ("background", "Alpha", "character01"): 3,
    ("background", "Alpha", "character02"): 3,
    ("background", "Beta", "character01"): 3,
    ("evaluation", "Gamma", "character01"): 3,
    ("evaluation", "Gamma", "character02"): 2,
}


def _drawing(seed: int) -> bytes:
    """A 105x105 1-bit PNG: black ink (a bar in the upper left) on white, like Omniglot's."""
    image = Image.new("1", (105, 105), 1)
    ImageDraw.Draw(image).rectangle([10, 10 + seed, 50, 25 + seed], fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_tiny_omniglot(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in omniglot.SETS:
        with zipfile.ZipFile(root / f"images_{name}.zip", "w") as archive:
            for (set_name, alphabet, character), drawings in TINY.items():
                for d in range(drawings) if set_name == name else ():
                    member = f"images_{name}/{alphabet}/{character}/0001_{d + 1:02d}.png"
                    archive.writestr(member, _drawing(d))
    return root


@pytest.fixture
def tiny_omniglot(tmp_path) -> Path:
    return _write_tiny_omniglot(tmp_path / "omniglot")


def test_tiny_omniglot_background_split_with_rotations(tiny_omniglot):
    data = load("omniglot", tiny_omniglot, split="background")
    train, test = data["train"], data["test"]
    assert tuple(data.splits) == ("train", "test")
    assert train.num_classes == 3 * 4 and test.num_classes == 2
    assert train.class_names[:2] == ("Alpha/character01/rot000", "Alpha/character01/rot090")
    assert test.class_names == ("Gamma/character01", "Gamma/character02")
    assert test.counts.tolist() == [3, 2] and train.counts.tolist() == [3] * 12
    assert train.images.shape == (36, 28, 28, 1) and train.images.dtype == np.uint8
    # Ink is bright: the bar (upper left) is near 255, the far corner is background 0.
    upright = train.images[train.offsets[0]]
    assert upright[5, 5, 0] > 200 and upright[25, 25, 0] == 0
    quarter = train.images[train.offsets[1]]
    np.testing.assert_array_equal(quarter, np.rot90(upright))
    assert data.metadata["alphabets"] == {"train": ("Alpha", "Beta"), "test": ("Gamma",)}
    assert data.metadata["characters"] == {"train": 3, "test": 2}
    assert data.metadata["drawings per character"] == {"train": "3", "test": "2 to 3"}
    text = summary(data)
    assert "alphabets: Alpha, Beta" in text and "drawings per character: 2 to 3" in text


def test_tiny_omniglot_options(tiny_omniglot):
    data = load("omniglot", tiny_omniglot, split="background", rotate=("train", "test"), image_size=14)
    assert data["test"].num_classes == 8 and data["test"].input_shape == (14, 14, 1)
    plain = load("omniglot", tiny_omniglot, split="background", rotate=(), resample="box")
    assert plain["train"].num_classes == 3 and plain.metadata["rotations"]["train"] == "none"


def test_tiny_omniglot_extracted_folders_match_the_zips(tiny_omniglot, tmp_path):
    extracted = tmp_path / "extracted"
    for name in omniglot.SETS:
        with zipfile.ZipFile(tiny_omniglot / f"images_{name}.zip") as archive:
            archive.extractall(extracted)
    from_zips = load("omniglot", tiny_omniglot, split="background")
    from_folders = load("omniglot", extracted, split="background")
    for split in ("train", "test"):
        np.testing.assert_array_equal(from_zips[split].images, from_folders[split].images)
        assert from_zips[split].class_names == from_folders[split].class_names


def test_tiny_omniglot_is_decoded_once_then_read_from_the_cache(tiny_omniglot, tmp_path, monkeypatch):
    first = load("omniglot", tiny_omniglot, split="background")
    assert len(list((tmp_path / "cache").glob("omniglot-*.npz"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(omniglot, "_decode", no_decoding)
    again = load("omniglot", tiny_omniglot, split="background")
    np.testing.assert_array_equal(first["train"].images, again["train"].images)
    os.utime(tiny_omniglot / "images_background.zip", ns=(1, 1))  # a replaced source is decoded afresh
    with pytest.raises(AssertionError, match="decoded again"):
        load("omniglot", tiny_omniglot, split="background")


def test_tiny_omniglot_rejects_splits_that_need_all_1623_characters(tiny_omniglot):
    for split in ("vinyals", "maml"):
        with pytest.raises(ValueError, match=rf"split='{split}' divides Omniglot's 1623 characters.*holds 5"):
            load("omniglot", tiny_omniglot, split=split)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"split": "official"}, "split must be one of 'vinyals', 'maml', 'background'; got 'official'"),
        ({"split": "background", "rotate": "train"}, "rotate must be a sequence of split names"),
        ({"split": "background", "rotate": ("val",)}, r"rotate names splits .* \['val'\]; its splits are"),
        ({"image_size": 0}, "image_size must be a positive integer"),
        ({"resample": "nearest"}, "resample must be one of 'lanczos', 'box'"),
    ],
)
def test_omniglot_rejects_bad_options(tiny_omniglot, options, message):
    with pytest.raises(ValueError, match=message):
        load("omniglot", tiny_omniglot, **options)


def test_omniglot_missing_directory_says_where_it_looked_and_how_to_provide_it(tmp_path):
    missing = tmp_path / "nowhere"
    expected = r"looked for in .*nowhere.*does not exist.*images_background\.zip"
    with pytest.raises(FileNotFoundError, match=expected):
        load("omniglot", missing)


def test_omniglot_missing_zip_is_named(tiny_omniglot):
    (tiny_omniglot / "images_evaluation.zip").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"missing images_evaluation\.zip.*from github\.com/brendenlake/omniglot.*data_dir=\.\.\.",
    ):
        load("omniglot", tiny_omniglot, split="background")


def test_omniglot_corrupt_zip_is_reported_with_the_fix(tiny_omniglot):
    (tiny_omniglot / "images_background.zip").write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match=r"images_background\.zip \(BadZipFile.*fresh copy"):
        load("omniglot", tiny_omniglot, split="background")


def test_omniglot_corrupt_png_is_named(tiny_omniglot):
    with zipfile.ZipFile(tiny_omniglot / "images_evaluation.zip", "a") as archive:
        archive.writestr("images_evaluation/Gamma/character02/0002_09.png", b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"Gamma/character02/0002_09\.png"):
        load("omniglot", tiny_omniglot, split="background")


def test_omniglot_zip_without_drawings_is_reported(tiny_omniglot):
    with zipfile.ZipFile(tiny_omniglot / "images_evaluation.zip", "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(ValueError, match=r"found no drawings in .*images_evaluation\.zip"):
        load("omniglot", tiny_omniglot, split="background")


def _add_stray_files(write) -> None:
    """Adds what a Mac, Windows or a person leaves in a data folder: AppleDouble companions (4 bytes),
    .DS_Store, Thumbs.db, a text file; ``write(path, bytes)`` puts one file below the set's folder."""
    write("Alpha/character01/._0709_01.png", b"\x00\x05\x16\x07")
    write("Alpha/.DS_Store", b"\x00\x00\x00\x01Bud1")
    write("Beta/character01/Thumbs.db", b"junk")
    write("Alpha/notes.txt", b"drawn by hand")


def test_stray_files_are_skipped_alike_by_the_zip_and_the_folder_reader_and_counted(tiny_omniglot, tmp_path):
    clean = load("omniglot", tiny_omniglot, split="background")
    extracted = tmp_path / "extracted"
    for name in omniglot.SETS:
        with zipfile.ZipFile(tiny_omniglot / f"images_{name}.zip") as archive:
            archive.extractall(extracted)

    def write_file(path, content):
        (extracted / "images_background" / path).write_bytes(content)

    _add_stray_files(write_file)
    with zipfile.ZipFile(tiny_omniglot / "images_background.zip", "a") as archive:
        _add_stray_files(lambda path, content: archive.writestr(f"images_background/{path}", content))
        archive.writestr("__MACOSX/images_background/Alpha/character01/._0001_01.png", b"\x00\x05\x16\x07")
    from_folder_data = load("omniglot", extracted, split="background")
    from_zip = load("omniglot", tiny_omniglot, split="background")
    for data in (from_folder_data, from_zip):
        for split in ("train", "test"):
            np.testing.assert_array_equal(data[split].images, clean[split].images)
            assert data[split].class_names == clean[split].class_names
    assert clean.metadata["skipped files"] == "none"
    assert from_folder_data.metadata["skipped files"].startswith("4 (2 hidden, 1 not an image, 1 system file; e.g. ")
    assert from_zip.metadata["skipped files"].startswith("5 (3 hidden, 1 not an image, 1 system file; e.g. ")
    assert "skipped files: 4 (2 hidden" in summary(from_folder_data)


@pytest.fixture
def three_way_split():
    """An Omniglot split registered by name, as a user would: by alphabet."""

    def by_alphabet(names):
        return {
            "train": [n for n in names if n.startswith("Alpha/")],
            "val": [n for n in names if n.startswith("Beta/")],
            "test": [n for n in names if n.startswith("Gamma/")],
        }

    jmeta.data.register_split("omniglot", "three-way", by_alphabet, replace=True)


def test_omniglot_split_registered_by_name(tiny_omniglot, three_way_split):
    data = load("omniglot", tiny_omniglot, split="three-way")
    assert data["train"].class_names[::4] == ("Alpha/character01/rot000", "Alpha/character02/rot000")
    assert data["val"].class_names == ("Beta/character01",) and data["test"].num_classes == 2
    assert data.metadata["alphabets"] == {"train": ("Alpha",), "val": ("Beta",), "test": ("Gamma",)}
    with pytest.raises(ValueError, match="split must be one of 'vinyals', 'maml', 'background', .*'three-way'"):
        load("omniglot", tiny_omniglot, split="three way")
    jmeta.data.register_split("omniglot", "bad", lambda names: {"train": ["Alpha/character09"]}, replace=True)
    with pytest.raises(ValueError, match=r"split 'bad' of omniglot: its 'train' list names unknown classes"):
        load("omniglot", tiny_omniglot, split="bad")
    with pytest.raises(ValueError, match="a split of omniglot named 'three-way' is already registered"):
        jmeta.data.register_split("omniglot", "three-way", lambda names: {})


def test_omniglot_background_split_with_validation_carved_from_background_characters(tiny_omniglot, three_way_split):
    data = load("omniglot", tiny_omniglot, split="background", val_fraction=0.34, seed=0)
    assert tuple(data.splits) == ("train", "val", "test")
    characters = {s: {"/".join(n.split("/")[:2]) for n in data[s].class_names} for s in data.splits}
    assert len(characters["val"]) == 1 and len(characters["train"]) == 2 and not characters["val"] & characters["train"]
    assert characters["train"] | characters["val"] == {"Alpha/character01", "Alpha/character02", "Beta/character01"}
    assert data["train"].num_classes == 8 and data["val"].num_classes == 1  # train rotated, val not
    assert characters["test"] == {"Gamma/character01", "Gamma/character02"}  # evaluation characters only
    assert data.metadata["split"] == "background, val carved from train (val_fraction=0.34, seed=0)"
    others = [load("omniglot", tiny_omniglot, split="background", val_fraction=0.34, seed=s)["val"] for s in range(6)]
    assert len({ds.class_names for ds in others}) > 1  # the seed draws the validation characters
    with pytest.raises(ValueError, match=r"split='three-way' has 1 val characters"):
        load("omniglot", tiny_omniglot, split="three-way", val_fraction=0.5)
    with pytest.raises(ValueError, match="val_fraction must be a number strictly between 0 and 1; got 1.5"):
        load("omniglot", tiny_omniglot, split="background", val_fraction=1.5)


def test_omniglot_preprocess_of_a_png_from_the_zip_equals_the_loaded_drawing(tiny_omniglot):
    data = load("omniglot", tiny_omniglot, split="background", image_size=20, resample="box")
    with zipfile.ZipFile(tiny_omniglot / "images_evaluation.zip") as archive:
        png = archive.read("images_evaluation/Gamma/character01/0001_02.png")
    test = data["test"]
    loaded = test.images[test.offsets[0] + 1]  # Gamma/character01, the second drawing
    prepared = omniglot.preprocess([png], image_size=20, resample="box")
    assert prepared.shape == (1, 20, 20, 1) and prepared.dtype == np.uint8
    np.testing.assert_array_equal(prepared[0], loaded)
    np.testing.assert_array_equal(jmeta.data.preprocess("omniglot", png, image_size=20, resample="box")[0], loaded)
    # A drawing of one's own in colour with transparency is prepared like Omniglot's black-on-white PNGs.
    drawing = Image.open(io.BytesIO(png)).convert("RGBA")
    np.testing.assert_array_equal(omniglot.preprocess([drawing], image_size=20, resample="box")[0], loaded)


# ---------------------------------------------------------------------------------------------------------
# Image folders of one's own

# class folder -> (PIL mode, size) of each of its images: grey, RGB, RGBA, palette and 1-bit, of different sizes.
FOLDER_IMAGES = (
    ("L", (30, 20)),
    ("RGB", (40, 40)),
    ("RGBA", (25, 35)),
    ("P", (50, 30)),
    ("1", (28, 28)),
    ("RGB", (9, 12)),
)


def _class_image(mode: str, size: tuple[int, int], shade: int) -> Image.Image:
    """A mid-grey ``shade`` everywhere; RGBA images are transparent on their left half (white once laid over
    white); palette images carry the shade as a palette colour."""
    image = Image.new("RGB", size, (shade, shade, shade))
    if mode == "RGBA":
        image = image.convert("RGBA")
        ImageDraw.Draw(image).rectangle([0, 0, size[0] // 2 - 1, size[1]], fill=(0, 0, 0, 0))
        return image
    if mode == "P":
        image = Image.new("P", size, 3)
        image.putpalette([0, 0, 0] * 3 + [shade, shade, shade] + [0, 0, 0] * 252)
        return image
    return image.convert(mode) if mode != "1" else Image.new("1", size, 1)


def _write_image_folder_of_classes(root: Path, classes: int = 8, two_levels: bool = False) -> Path:
    for c in range(classes):
        folder = root / f"group{c % 2}" / f"class{c}" if two_levels else root / f"class{c}"
        folder.mkdir(parents=True)
        for i, (mode, size) in enumerate(FOLDER_IMAGES):
            _class_image(mode, size, 40 + 20 * c).save(folder / f"{i:02d}.png")
        (folder / "._00.png").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble companion
    (root / ".DS_Store").write_bytes(b"junk")
    (root / "README.txt").write_text("my classes")
    return root


def test_folder_converts_modes_resizes_and_skips_stray_files(tmp_path):
    root = _write_image_folder_of_classes(tmp_path / "mine")
    data = jmeta.data.from_folder(root, image_size=(12, 16), channels=3, fractions=(0.5, 0.25, 0.25), seed=1)
    assert [data[s].num_classes for s in ("train", "val", "test")] == [4, 2, 2]
    assert data["train"].input_shape == (12, 16, 3) and data["train"].images.dtype == np.uint8
    assert set(data["train"].counts.tolist()) == {len(FOLDER_IMAGES)}
    names = [n for s in ("train", "val", "test") for n in data[s].class_names]
    assert sorted(names) == [f"class{c}" for c in range(8)]
    train = data["train"]
    c = int(train.class_names[0].removeprefix("class"))
    images = train.images[train.offsets[0] : train.offsets[0] + len(FOLDER_IMAGES)].astype(int)
    shade = 40 + 20 * c
    for i in (0, 1, 3):  # grey, RGB and palette: the class's shade everywhere, in all three channels
        assert np.abs(images[i] - shade).max() <= 1, i
    rgba = images[2]
    assert np.abs(rgba[:, -4:] - shade).max() <= 1 and (rgba[:, :4] == 255).all()  # transparent -> white
    assert (images[4] == 255).all()  # 1-bit white
    assert data.metadata["skipped files"] == "10 (9 hidden, 1 not an image; e.g. .DS_Store)"
    assert data.metadata["layout"] == "one folder per class"
    grey = jmeta.data.from_folder(root, image_size=10, fractions=(0.5, 0.25, 0.25), seed=1)
    assert grey["train"].input_shape == (10, 10, 1) and grey["train"].class_names == train.class_names
    other_seed = jmeta.data.from_folder(root, image_size=10, fractions=(0.5, 0.25, 0.25), seed=2)
    assert other_seed["train"].class_names != train.class_names


def test_folder_of_groups_with_a_split_file_is_cached_and_matches_preprocess(tmp_path, monkeypatch):
    root = _write_image_folder_of_classes(tmp_path / "mine", classes=4, two_levels=True)
    split_file = tmp_path / "split.csv"
    split_file.write_text("class,split\ngroup0/class0,train\ngroup1/class1,train\ngroup0/class2,test\n")
    data = load("folder", root, split_file=split_file, image_size=14)
    assert data["train"].class_names == ("group0/class0", "group1/class1") and tuple(data.splits) == ("train", "test")
    assert data.metadata["layout"] == "group/class folders (two levels)"
    assert "2 train, 1 test of 4 classes, by split file" in summary(data)
    # Outside images are prepared exactly like the folder's own.
    outside = [root / "group1" / "class1" / f"{i:02d}.png" for i in range(len(FOLDER_IMAGES))]
    np.testing.assert_array_equal(jmeta.data.preprocess("folder", outside, image_size=14), data["train"].images[6:12])

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(jmeta.data.imaging, "prepare", no_decoding)
    again = load("folder", root, split_file=split_file, image_size=14)
    np.testing.assert_array_equal(again["train"].images, data["train"].images)


def test_folder_errors_name_the_problem(tmp_path):
    root = _write_image_folder_of_classes(tmp_path / "mine", classes=3)
    with pytest.raises(FileNotFoundError, match=r"image folder '.*absent' .* does not exist"):
        jmeta.data.from_folder(tmp_path / "absent")
    with pytest.raises(ValueError, match="the folder data set needs data_dir=PATH"):
        load("folder")
    (tmp_path / "split.csv").write_text("class,split\nclass0,train\nclass7,test\n")
    with pytest.raises(ValueError, match=r"line 3: class 'class7' is not in the data set"):
        load("folder", root, split_file=tmp_path / "split.csv")
    with pytest.raises(ValueError, match="give one of fractions, split_file and split; got fractions, split_file"):
        load("folder", root, split_file=tmp_path / "split.csv", fractions=(0.5, 0.25, 0.25))
    with pytest.raises(ValueError, match=r"fractions=\(0.9, 0.05, 0.05\) of 3 classes leave the val, test split"):
        load("folder", root, fractions=(0.9, 0.05, 0.05))
    with pytest.raises(ValueError, match=r"fractions must be \(train, val, test\) of the classes.*summing to 1"):
        load("folder", root, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="channels must be one of 1, 3; got 4"):
        load("folder", root, channels=4)
    Image.new("L", (5, 5)).save(root / "loose.png")
    with pytest.raises(ValueError, match=r"images lie directly in it \(\['loose.png'\]\)"):
        load("folder", root)
    (root / "loose.png").unlink()
    (root / "class0" / "deeper").mkdir()
    Image.new("L", (5, 5)).save(root / "class0" / "deeper" / "x.png")
    with pytest.raises(ValueError, match=r"found depths \[1, 2\]"):
        load("folder", root)
    (root / "class0" / "deeper" / "x.png").unlink()
    (root / "class1" / "05.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"could not decode the image .*class1/05\.png"):
        load("folder", root)


def test_a_data_set_registered_by_name_loads_and_trains_as_task_name(tmp_path):
    from jmeta.experiment import build, few_shot_config

    def load_shapes(data_dir=None, *, per_class=6):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (10 * per_class, 8, 8, 1), dtype=np.uint8)
        return FewShotData(
            "shapes",
            {"train": ClassDataset.from_unsorted(images, np.arange(len(images)) % 10, [f"s{i}" for i in range(10)])},
        )

    jmeta.data.register_dataset("shapes", load_shapes, replace=True)
    jmeta.data.register_split(
        "shapes", "halves", lambda names: {"train": names[:6], "val": names[6:8], "test": names[8:]}
    )
    assert "shapes" in jmeta.data.dataset_names()
    data = load("shapes", split="halves", per_class=7)  # no split option of its own: classes pooled, then split
    assert [data[s].num_classes for s in ("train", "val", "test")] == [6, 2, 2] and set(data["test"].counts) == {7}
    assert data["test"].class_names == ("s8", "s9")
    config = few_shot_config("shapes", "protonet", ways=2, shots=1)
    config.split, config.per_class = "halves", 6
    family = build(config).family
    assert family.sample_test(jax.random.key(0), 3).query_x.shape == (3, 2, 8, 8, 1)
    with pytest.raises(ValueError, match="a data set named 'shapes' is already registered .*pass replace=True"):
        jmeta.data.register_dataset("shapes", lambda data_dir: load_shapes(data_dir))  # another loader, same name


# ---------------------------------------------------------------------------------------------------------
# Data in experiment configs


def test_omniglot_background_split_in_a_config_needs_val_fraction_or_no_validation(tiny_omniglot):
    from jmeta.experiment import episodic_family, few_shot_config

    config = few_shot_config("omniglot", "protonet", ways=2, shots=1)
    config.data_dir, config.split, config.eval_ways = str(tiny_omniglot), "background", 2
    with pytest.raises(
        ValueError, match=r"omniglot \(split='background'\) has no validation classes .*val_fraction=0.1.*val_every=0"
    ):
        episodic_family(config)
    config.val_every = 0
    assert episodic_family(config).sample_val is None  # no validation: nothing to sample
    config.val_every, config.val_fraction = 1000, 0.34
    with pytest.raises(
        ValueError, match=r"number of classes in omniglot's val split \(split='background'\) \(1\); got eval_ways=2"
    ):
        episodic_family(config)  # one of the three background characters carved for validation, not rotated
    config.eval_ways = 1
    assert episodic_family(config).sample_val.arrays.index.shape[0] == 1


def test_config_data_dir_none_override_and_default_data_dir(monkeypatch, tmp_path):
    from jmeta.experiment import load_config

    monkeypatch.setenv("JMETA_DATA_DIR", str(tmp_path / "data"))
    config = load_config(Path(__file__).parents[1] / "experiments" / "omniglot_maml.py")
    assert config.data_dir == str(tmp_path / "data" / "omniglot") == str(jmeta.data.default_data_dir("omniglot"))
    assert (
        load_config(Path(__file__).parents[1] / "experiments" / "omniglot_maml.py", ["data_dir=None"]).data_dir is None
    )
    monkeypatch.delenv("JMETA_DATA_DIR")
    assert jmeta.data.default_data_dir("omniglot") == Path.home() / "jmeta_data" / "omniglot"


def test_folder_protonet_trains_from_the_command_line_on_a_folder_of_pngs(tmp_path, capsys):
    from jmeta.cli import main

    root = _write_image_folder_of_classes(tmp_path / "mine", classes=8, two_levels=True)
    assert main(["data", "folder", "--data-dir", str(root)]) == 0
    assert "skipped files: 10 (9 hidden, 1 not an image" in capsys.readouterr().out
    overrides = ["steps=3", "log_every=1", "val_every=3", "val_tasks=2", "eval_tasks=4", "ways=2", "eval_ways=2"]
    overrides += [
        "queries=2",
        "eval_queries=2",
        "fractions=(0.5,0.25,0.25)",
        "image_size=16",
        "hidden=8",
        "meta_batch=2",
    ]
    config = str(Path(__file__).parents[1] / "experiments" / "folder_protonet.py")
    assert main(["train", config, "--workdir", str(tmp_path / "run"), f"data_dir={root}", *overrides]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["results"]["0"]["accuracy"]["tasks"] == 4


# ---------------------------------------------------------------------------------------------------------
# Real Omniglot (../shared/data/omniglot), skipped where absent

needs_real_omniglot = pytest.mark.skipif(
    not all((REAL_OMNIGLOT / f"images_{name}.zip").is_file() for name in omniglot.SETS),
    reason=f"real Omniglot (images_background.zip, images_evaluation.zip) absent: {REAL_OMNIGLOT.resolve()}",
)


@pytest.fixture(scope="module")
def real_omniglot():
    """Set up before the per-test cache folder, so it uses the user's cache: only the first run decodes."""
    loaded = {split: load("omniglot", REAL_OMNIGLOT, split=split, rotate=()) for split in omniglot.SPLITS}
    loaded["vinyals-rotated"] = load("omniglot", REAL_OMNIGLOT)
    loaded["maml-seed-1"] = load("omniglot", REAL_OMNIGLOT, split="maml", rotate=(), seed=1)
    return loaded


@needs_real_omniglot
def test_real_omniglot_official_sets(real_omniglot):
    data = real_omniglot["background"]
    assert data["train"].num_classes == 964 and data["test"].num_classes == 659
    assert len(data["train"].labels) == 19280 and len(data["test"].labels) == 13180
    assert set(data["train"].counts.tolist()) == {20} and set(data["test"].counts.tolist()) == {20}
    assert len(data.metadata["alphabets"]["train"]) == 30 and len(data.metadata["alphabets"]["test"]) == 20
    assert data["train"].input_shape == (28, 28, 1)
    mean_ink = data["train"].images.mean() / 255
    assert 0.02 < mean_ink < 0.2  # strokes bright on a dark background, not the other way round


@needs_real_omniglot
@pytest.mark.parametrize(("split", "sizes"), [("vinyals", (1028, 172, 423)), ("maml", (1100, 100, 423))])
def test_real_omniglot_split_sizes_and_disjointness(real_omniglot, split, sizes):
    data = real_omniglot[split]
    assert tuple(data[s].num_classes for s in ("train", "val", "test")) == sizes
    names = [set(data[s].class_names) for s in ("train", "val", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(set.union(*names)) == 1623


@needs_real_omniglot
def test_real_omniglot_vinyals_test_is_the_last_423_evaluation_characters(real_omniglot):
    alphabets = real_omniglot["vinyals"].metadata["alphabets"]
    evaluation = real_omniglot["background"].metadata["alphabets"]["test"]
    assert alphabets["test"][0] == "Gurmukhi" and len(alphabets["test"]) == 13
    assert set(alphabets["val"]) <= set(evaluation) and len(alphabets["train"]) == 33


@needs_real_omniglot
def test_real_omniglot_rotated_train_split_and_episodes(real_omniglot):
    train = real_omniglot["vinyals-rotated"]["train"]
    assert train.num_classes == 4112 and len(train.labels) == 82240
    sampler = make_episode_sampler(train, ways=20, shots=1, queries=5)
    task = sampler(jax.random.key(0), 4)
    assert task.support_x.shape == (4, 20, 28, 28, 1) and task.query_x.shape == (4, 100, 28, 28, 1)
    assert 0.0 <= float(task.query_x.min()) and float(task.query_x.max()) <= 1.0


@needs_real_omniglot
def test_real_omniglot_preprocess_of_a_png_from_the_zip_equals_the_loaded_array(real_omniglot):
    with zipfile.ZipFile(REAL_OMNIGLOT / "images_evaluation.zip") as archive:
        name = sorted(n for n in archive.namelist() if n.endswith(".png"))[0]
        png = archive.read(name)
    test = real_omniglot["background"]["test"]
    character = "/".join(name.split("/")[1:3])
    loaded = test.images[test.offsets[test.class_names.index(character)]]  # its first drawing, as sorted
    np.testing.assert_array_equal(omniglot.preprocess([png])[0], loaded)


@needs_real_omniglot
def test_real_omniglot_background_split_trains_on_background_and_validates_on_carved_characters(real_omniglot):
    data = load("omniglot", REAL_OMNIGLOT, split="background", val_fraction=0.1)
    assert [data[s].num_classes for s in ("train", "val", "test")] == [4 * 868, 96, 659]
    background = set(real_omniglot["background"].metadata["alphabets"]["train"])
    assert set(data.metadata["alphabets"]["val"]) <= background
    assert set(data.metadata["alphabets"]["test"]).isdisjoint(background)


@needs_real_omniglot
def test_real_omniglot_maml_split_depends_on_the_seed(real_omniglot):
    assert real_omniglot["maml-seed-1"]["test"].class_names != real_omniglot["maml"]["test"].class_names


# ---------------------------------------------------------------------------------------------------------
# mini-ImageNet


def _write_pickles(root: Path, classes_per_split=(3, 2, 2), per_class=4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for s, split in enumerate(miniimagenet.SPLITS):
        n = classes_per_split[s] * per_class
        images = np.full((n, 84, 84, 3), s, np.uint8)
        classes = classes_per_split[s]
        class_dict = {f"n{s}{c:07d}": list(range(c, n, classes)) for c in range(classes)}  # interleaved rows
        with (root / f"mini-imagenet-cache-{split}.pkl").open("wb") as file:
            pickle.dump({"image_data": images, "class_dict": class_dict}, file)
    return root


def test_mini_imagenet_from_pickles(tmp_path):
    data = load("mini-imagenet", _write_pickles(tmp_path / "mini"))
    assert [data[s].num_classes for s in ("train", "val", "test")] == [3, 2, 2]
    assert data["train"].images.shape == (12, 84, 84, 3) and data["train"].counts.tolist() == [4, 4, 4]
    assert data["val"].class_names == ("n10000000", "n10000001") and int(data["val"].images.max()) == 1


def test_mini_imagenet_pickle_with_wrong_image_shape_is_rejected(tmp_path):
    root = _write_pickles(tmp_path / "mini")
    with (root / "mini-imagenet-cache-val.pkl").open("wb") as file:
        pickle.dump({"image_data": np.zeros((2, 32, 32, 3), np.uint8), "class_dict": {"a": [0, 1]}}, file)
    with pytest.raises(ValueError, match=r"val\.pkl: image_data must be uint8 of shape \(N, 84, 84, 3\)"):
        load("mini-imagenet", root)


def test_mini_imagenet_missing_or_corrupt_pickles_are_reported(tmp_path):
    root = _write_pickles(tmp_path / "mini")
    (root / "mini-imagenet-cache-test.pkl").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"test\.pkl is not a readable pickle"):
        load("mini-imagenet", root)
    (root / "mini-imagenet-cache-test.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks mini-imagenet-cache-test\.pkl"):
        load("mini-imagenet", root)
    with pytest.raises(ValueError, match="pass data_dir=... holding mini-imagenet-cache-train.pkl"):
        load("mini-imagenet")


COLOURS = {"n01": (200, 30, 30), "n02": (30, 200, 30), "n03": (30, 30, 200)}


def _write_image_folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    classes = {"train": ("n01", "n02"), "val": ("n03",), "test": ("n02", "n03")}
    for split, names in classes.items():
        rows = ["filename,label"]
        for name in names:
            for i in range(3 if name != "n02" else 2):
                filename = f"{name}{split}{i:04d}.jpg"
                Image.new("RGB", (120, 90), COLOURS[name]).save(root / "images" / filename, quality=95)
                rows.append(f"{filename},{name}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_mini_imagenet_from_images_and_csv(tmp_path, monkeypatch):
    root = _write_image_folder(tmp_path / "mini")
    data = load("mini-imagenet", root)
    train = data["train"]
    assert train.class_names == ("n01", "n02") and train.counts.tolist() == [3, 2]
    assert train.images.shape == (5, 84, 84, 3) and train.images.dtype == np.uint8
    assert np.abs(train.images[0].astype(int) - COLOURS["n01"]).max() <= 3
    assert data["val"].num_classes == 1 and data["test"].num_classes == 2

    def no_decoding(path):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(miniimagenet, "_decode", no_decoding)
    np.testing.assert_array_equal(load("mini-imagenet", root)["train"].images, train.images)


def test_mini_imagenet_folder_errors(tmp_path):
    root = _write_image_folder(tmp_path / "mini")
    next((root / "images").glob("n03val*.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images listed in the CSV split files .* are missing"):
        load("mini-imagenet", root)
    (root / "val.csv").write_text("file,class\nx.jpg,n03\n")
    with pytest.raises(ValueError, match=r"val\.csv must start with the header 'filename,label'"):
        load("mini-imagenet", root)
    (root / "val.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks the pickles and val\.csv"):
        load("mini-imagenet", root)
    with pytest.raises(FileNotFoundError, match=r"looked for in .*absent.*not a folder"):
        load("mini-imagenet", tmp_path / "absent")


# ---------------------------------------------------------------------------------------------------------
# TFDS sets, under tfds.testing.mock_data (offline: random examples from the builders' feature specs)


@pytest.fixture
def mock_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")

    def mock(num_examples):
        return tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE)

    return mock


def test_published_cifar_splits_are_consistent():
    assert len(CIFAR100_SUPERCLASSES) == 20 and len(CIFAR100_CLASSES) == len(set(CIFAR100_CLASSES)) == 100
    fs = [set(CIFAR_FS_CLASSES[s]) for s in ("train", "val", "test")]
    assert [len(s) for s in fs] == [64, 16, 20] and set.union(*fs) == set(CIFAR100_CLASSES)
    fc = [set(FC100_SUPERCLASSES[s]) for s in ("train", "val", "test")]
    assert [len(s) for s in fc] == [12, 4, 4] and set.union(*fc) == set(CIFAR100_SUPERCLASSES)


def test_cifar_fs_and_fc100_through_mocked_tfds(mock_tfds, tmp_path):
    with mock_tfds(600):
        cifar_fs, fc100 = load("cifar-fs"), load("fc100")
    assert [cifar_fs[s].num_classes for s in ("train", "val", "test")] == [64, 16, 20]
    assert cifar_fs["test"].class_names == CIFAR_FS_CLASSES["test"]
    assert cifar_fs["train"].input_shape == (32, 32, 3) and cifar_fs["train"].images.dtype == np.uint8
    assert [fc100[s].num_classes for s in ("train", "val", "test")] == [60, 20, 20]
    assert fc100["test"].class_names[:5] == CIFAR100_SUPERCLASSES["aquatic_mammals"]
    assert fc100.metadata["superclasses"]["val"] == FC100_SUPERCLASSES["val"]
    assert not (tmp_path / "cache").exists()  # mocked TFDS has no prepared files to key a cache entry on


def test_mnist_and_cifar10_through_mocked_tfds(mock_tfds):
    with mock_tfds(100):
        mnist, official, cifar10 = load("mnist"), load("mnist", split="official"), load("cifar10")
    assert mnist["train"].class_names == tuple("01234") and mnist["test"].class_names == tuple("56789")
    assert mnist["train"].input_shape == (28, 28, 1)
    assert official["train"].num_classes == official["test"].num_classes == 10
    assert cifar10["test"].class_names == ("dog", "frog", "horse", "ship", "truck")
    with pytest.raises(ValueError, match="split must be one of 'classes', 'official'"):
        load("mnist", split="random")


def test_omniglot_through_mocked_tfds(mock_tfds):
    with mock_tfds(12):
        data = load("omniglot", split="background")
    assert data["train"].input_shape == (28, 28, 1) and data["train"].images.dtype == np.uint8
    assert data.metadata["source"] == "tfds omniglot"
    assert data["train"].num_classes == 4 * data.metadata["characters"]["train"]


def test_tfds_failure_names_the_data_set_and_its_cause():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(
        RuntimeError, match=r"TFDS could not prepare 'no_such_dataset_xyz' .*DatasetNotFoundError"
    ) as caught:
        tfds_builder("no_such_dataset_xyz", None)
    assert "network" not in str(caught.value)


def test_tfds_missing_modules_are_named_not_the_network(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setitem(sys.modules, "importlib_resources", None)  # as on a fresh Python 3.11 install
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # which TFDS's builders read their downloads with
    builder = tfds.builder("omniglot", data_dir=tmp_path / "tfds")
    assert tfds_sets.missing_modules(builder) == ["importlib_resources", "tensorflow"]  # found without network
    with pytest.raises(
        ImportError,
        match=r"cannot prepare 'omniglot' .*imports importlib_resources, tensorflow.*pip install importlib_resources",
    ) as caught:
        load("omniglot", split="background")  # data_dir=None: through TFDS, as `jmeta data omniglot`
    assert "no network" not in str(caught.value)

    def offline(self, *args, **kwargs):  # failing first on the download: the missing module is still named
        raise OSError("Failed to resolve 'github.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(ImportError, match="imports importlib_resources, tensorflow"):
        tfds_builder("omniglot", tmp_path / "tfds")


def test_tfds_without_network_says_so(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    requests = pytest.importorskip("requests")
    monkeypatch.setattr(tfds_sets, "missing_modules", lambda builder: [])

    def offline(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'github.com'")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(
        RuntimeError, match=r"TFDS could not download 'mnist' into .*tfds: no network access \(ConnectionError"
    ):
        tfds_builder("mnist", tmp_path / "tfds")

    def disk_full(self, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", disk_full)
    with pytest.raises(RuntimeError, match=r"could not prepare 'mnist' .*No space left on device\; the full") as caught:
        tfds_builder("mnist", tmp_path / "tfds")
    assert "no network" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------
# scikit-learn sets, the registry, and imports


def test_digits():
    data = load("digits")
    assert data["train"].class_names == tuple("01234") and data["test"].class_names == tuple("56789")
    assert data["train"].input_shape == (8, 8, 1) and int(data["train"].images.max()) == 255
    assert len(data["train"].labels) + len(data["test"].labels) == 1797


def test_iris_is_tabular_float_features():
    data = load("iris", test_per_class=10, seed=3)
    train, test = data["train"], data["test"]
    assert train.images.dtype == np.float32 and train.input_shape == (4,)
    assert train.counts.tolist() == [40, 40, 40] and test.counts.tolist() == [10, 10, 10]
    task = make_episode_sampler(train, ways=3, shots=2, queries=3)(jax.random.key(0), 2)
    assert task.support_x.shape == (2, 6, 4) and float(task.support_x.max()) > 1.0  # centimetres, unscaled
    with pytest.raises(ValueError, match="iris is bundled with scikit-learn.*Leave data_dir unset"):
        load("iris", "/some/dir")
    with pytest.raises(ValueError, match="at most 49"):
        load("iris", test_per_class=50)


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="name must be one of 'omniglot', 'folder', 'mini-imagenet', .*got 'imagenet'"):
        load("imagenet")
    with pytest.raises(ValueError, match="omniglot takes the options split, rotate, image_size, resample, s"):
        load("omniglot", None, shots=5)
    with pytest.raises(ValueError, match=r"cifar-fs takes the options \(none\)"):
        load("cifar-fs", None, split="x")


def test_importing_jmeta_does_not_import_tensorflow_datasets():
    code = (
        "import sys, jmeta, jmeta.data, jmeta.tasks.episodes\n"
        "assert not {'tensorflow_datasets', 'tensorflow'} & set(sys.modules), 'TFDS imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
