"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): 1623 handwritten characters from 50
alphabets, 20 drawings each, as few-shot data.

Read from a folder holding ``images_background.zip`` and ``images_evaluation.zip`` of the official
release (or their extracted folders ``images_background/<Alphabet>/characterNN/*.png``), or, without a
folder, through TFDS's ``omniglot`` builder. Each 105x105 drawing (black ink on white) is resized to
``image_size`` squared and inverted so that ink is bright: images are uint8 ``(N, S, S, 1)`` where 255 is
full ink and 0 is background, so ``images / 255`` lies in [0, 1] with strokes near 1. All 1623
characters are decoded once and cached (:mod:`jmeta.data.cache`); every split reuses that cache.

Splits (characters, before rotation):

* ``"vinyals"`` (default): 1028 train, 172 val, 423 test, the sizes of the split that Vinyals et al.
  ("Matching networks for one shot learning", NeurIPS 2016) introduced (1200 training and 423 test
  characters; 172 of the 1200 held out for validation as in Snell et al.'s Prototypical Networks). The
  characters are taken in a fixed order, the background set then the evaluation set, each sorted by
  alphabet then character: the first 1028 train, the next 172 val, the last 423 test. The sizes match
  the published split; the exact character lists of that split are not reproduced.
* ``"maml"``: 1100 train, 100 val, 423 test, drawn at random with ``seed`` (as in Finn et al.'s MAML
  code, which shuffles the characters before splitting).
* ``"background"``: the official sets, background (964 characters, 30 alphabets) as ``train`` and
  evaluation (659 characters, 20 alphabets) as ``test``.

Rotations by 90, 180 and 270 degrees count as new classes (4x the characters) on the splits named in
``rotate`` (``("train",)`` by default); class names are ``Alphabet/characterNN/rotDDD``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jmeta.data.cache import cached_arrays
from jmeta.data.dataset import ClassDataset, FewShotData
from jmeta.data.tfds_sets import split_by_class, tfds_arrays, tfds_builder
from jmeta.validation import one_of, positive_int

SETS = ("background", "evaluation")
SPLITS = ("vinyals", "maml", "background")
RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}
NUM_CHARACTERS = 1623
_SPLIT_SIZES = {"vinyals": (1028, 172, 423), "maml": (1100, 100, 423)}
# TFDS's omniglot splits holding the background and evaluation sets.
_TFDS_SPLITS = {"background": "train", "evaluation": "test"}


def load_omniglot(
    data_dir: str | Path | None = None,
    *,
    split: str = "vinyals",
    rotate: Sequence[str] = ("train",),
    image_size: int = 28,
    resample: str = "lanczos",
    seed: int = 0,
) -> FewShotData:
    """Loads Omniglot as few-shot data: one class per character (and per rotation where rotated).

    ``data_dir`` holds the two official zips or their extracted folders; ``None`` reads through TFDS.
    ``split`` is ``"vinyals"``, ``"maml"`` or ``"background"`` (see the module docstring), ``rotate`` the
    splits whose characters also appear rotated, ``resample`` the resize filter (``"lanczos"`` or
    ``"box"``, area averaging) and ``seed`` the ``"maml"`` split's shuffle.

    Example::

        >>> data = load_omniglot("../shared/data/omniglot")  # doctest: +SKIP
        >>> data["train"].num_classes, data["train"].input_shape  # doctest: +SKIP
        (4112, (28, 28, 1))
    """
    split = one_of("split", split, SPLITS)
    names = ("train", "test") if split == "background" else ("train", "val", "test")
    rotate = _rotated_splits(rotate, names)
    image_size = positive_int("image_size", image_size)
    resample = one_of("resample", resample, tuple(RESAMPLE))
    seed = positive_int("seed", seed, allow_zero=True)
    if data_dir is None:
        catalog, source = _catalog_from_tfds(image_size, resample), "tfds omniglot"
    else:
        catalog, source = _catalog_from_folder(Path(data_dir), image_size, resample), str(data_dir)
    counts, alphabets = catalog["counts"], catalog["alphabets"]
    characters = [f"{a}/{c}" for a, c in zip(alphabets, catalog["characters"], strict=True)]
    labels = np.repeat(np.arange(len(counts)), counts)
    assignment = _assign_characters(split, catalog["sets"], seed)
    splits = split_by_class(catalog["images"][..., None], labels, characters, assignment)
    splits = {name: _with_rotations(ds) if name in rotate else ds for name, ds in splits.items()}
    metadata: dict[str, Any] = {
        "alphabets": {name: tuple(sorted(set(alphabets[ids].tolist()))) for name, ids in assignment.items()},
        "characters": {name: len(ids) for name, ids in assignment.items()},
        "drawings per character": {name: _range_text(counts[ids]) for name, ids in assignment.items()},
        "rotations": {name: "0, 90, 180, 270 degrees" if name in rotate else "none" for name in names},
        "split": split,
        "pixels": f"{image_size}x{image_size} uint8, 255 = ink, 0 = background ({resample} resize)",
        "source": source,
    }
    return FewShotData("omniglot", splits, metadata)


def _rotated_splits(rotate: Sequence[str], names: tuple[str, ...]) -> frozenset[str]:
    if isinstance(rotate, str) or not isinstance(rotate, Iterable):
        raise ValueError(
            f"rotate must be a sequence of split names, e.g. ('train',) or () for none; got {rotate!r}."
        )
    unknown = [name for name in rotate if name not in names]
    if unknown:
        raise ValueError(
            f"rotate names splits that this Omniglot split does not have: {unknown}; its splits are "
            f"{', '.join(map(repr, names))}."
        )
    return frozenset(rotate)


def _assign_characters(split: str, sets: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    if split == "background":
        return {"train": np.flatnonzero(sets == "background"), "test": np.flatnonzero(sets == "evaluation")}
    if len(sets) != NUM_CHARACTERS:
        raise ValueError(
            f"split={split!r} divides Omniglot's {NUM_CHARACTERS} characters {_SPLIT_SIZES[split]}, but the "
            f"data holds {len(sets)} characters. Use split='background' for other data, or provide the "
            "complete images_background.zip and images_evaluation.zip."
        )
    if split == "vinyals":
        order = np.arange(NUM_CHARACTERS)
    else:
        order = np.random.default_rng(seed).permutation(NUM_CHARACTERS)
    train, val, _ = _SPLIT_SIZES[split]
    parts = np.split(order, [train, train + val])
    return {name: np.sort(ids) for name, ids in zip(("train", "val", "test"), parts, strict=True)}


def _with_rotations(dataset: ClassDataset) -> ClassDataset:
    images = np.concatenate([np.rot90(dataset.images, k, axes=(1, 2)) for k in range(4)])
    labels = np.concatenate([dataset.labels * 4 + k for k in range(4)])
    names = [f"{name}/rot{90 * k:03d}" for name in dataset.class_names for k in range(4)]
    return ClassDataset.from_unsorted(images, labels, names)


def _range_text(values: np.ndarray) -> str:
    low, high = int(values.min()), int(values.max())
    return str(low) if low == high else f"{low} to {high}"


def _decode(png: bytes, image_size: int, resample: str) -> np.ndarray:
    image = Image.open(io.BytesIO(png)).convert("L").resize((image_size, image_size), RESAMPLE[resample])
    return 255 - np.asarray(image, dtype=np.uint8)


def _catalog(groups: Mapping[tuple[str, str, str], list[np.ndarray]]) -> dict[str, np.ndarray]:
    """Stacks drawings grouped by (set, alphabet, character) in set, then alphabet, then character order."""
    keys = sorted(groups, key=lambda key: (SETS.index(key[0]), key[1], key[2]))
    return {
        "images": np.stack([image for key in keys for image in groups[key]]),
        "counts": np.array([len(groups[key]) for key in keys]),
        "sets": np.array([key[0] for key in keys]),
        "alphabets": np.array([key[1] for key in keys]),
        "characters": np.array([key[2] for key in keys]),
    }


def _not_found(root: Path, detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Omniglot was looked for in {root} ({root.resolve()}): {detail}. Pass data_dir=... holding "
        "images_background.zip and images_evaluation.zip (or their extracted folders images_background/ "
        "and images_evaluation/, laid out <Alphabet>/characterNN/*.png), or data_dir=None to load it "
        "through TFDS."
    )


def _sources(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise _not_found(root, "the folder does not exist" if not root.exists() else "it is not a folder")
    sources, missing = {}, []
    for name in SETS:
        archive, folder = root / f"images_{name}.zip", root / f"images_{name}"
        if archive.is_file():
            sources[name] = archive
        elif folder.is_dir():
            sources[name] = folder
        else:
            missing.append(f"images_{name}.zip")
    if missing:
        raise _not_found(root, f"missing {' and '.join(missing)} (nor an extracted folder)")
    return sources


def _members(source: Path) -> Iterator[tuple[str, str, str, Callable[[], bytes]]]:
    """Yields (alphabet, character, drawing file name, reader) for each PNG of a set, zipped or extracted."""
    if source.is_dir():
        for path in sorted(source.glob("*/*/*.png")):
            yield path.parts[-3], path.parts[-2], path.name, path.read_bytes
        return
    with zipfile.ZipFile(source) as archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            junk = "__MACOSX" in parts or parts[-1].startswith(".")
            if name.endswith(".png") and len(parts) >= 3 and not junk:
                yield parts[-3], parts[-2], parts[-1], lambda name=name: archive.read(name)


def _read_set(name: str, source: Path, image_size: int, resample: str) -> dict[tuple[str, str, str], list]:
    groups: dict[tuple[str, str, str], list[np.ndarray]] = {}
    member = str(source)
    try:
        for alphabet, character, drawing, read in _members(source):
            member = f"{source}: {alphabet}/{character}/{drawing}"
            groups.setdefault((name, alphabet, character), []).append(_decode(read(), image_size, resample))
    except (zipfile.BadZipFile, OSError, SyntaxError) as error:
        raise ValueError(
            f"could not read Omniglot from {member} ({type(error).__name__}: {error}). Replace it with a "
            f"fresh copy of images_{name}.zip from the official release (python/ folder of "
            "github.com/brendenlake/omniglot), or extract it next to it as a folder."
        ) from error
    if not groups:
        raise ValueError(
            f"found no drawings in {source}; Omniglot's images_{name} must hold <Alphabet>/characterNN/*.png."
        )
    return groups


def _catalog_from_folder(root: Path, image_size: int, resample: str) -> dict[str, np.ndarray]:
    sources = _sources(root)

    def build() -> dict[str, np.ndarray]:
        groups: dict[tuple[str, str, str], list[np.ndarray]] = {}
        for name, source in sources.items():
            groups.update(_read_set(name, source, image_size, resample))
        return _catalog(groups)

    options = {"image_size": image_size, "resample": resample}
    return cached_arrays("omniglot", options, sources.values(), build)


def _catalog_from_tfds(image_size: int, resample: str) -> dict[str, np.ndarray]:
    builder = tfds_builder("omniglot", None)
    alphabets = builder.info.features["alphabet"]

    def convert(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        grey = Image.fromarray(np.asarray(example["image"])[..., 0])
        image = 255 - np.asarray(grey.resize((image_size, image_size), RESAMPLE[resample]), dtype=np.uint8)
        return {"images": image, "alphabet": example["alphabet"], "number": example["alphabet_char_id"]}

    groups: dict[tuple[str, str, str], list[np.ndarray]] = {}
    options = {"image_size": image_size, "resample": resample}
    for name in SETS:
        arrays = tfds_arrays(builder, [_TFDS_SPLITS[name]], convert, options)
        columns = (arrays["images"], arrays["alphabet"], arrays["number"])
        for image, alphabet, number in zip(*columns, strict=True):
            key = (name, alphabets.int2str(int(alphabet)), f"character{int(number) + 1:02d}")
            groups.setdefault(key, []).append(image)
    return _catalog(groups)
