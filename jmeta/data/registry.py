"""The data set registry: names that :func:`jmeta.data.load`, ``jmeta data NAME`` and experiment configs
(``task=NAME``) accept, and the class splits each data set offers by name.

A data set is a loader ``loader(data_dir, **options) -> FewShotData`` whose options are keyword-only,
optionally with a ``preprocess(images, **options) -> uint8 array`` that prepares outside images exactly
like the loader prepares its own (options named like the loader's). A split is a function of the data
set's class names, ``split(class_names) -> {"train": [...], "val": [...], "test": [...]}`` ("val" may be
left out), registered for one data set and chosen with ``split=NAME``.

jmeta's own data sets are registered the same way (in :mod:`jmeta.data`); a user's are added with
:func:`register_dataset` and :func:`register_split` (also ``jmeta.register_dataset``/``jmeta.register_split``),
without editing jmeta. Both are :class:`jmeta.registry.Registry` s, the pattern of every registry in jmeta.

Example::

    >>> import numpy as np
    >>> from jmeta.data import ClassDataset, FewShotData
    >>> def load_toy(data_dir=None, *, size=2):
    ...     ds = ClassDataset(np.zeros((size, 1), np.float32), np.arange(size), [f"c{i}" for i in range(size)])
    ...     return FewShotData("toy", {"train": ds, "test": ds})
    >>> register_dataset("toy-doc", load_toy, replace=True)
    >>> import jmeta.data
    >>> jmeta.data.load("toy-doc", size=3)["train"].num_classes
    3
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jmeta.data.dataset import FewShotData
from jmeta.registry import Registry

Loader = Callable[..., FewShotData]
Preprocess = Callable[..., np.ndarray]
SplitFunction = Callable[[tuple[str, ...]], Mapping[str, Sequence[str]]]
SPLIT_NAMES = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """A registered data set: its loader, its keyword options, and its image preprocessing (or ``None``)."""

    loader: Loader
    options: tuple[str, ...]
    preprocess: Preprocess | None


DATASETS = Registry("data set", properties={"options": (), "preprocess": None}, register_with="jmeta.register_dataset")
_SPLITS: dict[str, Registry] = {}


def register_dataset(name: str, loader: Loader, *, preprocess: Preprocess | None = None, replace: bool = False) -> None:
    """Adds data set ``name``: ``loader(data_dir, **options) -> FewShotData``, options keyword-only.

    ``preprocess(images, **options)`` (optional) returns outside images as the loader stores its own,
    uint8 ``(N, H, W, C)``. Registering a taken name raises ValueError unless ``replace=True``.

    Example::

        >>> import jmeta.data
        >>> register_dataset("iris-again", jmeta.data.tfds_sets.load_iris, replace=True)
        >>> "iris-again" in dataset_names()
        True
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}.")
    if not callable(loader):
        raise TypeError(f"loader must be callable as loader(data_dir, **options); got {type(loader).__name__}.")
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess must be callable or None; got {type(preprocess).__name__}.")
    parameters = list(inspect.signature(loader).parameters.values())
    if not parameters or parameters[0].kind not in (parameters[0].POSITIONAL_ONLY, parameters[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"loader for {name!r} must take data_dir as its first positional argument.")
    options = tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)
    DATASETS.register(name, loader, replace=replace, options=options, preprocess=preprocess)


def register_split(dataset: str, name: str, split: SplitFunction, *, replace: bool = False) -> None:
    """Adds class split ``name`` to ``dataset``: ``split(class_names) -> {"train": names, "val": names,
    "test": names}`` ("val" optional); then ``jmeta.data.load(dataset, ..., split=name)`` uses it.

    ``class_names`` are the data set's classes before any augmentation (for Omniglot the 1623
    ``Alphabet/characterNN`` names, rotated afterwards as ``rotate`` says). The returned lists must name
    known classes, none twice; classes left out are not used.

    Example::

        >>> def by_alphabet(names):
        ...     train = [n for n in names if n < "M"]
        ...     return {"train": train, "test": [n for n in names if n >= "M"]}
        >>> register_split("omniglot", "a-to-l", by_alphabet, replace=True)
        >>> "a-to-l" in split_names("omniglot")
        True
    """
    entry(dataset)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}.")
    if not callable(split):
        raise TypeError(f"split must be callable as split(class_names) -> dict; got {type(split).__name__}.")
    splits = _SPLITS.setdefault(dataset, Registry(f"split of {dataset}", register_with="jmeta.register_split"))
    splits.register(name, split, replace=replace)


def dataset_names() -> tuple[str, ...]:
    """The registered data set names, in registration order.

    Example::

        >>> dataset_names()[:3]
        ('omniglot', 'folder', 'mini-imagenet')
    """
    return DATASETS.names()


def entry(name: str) -> DatasetEntry:
    """The registered data set ``name``; ValueError listing the names otherwise.

    Example::

        >>> entry("iris").options
        ('test_per_class', 'seed')
    """
    if name not in DATASETS:
        raise ValueError(DATASETS.unknown(name, "name"))
    component = DATASETS[name]
    return DatasetEntry(component.builder, component.properties["options"], component.properties["preprocess"])


def split_names(dataset: str) -> tuple[str, ...]:
    """The splits registered for ``dataset`` with :func:`register_split` (not its built-in ones).

    Example::

        >>> split_names("cifar10")
        ()
    """
    return _SPLITS[dataset].names() if dataset in _SPLITS else ()


def assign_split(dataset: str, split: str, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Runs ``dataset``'s registered split ``split`` on ``class_names``; returns class ids per split name,
    in train, val, test order, each in the order the split function listed them.

    Raises ValueError naming the split when it returns unknown split names or classes, a class twice, or
    no train classes.

    Example::

        >>> register_split("iris", "doc", lambda names: {"train": names[1:], "test": names[:1]}, replace=True)
        >>> {k: v.tolist() for k, v in assign_split("iris", "doc", ("a", "b", "c")).items()}
        {'train': [1, 2], 'test': [0]}
    """
    function = _SPLITS[dataset][split].builder if split in split_names(dataset) else None
    if function is None:
        raise ValueError(f"{dataset} has no registered split {split!r}; its registered splits: {split_names(dataset)}.")
    names = tuple(class_names)
    result = function(names)
    label = f"split {split!r} of {dataset}"
    if not isinstance(result, Mapping) or not set(result) <= set(SPLIT_NAMES) or "train" not in result:
        keys = sorted(result) if isinstance(result, Mapping) else type(result).__name__
        raise ValueError(f"{label} must return a dict with keys train, test and optionally val; got {keys}.")
    index = {name: i for i, name in enumerate(names)}
    assignment, seen = {}, set()
    for part in SPLIT_NAMES:
        if part not in result:
            continue
        chosen = [result[part]] if isinstance(result[part], str) else list(result[part])
        unknown = [name for name in chosen if name not in index]
        twice = [name for name in chosen if name in seen or chosen.count(name) > 1]
        if unknown or twice or not chosen:
            problem = (
                f"names unknown classes {unknown[:3]}"
                if unknown
                else f"lists {twice[:3]} twice"
                if twice
                else "is empty"
            )
            raise ValueError(
                f"{label}: its {part!r} list {problem}; the data set has {len(names)} classes, e.g. {names[:3]}."
            )
        seen.update(chosen)
        assignment[part] = np.array([index[name] for name in chosen], dtype=np.int64)
    return assignment


def loader_options(name: str, options: Mapping[str, Any]) -> None:
    """Raises ValueError when ``options`` holds a key that data set ``name``'s loader does not take.

    Example::

        >>> loader_options("iris", {"shots": 5})
        Traceback (most recent call last):
        ValueError: iris takes the options test_per_class, seed; got unknown shots.
    """
    allowed = entry(name).options
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name} takes the options {', '.join(allowed) or '(none)'}; got unknown {', '.join(unknown)}."
        )


def parse_options(name: str, items: Sequence[str]) -> dict[str, Any]:
    """Options for data set ``name`` from ``key=value`` texts, as ``jmeta data NAME --option key=value`` takes
    them: each value is parsed as a Python literal (``fractions=(0.6,0.2,0.2)``, ``image_size=32``,
    ``rotate=()``), else kept as text (``split_file=splits.csv``; quote a text that reads as a number:
    ``split='2024'``). Keys are checked against the loader's options (:func:`loader_options`); every data
    set also takes ``val_fraction`` (:func:`jmeta.data.load`), and ``split`` names a split registered with
    :func:`register_split`. Raises ValueError for an item without ``=``, a key given twice or an unknown key.

    Example::

        >>> parse_options("folder", ["fractions=(0.6, 0.2, 0.2)", "split_file=splits.csv", "channels=3"])
        {'fractions': (0.6, 0.2, 0.2), 'split_file': 'splits.csv', 'channels': 3}
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"options must look like key=value (e.g. image_size=32); got {item!r}.")
        if key in options:
            raise ValueError(f"option {key!r} is given twice ({key}={options[key]!r} and {item!r}).")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    shared = {"val_fraction", *(("split",) if split_names(name) else ())}
    loader_options(name, {key: value for key, value in options.items() if key not in shared})
    return options
