"""Few-shot data sets built from TFDS (CIFAR-FS, FC100, MNIST, CIFAR-10) and scikit-learn (digits, iris).

TensorFlow Datasets is imported inside the functions that need it, so ``import jmeta`` never imports
it (nor TensorFlow). Data is read through ``tfds`` data sources in the ArrayRecord format, which needs
no TensorFlow; TFDS downloads and prepares a data set in its ``data_dir`` (``$TFDS_DATA_DIR``, else
``~/tensorflow_datasets``) on first use, which needs network access. The decoded arrays are then cached
by :mod:`jmeta.data.cache`, keyed by the prepared TFDS files.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jmeta.data import registry
from jmeta.data.cache import cached_arrays
from jmeta.data.dataset import ClassDataset, FewShotData
from jmeta.validation import one_of, positive_int

# CIFAR-100's 20 superclasses and their 5 fine classes each (Krizhevsky, 2009), named as in the data set's
# `meta` file. Fine label ids follow the alphabetical order of the fine names, as in that file and TFDS.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_CLASSES: tuple[str, ...] = tuple(sorted(c for fine in CIFAR100_SUPERCLASSES.values() for c in fine))

# CIFAR-FS: Bertinetto, Henriques, Torr & Vedaldi, "Meta-learning with differentiable closed-form
# solvers", ICLR 2019. The 64/16/20 CIFAR-100 classes of their published split files
# (data/cifar-fs/splits/bertinetto/{train,val,test}.txt), listed here alphabetically.
CIFAR_FS_CLASSES: dict[str, tuple[str, ...]] = {
    "train": (
        "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus", "can", "castle",
        "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup", "dinosaur", "dolphin",
        "elephant", "forest", "girl", "hamster", "house", "kangaroo", "keyboard", "lawn_mower", "lion",
        "lizard", "lobster", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "palm_tree",
        "pear", "pine_tree", "plate", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "seal",
        "shrew", "skunk", "skyscraper", "snake", "spider", "squirrel", "streetcar", "sunflower", "tank",
        "tiger", "train", "trout", "tulip", "turtle", "willow_tree", "wolf",
    ),
    "val": (
        "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish", "lamp",
        "maple_tree", "motorcycle", "otter", "sea", "shark", "television", "tractor",
    ),
    "test": (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain", "poppy",
        "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale", "woman",
        "worm",
    ),
}

# FC100: Oreshkin, Rodriguez & Lacoste, "TADAM: Task dependent adaptive metric for improved few-shot
# learning", NeurIPS 2018. CIFAR-100 split by superclass, 12/4/4 (60/20/20 fine classes): superclass ids
# 1-6, 9, 10, 15, 17-19 train; 8, 11, 13, 16 val; 0, 7, 12, 14 test.
FC100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "train": (
        "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
        "household_furniture", "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "reptiles",
        "trees", "vehicles_1", "vehicles_2",
    ),
    "val": (
        "large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals",
    ),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGIT_CLASSES = tuple("0123456789")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")

# The class split used for the 10-class sets (MNIST, CIFAR-10, digits) with split="classes".
_TEN_CLASS_SPLIT = {"train": (0, 1, 2, 3, 4), "test": (5, 6, 7, 8, 9)}


def split_by_class(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    assignment: Mapping[str, Sequence[int]],
) -> dict[str, ClassDataset]:
    """Groups examples into one :class:`ClassDataset` per split, given each split's class ids.

    Within a split, classes are renumbered ``0..k-1`` in the order ``assignment`` lists them.

    Example::

        >>> import numpy as np
        >>> x, y = np.zeros((4, 1), np.float32), np.array([0, 1, 2, 2])
        >>> splits = split_by_class(x, y, ("a", "b", "c"), {"train": [2, 0], "test": [1]})
        >>> splits["train"].class_names, splits["train"].counts.tolist()
        (('c', 'a'), [2, 1])
    """
    splits = {}
    for split, ids in assignment.items():
        ids = np.asarray(ids, dtype=np.int64)
        renumber = np.full(len(class_names), -1)
        renumber[ids] = np.arange(len(ids))
        keep = renumber[labels] >= 0
        names = [class_names[i] for i in ids]
        splits[split] = ClassDataset.from_unsorted(images[keep], renumber[labels[keep]], names)
    return splits


def tfds_builder(name: str, data_dir: str | Path | None) -> Any:
    """Imports TFDS, and returns the builder of ``name`` after preparing it as ArrayRecord files.

    Each failure names its real cause: TFDS not installed (ImportError); a module that TFDS needs to
    prepare the data set missing, found before anything is downloaded (ImportError naming the modules and
    the pip command; TFDS's builders read their downloads with TensorFlow, and TFDS's own code needs
    ``importlib_resources`` on Python 3.11); no network while downloading (RuntimeError saying so); any
    other error (RuntimeError with TFDS's message). A prepared data set is read without TensorFlow.

    Example::

        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=2):
        ...     tfds_builder("mnist", None).name
        'mnist'
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            f"loading {name!r} needs tensorflow-datasets ({error}); install it with pip install tensorflow-datasets."
        ) from error
    where = data_dir or "TFDS's default data_dir ($TFDS_DATA_DIR, else ~/tensorflow_datasets)"
    builder = None
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
        # Before downloading, when TFDS's own preparation is to run (not a test double of it).
        genuine = type(builder).download_and_prepare.__module__.startswith("tensorflow_datasets.core")
        if genuine and not builder.is_prepared():
            _check_prerequisites(name, builder)
        builder.download_and_prepare()
    except ImportError:
        raise
    except Exception as error:
        if builder is not None:
            _check_prerequisites(name, builder)  # a missing module is the cause to name, whatever failed first
        first_line = (str(error).splitlines() or [""])[0]
        cause = f"{type(error).__name__}: {first_line}; the full error is above"
        if _is_network_error(error):
            raise RuntimeError(
                f"TFDS could not download {name!r} into {where}: no network access ({cause}). On a machine "
                f"without network, prepare it elsewhere (tfds.data_source({name!r}, data_dir=...)) and pass "
                "that folder as data_dir."
            ) from error
        raise RuntimeError(f"TFDS could not prepare {name!r} in {where} ({cause}).") from error
    return builder


# Where pip finds the modules that TFDS imports lazily while preparing a data set.
_PIP_NAMES = {"importlib_resources": "importlib_resources", "tensorflow": "tensorflow"}
_NETWORK_ERRORS = {
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "MaxRetryError",
    "NameResolutionError",
    "URLError",
    "gaierror",
    "DownloadError",
}


def missing_modules(builder: Any) -> list[str]:
    """The modules that preparing ``builder``'s data set would import and that do not import here.

    Checks, without network, ``importlib_resources`` (imported by TFDS's dataset builder on Python 3.11)
    and every module the builder's own code imports lazily (e.g. ``tensorflow`` for MNIST, CIFAR and
    Omniglot, which read their downloaded files with ``tf.io.gfile``).

    Example::

        >>> import tensorflow_datasets as tfds
        >>> "importlib_resources" in missing_modules(tfds.builder("mnist"))
        False
    """
    module = sys.modules.get(type(builder).__module__)
    lazy = [value.module_name for value in vars(module).values() if type(value).__name__ == "LazyModule"]
    missing = []
    for name in dict.fromkeys(["importlib_resources", *lazy]):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _check_prerequisites(name: str, builder: Any) -> None:
    missing = missing_modules(builder)
    if missing:
        packages = " ".join(_PIP_NAMES.get(module, module) for module in missing)
        raise ImportError(
            f"TFDS cannot prepare {name!r} on this install: preparing it imports {', '.join(missing)}, not "
            f"installed here. Install it (pip install {packages}; pip install 'jmeta[tfds]' installs what the "
            "TFDS route needs; preparing then downloads the data, which needs network access), or pass "
            "data_dir=... holding files that jmeta reads itself where the data set has them (Omniglot's "
            "official zips)."
        )


def _is_network_error(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in _NETWORK_ERRORS:
            return True
        error = error.__cause__ or error.__context__
    return False


def tfds_arrays(
    builder: Any,
    splits: Iterable[str],
    convert: Callable[[Mapping[str, Any]], Mapping[str, np.ndarray]],
    options: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Reads the examples of ``splits`` through ``convert`` into stacked arrays, concatenated over splits.

    ``convert`` maps one TFDS example to a dict of arrays. The result is cached, keyed by ``options``
    and the prepared TFDS files, when those files are on disk (they are not under
    ``tfds.testing.mock_data``).

    Example::

        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=3):
        ...     b = tfds_builder("mnist", None)
        ...     tfds_arrays(b, ["train"], lambda ex: {"y": ex["label"]}, {})["y"].shape
        (3,)
    """

    splits = list(splits)

    def build() -> dict[str, np.ndarray]:
        columns: dict[str, list[np.ndarray]] = {}
        for split in splits:
            for example in builder.as_data_source(split=split):
                for key, value in convert(example).items():
                    columns.setdefault(key, []).append(np.asarray(value))
        return {key: np.stack(values) for key, values in columns.items()}

    prepared = Path(builder.data_dir)
    if not prepared.is_dir():
        return build()
    key = {"version": str(builder.version), "splits": splits, **options}
    return cached_arrays(f"tfds-{builder.name}", key, [prepared], build)


def _image_and_label(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {"images": example["image"], "labels": example["label"]}


def _ten_class_splits(
    name: str, data_dir: str | Path | None, split: str, class_names: tuple[str, ...]
) -> dict[str, ClassDataset]:
    split = one_of("split", split, ("classes", "official", *registry.split_names(name)))
    builder = tfds_builder(name, data_dir)
    if split == "official":
        splits = {}
        for part in ("train", "test"):
            arrays = tfds_arrays(builder, [part], _image_and_label, {})
            splits[part] = ClassDataset.from_unsorted(arrays["images"], arrays["labels"], class_names)
        return splits
    arrays = tfds_arrays(builder, ["train", "test"], _image_and_label, {})
    assignment = _TEN_CLASS_SPLIT if split == "classes" else registry.assign_split(name, split, class_names)
    return split_by_class(arrays["images"], arrays["labels"], class_names, assignment)


def load_mnist(data_dir: str | Path | None = None, *, split: str = "classes") -> FewShotData:
    """MNIST digits (28x28x1 uint8) as few-shot data, through TFDS's ``mnist`` builder.

    ``split="classes"`` (default) pools TFDS's train and test examples and splits the classes: digits
    0-4 train, 5-9 test. ``split="official"`` keeps TFDS's train and test examples, all 10 classes each.

    Example::

        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=200):
        ...     load_mnist()["train"].num_classes
        5
    """
    splits = _ten_class_splits("mnist", data_dir, split, DIGIT_CLASSES)
    return FewShotData("mnist", splits, {"split": split, "source": "tfds mnist"})


def load_cifar10(data_dir: str | Path | None = None, *, split: str = "classes") -> FewShotData:
    """CIFAR-10 (32x32x3 uint8) as few-shot data, through TFDS's ``cifar10`` builder.

    ``split="classes"`` (default) pools TFDS's train and test examples and splits the classes: airplane,
    automobile, bird, cat, deer train; dog, frog, horse, ship, truck test. ``split="official"`` keeps
    TFDS's train and test examples, all 10 classes each.

    Example::

        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=200):
        ...     load_cifar10()["test"].class_names[0]
        'dog'
    """
    splits = _ten_class_splits("cifar10", data_dir, split, CIFAR10_CLASSES)
    return FewShotData("cifar10", splits, {"split": split, "source": "tfds cifar10"})


def _cifar100_pool(data_dir: str | Path | None) -> dict[str, np.ndarray]:
    builder = tfds_builder("cifar100", data_dir)
    return tfds_arrays(builder, ["train", "test"], _image_and_label, {})


def load_cifar_fs(data_dir: str | Path | None = None) -> FewShotData:
    """CIFAR-FS (Bertinetto et al., 2019): CIFAR-100's 100 classes split 64/16/20, 600 images each.

    Images are 32x32x3 uint8, pooled from TFDS ``cifar100``'s train and test examples.

    Example::

        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=1000):
        ...     [load_cifar_fs()[s].num_classes for s in ("train", "val", "test")]
        [64, 16, 20]
    """
    arrays = _cifar100_pool(data_dir)
    ids = {split: [CIFAR100_CLASSES.index(c) for c in names] for split, names in CIFAR_FS_CLASSES.items()}
    splits = split_by_class(arrays["images"], arrays["labels"], CIFAR100_CLASSES, ids)
    return FewShotData("cifar-fs", splits, {"source": "tfds cifar100 (train + test)"})


def load_fc100(data_dir: str | Path | None = None) -> FewShotData:
    """FC100 (Oreshkin et al., 2018): CIFAR-100 split by superclass, 12/4/4 (60/20/20 classes).

    Images are 32x32x3 uint8, pooled from TFDS ``cifar100``'s train and test examples; classes are the
    fine classes, grouped by split so that no superclass spans two splits.

    Example::

        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=1000):
        ...     [load_fc100()[s].num_classes for s in ("train", "val", "test")]
        [60, 20, 20]
    """
    arrays = _cifar100_pool(data_dir)
    ids = {
        split: [CIFAR100_CLASSES.index(c) for superclass in supers for c in CIFAR100_SUPERCLASSES[superclass]]
        for split, supers in FC100_SUPERCLASSES.items()
    }
    splits = split_by_class(arrays["images"], arrays["labels"], CIFAR100_CLASSES, ids)
    metadata = {"superclasses": dict(FC100_SUPERCLASSES), "source": "tfds cifar100 (train + test)"}
    return FewShotData("fc100", splits, metadata)


def _bundled_only(name: str, data_dir: str | Path | None) -> None:
    if data_dir is not None:
        raise ValueError(
            f"{name} is bundled with scikit-learn and reads no files; got data_dir={str(data_dir)!r}. "
            "Leave data_dir unset."
        )


def load_digits(data_dir: str | Path | None = None) -> FewShotData:
    """scikit-learn's bundled 8x8 digits (1797 images, about 180 per digit) as few-shot data.

    Images are 8x8x1 uint8, the 0..16 grey levels scaled to 0..255 (rounded). Classes are split like
    MNIST's: digits 0-4 train, 5-9 test.

    Example::

        >>> load_digits()["train"].input_shape
        (8, 8, 1)
    """
    _bundled_only("digits", data_dir)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    splits = split_by_class(images, bunch.target, DIGIT_CLASSES, _TEN_CLASS_SPLIT)
    metadata = {"source": "sklearn.datasets.load_digits", "grey levels": "0..16, scaled by 255/16"}
    return FewShotData("digits", splits, metadata)


def load_iris(data_dir: str | Path | None = None, *, test_per_class: int = 15, seed: int = 0) -> FewShotData:
    """scikit-learn's bundled iris (3 classes x 50 flowers) as tabular few-shot data.

    Iris is tabular, so its examples are float32 features of shape ``(4,)`` (sepal length, sepal width,
    petal length, petal width, in cm, unscaled), which the episode sampler uses as they are. With only 3
    classes there is no class split: ``train`` and ``test`` hold the same 3 classes with disjoint
    flowers, ``test_per_class`` of each class drawn at random (``seed``) for ``test``.

    Example::

        >>> load_iris()["test"].counts.tolist()
        [15, 15, 15]
    """
    _bundled_only("iris", data_dir)
    test_per_class = positive_int("test_per_class", test_per_class)
    seed = positive_int("seed", seed, allow_zero=True)
    if test_per_class >= 50:
        raise ValueError(
            f"test_per_class must leave iris's train split at least one of each class's 50 flowers "
            f"(so at most 49); got {test_per_class}."
        )
    from sklearn.datasets import load_iris as sklearn_iris

    bunch = sklearn_iris()
    features, labels = bunch.data.astype(np.float32), bunch.target
    rng = np.random.default_rng(seed)
    in_test = np.zeros(len(labels), bool)
    for label in range(len(IRIS_CLASSES)):
        in_test[rng.choice(np.flatnonzero(labels == label), test_per_class, replace=False)] = True
    splits = {
        name: ClassDataset.from_unsorted(features[mask], labels[mask], IRIS_CLASSES)
        for name, mask in (("train", ~in_test), ("test", in_test))
    }
    metadata = {"features": ("sepal length", "sepal width", "petal length", "petal width"), "units": "cm"}
    return FewShotData("iris", splits, {**metadata, "source": "sklearn.datasets.load_iris"})
