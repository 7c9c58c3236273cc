"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): 1623 handwritten characters from 50
alphabets, 20 drawings each, as few-shot data.

Read from a folder holding ``images_background.zip`` and ``images_evaluation.zip`` of the official
release (or their extracted folders ``images_background/<Alphabet>/characterNN/*.png``), or, without a
folder, through TFDS's ``omniglot`` builder. Each 105x105 drawing (black ink on white) is resized to
``image_size`` squared and inverted so that ink is bright: images are uint8 ``(N, S, S, 1)`` where 255 is
full ink and 0 is background, so ``images / 255`` lies in [0, 1] with strokes near 1. All 1623
characters are decoded once and cached (:mod:`jmeta.data.cache`); every split reuses that cache.

Splits (characters, before rotation), and what each trains on:

* ``"vinyals"`` (default): 1028 train, 172 val, 423 test, the sizes of the split that Vinyals et al.
  ("Matching networks for one shot learning", NeurIPS 2016) introduced (1200 training and 423 test
  characters; 172 of the 1200 held out for validation as in Snell et al.'s Prototypical Networks). The
  characters are taken in a fixed order, the background set then the evaluation set, each sorted by
  alphabet then character: the first 1028 train, the next 172 val, the last 423 test. So train holds the
  964 background characters and the first 64 evaluation characters; val and test are evaluation
  characters. The sizes match the published split; the exact character lists of that split are not
  reproduced.
* ``"maml"``: 1100 train, 100 val, 423 test, drawn at random from all 1623 with ``seed`` (as in Finn et
  al.'s MAML code, which shuffles the characters before splitting): every split mixes background and
  evaluation characters.
* ``"background"``: the official sets (Lake et al.), background (964 characters, 30 alphabets) as ``train``
  and evaluation (659 characters, 20 alphabets) as ``test``: train on background, test on evaluation.
  It has no val split; ``val_fraction=0.1`` carves one from the background characters (drawn with
  ``seed``), so that checkpoints are chosen without touching an evaluation character.
* a split registered with :func:`jmeta.data.register_split` for ``"omniglot"``: a function of the 1623
  character names (``Alphabet/characterNN``).

Rotations by 90, 180 and 270 degrees count as new classes (4x the characters) on the splits named in
``rotate`` (``("train",)`` by default); class names are ``Alphabet/characterNN/rotDDD``. This is the
augmentation of Santoro et al. (2016) and Vinyals et al. (2016), "new classes through rotation"; MAML's
reference code instead rotates each class of an episode by a random multiple of 90 degrees, which the
episode sampler does with ``augment="rot90"`` (use ``rotate=()`` then, so as not to rotate twice).

Where the zips come from: ``python/images_background.zip`` and ``python/images_evaluation.zip`` of
github.com/brendenlake/omniglot. Configs read them from :func:`jmeta.data.default_data_dir`
(``$JMETA_DATA_DIR/omniglot``, else ``~/jmeta_data/omniglot``).

Outside images (a drawing of your own, a PNG from the zips) are prepared exactly like the data set's with
:func:`preprocess`.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jmeta.data import files, registry
from jmeta.data.cache import cached_arrays
from jmeta.data.dataset import ClassDataset, FewShotData
from jmeta.data.imaging import RESAMPLE, as_batch, prepare
from jmeta.data.splits import carve_ids
from jmeta.data.tfds_sets import split_by_class, tfds_arrays, tfds_builder
from jmeta.validation import one_of, positive_int

SETS = ("background", "evaluation")
SPLITS = ("vinyals", "maml", "background")
SOURCE = "github.com/brendenlake/omniglot (python/images_background.zip and python/images_evaluation.zip)"
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
    val_fraction: float | None = None,
) -> FewShotData:
    """Loads Omniglot as few-shot data: one class per character (and per rotation where rotated).

    ``data_dir`` holds the two official zips or their extracted folders; ``None`` reads through TFDS.
    ``split`` is ``"vinyals"``, ``"maml"``, ``"background"`` or a registered split (see the module
    docstring), ``rotate`` the splits whose characters also appear rotated, ``resample`` the resize filter
    (``"lanczos"`` or ``"box"``, area averaging), ``val_fraction`` the fraction of train characters moved
    to a new val split (before rotation; for a split without val) and ``seed`` the ``"maml"`` split's
    shuffle and the ``val_fraction`` draw.

    Example::

        >>> data = load_omniglot(default_data_dir("omniglot"), split="background", val_fraction=0.1)  # doctest: +SKIP
        >>> [data[s].num_classes for s in ("train", "val", "test")]  # doctest: +SKIP
        [3472, 96, 659]
    """
    split = one_of("split", split, SPLITS + registry.split_names("omniglot"))
    image_size = positive_int("image_size", image_size)
    resample = one_of("resample", resample, tuple(RESAMPLE))
    seed = positive_int("seed", seed, allow_zero=True)
    if data_dir is None:
        catalog, source = _catalog_from_tfds(image_size, resample), "tfds omniglot"
    else:
        catalog, source = _catalog_from_folder(Path(data_dir).expanduser(), image_size, resample), str(data_dir)
    counts, alphabets = catalog["counts"], catalog["alphabets"]
    characters = [f"{a}/{c}" for a, c in zip(alphabets, catalog["characters"], strict=True)]
    labels = np.repeat(np.arange(len(counts)), counts)
    if split in SPLITS:
        assignment = _assign_characters(split, catalog["sets"], seed)
    else:
        assignment = registry.assign_split("omniglot", split, characters)
    if val_fraction is not None:
        if "val" in assignment:
            raise ValueError(
                f"val_fraction carves validation characters from the train characters of a split without val; "
                f"split={split!r} has {len(assignment['val'])} val characters. Use split='background' or leave "
                "val_fraction unset."
            )
        kept, carved = carve_ids(assignment["train"], val_fraction, seed, "train characters")
        others = {name: ids for name, ids in assignment.items() if name != "train"}
        assignment = {"train": np.sort(kept), "val": np.sort(carved), **others}
    names = tuple(assignment)
    rotate = _rotated_splits(rotate, names)
    splits = split_by_class(catalog["images"][..., None], labels, characters, assignment)
    splits = {name: _with_rotations(ds) if name in rotate else ds for name, ds in splits.items()}
    metadata: dict[str, Any] = {
        "alphabets": {name: tuple(sorted(set(alphabets[ids].tolist()))) for name, ids in assignment.items()},
        "characters": {name: len(ids) for name, ids in assignment.items()},
        "drawings per character": {name: _range_text(counts[ids]) for name, ids in assignment.items()},
        "rotations": {name: "0, 90, 180, 270 degrees" if name in rotate else "none" for name in names},
        "split": split if val_fraction is None else f"{split}, val carved from train ({val_fraction=}, {seed=})",
        "pixels": f"{image_size}x{image_size} uint8, 255 = ink, 0 = background ({resample} resize)",
        "skipped files": files.describe_skipped(list(catalog["skipped_paths"]), list(catalog["skipped_reasons"])),
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


def preprocess(images: Any, *, image_size: int = 28, resample: str = "lanczos") -> np.ndarray:
    """Prepares drawings exactly as :func:`load_omniglot` prepares Omniglot's: grey, resized to
    ``image_size`` squared with ``resample``, inverted so that ink is bright; uint8 ``(N, S, S, 1)``.

    ``images`` is a sequence of image sources (paths, PNG bytes, PIL images, uint8 arrays), a uint8 array
    ``(N, H, W)`` or ``(N, H, W, C)``, or one path; boolean arrays (``numpy.asarray`` of one of the data
    set's 1-bit PNGs) are read as 0/255. Colour is converted to grey and transparency laid over white
    first, so a drawing of your own (dark ink on a light background, as Omniglot's) matches. Divide by 255
    for the model's float32 input, as the episode sampler does.

    Example::

        >>> import numpy as np
        >>> paper = np.full((1, 105, 105), 255, np.uint8)   # a blank white page
        >>> preprocess(paper).shape, int(preprocess(paper).max())
        ((1, 28, 28, 1), 0)
    """
    image_size = positive_int("image_size", image_size)
    resample = one_of("resample", resample, tuple(RESAMPLE))
    return np.stack([_decode(image, image_size, resample)[..., None] for image in as_batch(images)])


def _decode(image: Any, image_size: int, resample: str) -> np.ndarray:
    return 255 - prepare(image, (image_size, image_size), 1, resample)[..., 0]


def _catalog(groups: Mapping[tuple[str, str, str], list], skipped: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Stacks drawings grouped by (set, alphabet, character) in set, then alphabet, then character order."""
    keys = sorted(groups, key=lambda key: (SETS.index(key[0]), key[1], key[2]))
    return {
        "images": np.stack([image for key in keys for image in groups[key]]),
        "counts": np.array([len(groups[key]) for key in keys]),
        "sets": np.array([key[0] for key in keys]),
        "alphabets": np.array([key[1] for key in keys]),
        "characters": np.array([key[2] for key in keys]),
        "skipped_paths": np.array([path for path, _ in skipped], dtype=str),
        "skipped_reasons": np.array([reason for _, reason in skipped], dtype=str),
    }


def _not_found(root: Path, detail: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Omniglot was looked for in {root} ({root.resolve()}): {detail}. Download images_background.zip and "
        f"images_evaluation.zip from {SOURCE} into that folder (or extract them there as images_background/ "
        "and images_evaluation/, laid out <Alphabet>/characterNN/*.png), pass data_dir=... holding them, or "
        "data_dir=None to load Omniglot through TFDS."
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


def _listing(source: Path, archive: zipfile.ZipFile | None) -> list[tuple[str, list[str], Callable[[], bytes]]]:
    """(shown path, path parts below the set's folder, reader) of every file of a set, zipped or extracted."""
    if archive is None:
        found = []
        for folder, subfolders, names in os.walk(source):
            subfolders.sort()
            found.extend((Path(folder) / name).relative_to(source).as_posix() for name in names)
        return [(f"{source.name}/{path}", path.split("/"), (source / path).read_bytes) for path in sorted(found)]
    members = sorted(name for name in archive.namelist() if not name.endswith("/"))
    # Members are images_<set>/<Alphabet>/<character>/<file>: the parts below the top folder.
    return [(name, name.split("/")[1:], lambda name=name: archive.read(name)) for name in members]


def _read_set(name: str, source: Path, image_size: int, resample: str) -> tuple[dict, list[tuple[str, str]]]:
    """Decodes a set's drawings grouped by (set, alphabet, character), and lists the files skipped."""
    groups: dict[tuple[str, str, str], list[np.ndarray]] = {}
    skipped: list[tuple[str, str]] = []
    member = str(source)
    try:
        with zipfile.ZipFile(source) if source.is_file() else contextlib.nullcontext() as archive:
            for shown, parts, read in _listing(source, archive):
                reason = files.skip_reason(shown) or (None if len(parts) == 3 else "outside <Alphabet>/<character>/")
                if reason:
                    skipped.append((shown, reason))
                    continue
                member = f"{source}: {'/'.join(parts)}"
                groups.setdefault((name, parts[0], parts[1]), []).append(_decode(read(), image_size, resample))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(
            f"could not read Omniglot from {member} ({type(error).__name__}: {error}). Replace it with a "
            f"fresh copy of images_{name}.zip from {SOURCE}, or extract it next to it as a folder."
        ) from error
    if not groups:
        raise ValueError(
            f"found no drawings in {source}; Omniglot's images_{name} must hold <Alphabet>/characterNN/*.png."
        )
    return groups, skipped


def _catalog_from_folder(root: Path, image_size: int, resample: str) -> dict[str, np.ndarray]:
    sources = _sources(root)

    def build() -> dict[str, np.ndarray]:
        groups: dict[tuple[str, str, str], list[np.ndarray]] = {}
        skipped: list[tuple[str, str]] = []
        for name, source in sources.items():
            set_groups, set_skipped = _read_set(name, source, image_size, resample)
            groups.update(set_groups)
            skipped.extend(set_skipped)
        return _catalog(groups, skipped)

    options = {"image_size": image_size, "resample": resample}
    return cached_arrays("omniglot", options, sources.values(), build)


def _catalog_from_tfds(image_size: int, resample: str) -> dict[str, np.ndarray]:
    builder = tfds_builder("omniglot", None)
    alphabets = builder.info.features["alphabet"]

    def convert(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        image = _decode(np.asarray(example["image"])[..., 0], image_size, resample)
        return {"images": image, "alphabet": example["alphabet"], "number": example["alphabet_char_id"]}

    groups: dict[tuple[str, str, str], list[np.ndarray]] = {}
    options = {"image_size": image_size, "resample": resample}
    for name in SETS:
        arrays = tfds_arrays(builder, [_TFDS_SPLITS[name]], convert, options)
        columns = (arrays["images"], arrays["alphabet"], arrays["number"])
        for image, alphabet, number in zip(*columns, strict=True):
            key = (name, alphabets.int2str(int(alphabet)), f"character{int(number) + 1:02d}")
            groups.setdefault(key, []).append(image)
    return _catalog(groups, [])
