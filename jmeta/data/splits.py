"""Dividing a data set's classes into train, val and test: by seeded fractions, by a split file, or by
carving validation classes out of the training classes.

A split file is a CSV file with the header ``class,split`` and one row per class, ``split`` being
``train``, ``val`` or ``test``; class names are as the data set names them (for an image folder, the
class folder's path below the root, e.g. ``cats`` or ``Latin/character01``). Classes the file does not
list are left out; a listed class the data set lacks is an error::

    class,split
    Latin/character01,train
    Latin/character02,val
    Greek/character01,test
"""

from __future__ import annotations

import csv
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jmeta.data.dataset import ClassDataset, FewShotData
from jmeta.data.registry import SPLIT_NAMES
from jmeta.validation import positive_int


def check_fraction(name: str, value: float) -> float:
    """``value`` as a float if it lies strictly between 0 and 1, else ValueError naming ``name``.

    Example::

        >>> check_fraction("val_fraction", 0.1)
        0.1
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1; got {value!r}.")
    return float(value)


def carve_ids(
    ids: Sequence[int], fraction: float, seed: int, what: str = "train classes"
) -> tuple[np.ndarray, np.ndarray]:
    """Moves ``round(fraction * len(ids))`` (at least 1) of ``ids``, drawn with ``seed``, to a second set.

    Returns ``(kept, carved)``, each in the original order. Raises ValueError when nothing would be left.

    Example::

        >>> kept, carved = carve_ids(range(10), 0.2, seed=0)
        >>> len(kept), len(carved), sorted([*kept, *carved]) == list(range(10))
        (8, 2, True)
    """
    fraction = check_fraction("val_fraction", fraction)
    seed = positive_int("seed", seed, allow_zero=True)
    ids = np.asarray(list(ids), dtype=np.int64)
    count = max(1, round(fraction * len(ids)))
    if count >= len(ids):
        raise ValueError(
            f"val_fraction={fraction} of the {len(ids)} {what} would leave none to train on; there must be at "
            "least 2 to carve validation classes from. Lower val_fraction or use more classes."
        )
    chosen = np.zeros(len(ids), bool)
    chosen[np.random.default_rng(seed).choice(len(ids), count, replace=False)] = True
    return ids[~chosen], ids[chosen]


def carve_validation(data: FewShotData, fraction: float, *, seed: int = 0) -> FewShotData:
    """Returns ``data`` with a ``"val"`` split of ``fraction`` of its train classes (drawn with ``seed``),
    which leave ``"train"``; the test split is untouched.

    Use it for a data set whose split has no validation classes (e.g. MNIST's classes split) so that
    checkpoints are chosen on classes that are neither trained on nor tested. Raises ValueError when
    ``data`` already has a val split or has no train split. Related classes (such as rotated copies of one
    character) are carved independently: for Omniglot use ``load("omniglot", ..., val_fraction=...)``, which
    carves characters before rotating them.

    Example::

        >>> import jmeta.data
        >>> data = carve_validation(jmeta.data.load("digits"), 0.2, seed=0)
        >>> data["train"].num_classes, data["val"].num_classes, data["test"].num_classes
        (4, 1, 5)
    """
    if "val" in data.splits:
        raise ValueError(
            f"{data.name} already has a val split ({data['val'].num_classes} classes); carve_validation makes "
            "one from the train classes of a split without one. Drop val_fraction, or choose such a split."
        )
    train = data["train"]
    kept, carved = carve_ids(range(train.num_classes), fraction, seed)
    parts = {"train": _subset(train, kept), "val": _subset(train, carved)}
    splits = {**parts, **{name: ds for name, ds in data.splits.items() if name != "train"}}
    ordered = {name: splits[name] for name in SPLIT_NAMES if name in splits}
    ordered.update({name: ds for name, ds in splits.items() if name not in ordered})
    note = f"{len(carved)} of the {train.num_classes} train classes at random (val_fraction={fraction}, seed={seed})"
    return FewShotData(data.name, ordered, {**data.metadata, "validation": note})


def _subset(dataset: ClassDataset, ids: np.ndarray) -> ClassDataset:
    keep = np.isin(dataset.labels, ids)
    renumber = np.full(dataset.num_classes, -1)
    renumber[ids] = np.arange(len(ids))
    names = [dataset.class_names[i] for i in ids]
    return ClassDataset.from_unsorted(dataset.images[keep], renumber[dataset.labels[keep]], names)


def fraction_split(num_classes: int, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """Class ids per split for ``fractions = (train, val, test)`` of ``num_classes`` classes, shuffled with
    ``seed``; val may be 0 (then there is no val split). Each split's ids are sorted.

    Example::

        >>> {k: len(v) for k, v in fraction_split(10, (0.6, 0.2, 0.2), seed=0).items()}
        {'train': 6, 'val': 2, 'test': 2}
    """
    if isinstance(fractions, str) or not isinstance(fractions, Sequence) or len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), e.g. (0.7, 0.15, 0.15); got {fractions!r}.")
    bad = [f for f in fractions if isinstance(f, bool) or not isinstance(f, numbers.Real) or f < 0]
    if bad or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0 or fractions[2] == 0:
        raise ValueError(
            f"fractions must be (train, val, test) of the classes, non-negative, summing to 1, with train and "
            f"test above 0; got {tuple(fractions)!r}."
        )
    seed = positive_int("seed", seed, allow_zero=True)
    counts = {"val": round(fractions[1] * num_classes), "test": round(fractions[2] * num_classes)}
    counts["train"] = num_classes - counts["val"] - counts["test"]
    empty = [name for name, f in zip(SPLIT_NAMES, fractions, strict=True) if f > 0 and counts[name] < 1]
    if empty:
        raise ValueError(
            f"fractions={tuple(fractions)!r} of {num_classes} classes leave the {', '.join(empty)} split without "
            f"classes ({counts}); use more classes or other fractions."
        )
    order = np.random.default_rng(seed).permutation(num_classes)
    parts = np.split(order, [counts["train"], counts["train"] + counts["val"]])
    return {name: np.sort(ids) for name, ids in zip(SPLIT_NAMES, parts, strict=True) if len(ids)}


def read_split_file(path: str | Path, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Class ids per split from a split file (see the module docstring), checked against ``class_names``.

    Example::

        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "split.csv"
        >>> _ = path.write_text("class,split\\ncats,train\\ndogs,test\\n")
        >>> {k: v.tolist() for k, v in read_split_file(path, ["cats", "dogs", "owls"]).items()}
        {'train': [0], 'test': [1]}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split_file {str(path)!r} does not exist; it must be a CSV file 'class,split'.")
    with path.open(newline="") as file:
        rows = [row for row in csv.reader(file) if row]
    if not rows or [cell.strip() for cell in rows[0]] != ["class", "split"]:
        raise ValueError(f"split_file {path} must start with the header 'class,split'; got {rows[:1]}.")
    index = {name: i for i, name in enumerate(class_names)}
    assignment: dict[str, list[int]] = {}
    seen: set[str] = set()
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[1].strip() not in SPLIT_NAMES:
            raise ValueError(
                f"split_file {path}, line {number}: rows must be 'class,split', split being train, val or test; "
                f"got {row}."
            )
        name, split = row[0].strip(), row[1].strip()
        if name not in index:
            raise ValueError(
                f"split_file {path}, line {number}: class {name!r} is not in the data set, whose classes are "
                f"e.g. {list(class_names)[:3]}."
            )
        if name in seen:
            raise ValueError(f"split_file {path}, line {number}: class {name!r} is listed twice.")
        seen.add(name)
        assignment.setdefault(split, []).append(index[name])
    if "train" not in assignment:
        raise ValueError(f"split_file {path} assigns no class to train; at least train is needed.")
    return {name: np.array(assignment[name], dtype=np.int64) for name in SPLIT_NAMES if name in assignment}


def describe_assignment(assignment: Mapping[str, np.ndarray], total: int) -> str:
    """``"6 train, 2 val, 2 test of 10 classes"``.

    Example::

        >>> import numpy as np
        >>> describe_assignment({"train": np.arange(6), "test": np.arange(2)}, 9)
        '6 train, 2 test of 9 classes'
    """
    return ", ".join(f"{len(ids)} {name}" for name, ids in assignment.items()) + f" of {total} classes"
