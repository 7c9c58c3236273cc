"""Containers for few-shot data: one split's examples grouped by class, and the splits of a data set.

A :class:`ClassDataset` holds a split on the host as NumPy arrays, sorted by class, and builds the
device-side arrays that :func:`jmeta.tasks.episodes.make_episode_sampler` draws episodes from. A
:class:`FewShotData` holds the splits of one data set by name (``"train"``, ``"val"``, ``"test"``) with
a metadata dict.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class ClassArrays(NamedTuple):
    """A split's device-side arrays for episode sampling.

    ``images`` holds every example, ``(N, *input_shape)``, in the dataset's dtype (uint8 or float32);
    row ``c`` of ``index`` lists the example indices of class ``c``, padded with ``-1`` up to the largest
    class's count, so classes with unequal counts share one rectangular table.

    Example::

        >>> import numpy as np
        >>> ds = ClassDataset(np.zeros((3, 2), np.float32), np.array([0, 0, 1]), ("a", "b"))
        >>> ds.device_arrays().index.tolist()
        [[0, 1], [2, -1]]
    """

    images: jax.Array
    index: jax.Array


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False)
class ClassDataset:
    """One few-shot split: examples sorted by class, with the class names.

    ``images`` is either uint8 images ``(N, H, W, C)`` with values 0..255 (the sampler scales them to
    float32 in [0, 1]) or float32 features ``(N, *feature_shape)`` used as they are (e.g. iris's
    ``(N, 4)`` measurements). ``labels`` (int32, ``(N,)``) is sorted, each in ``0..len(class_names)-1``,
    and every class has at least one example; classes may have unequal counts. ``offsets`` and
    ``counts`` (int64, one per class) are derived: class ``c`` is ``images[offsets[c]:offsets[c] +
    counts[c]]``. The arrays are read-only views.

    Example::

        >>> import numpy as np
        >>> ds = ClassDataset(np.zeros((5, 28, 28, 1), np.uint8), np.array([0, 0, 0, 1, 1]), ("a", "b"))
        >>> ds.counts.tolist(), ds.offsets.tolist()
        ([3, 2], [0, 3])
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    offsets: np.ndarray = dataclasses.field(init=False)
    counts: np.ndarray = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.dtype == np.uint8:
            if images.ndim != 4:
                raise ValueError(
                    f"images of dtype uint8 must have shape (N, H, W, C); got shape {images.shape}. "
                    "Add a channel axis for grey images (images[..., None]), or pass float32 features."
                )
        elif images.dtype == np.float32:
            if images.ndim < 2:
                raise ValueError(
                    f"images of dtype float32 must have shape (N, *feature_shape); got shape {images.shape}. "
                    "Give every example its own row, e.g. features[:, None] for one feature."
                )
        else:
            raise ValueError(
                f"images must be uint8 images (N, H, W, C) or float32 features (N, ...); got dtype "
                f"{images.dtype}. Convert with images.astype(np.uint8) (values 0..255) or np.float32."
            )
        labels = np.asarray(self.labels)
        if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be integers of shape ({images.shape[0]},), one per image; got "
                f"{labels.dtype} of shape {labels.shape}."
            )
        names = tuple(self.class_names)
        if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
            raise ValueError(f"class_names must be distinct strings; got {len(names)} names {names[:10]}...")
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(
                f"labels must lie in 0..{len(names) - 1} (one per class name); got values from "
                f"{labels.min()} to {labels.max()}."
            )
        if np.any(np.diff(labels) < 0):
            raise ValueError(
                "labels must be sorted so each class's examples are contiguous; sort first, e.g. "
                "order = np.argsort(labels, kind='stable') then images[order], labels[order]."
            )
        counts = np.bincount(labels, minlength=len(names))
        if len(names) == 0 or np.any(counts == 0):
            empty = [names[c] for c in np.flatnonzero(counts == 0)[:5]]
            raise ValueError(
                f"every class needs at least one example; got {len(names)} classes, these without "
                f"examples: {empty}. Drop them from class_names and renumber the labels."
            )
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        object.__setattr__(self, "images", _read_only(images))
        object.__setattr__(self, "labels", _read_only(labels.astype(np.int32)))
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "offsets", _read_only(offsets))
        object.__setattr__(self, "counts", _read_only(counts))

    @classmethod
    def from_unsorted(
        cls, images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
    ) -> ClassDataset:
        """Builds a dataset from examples in any order, sorting them by label (stably).

        Example::

            >>> import numpy as np
            >>> ds = ClassDataset.from_unsorted(np.arange(3, dtype=np.float32)[:, None], [1, 0, 1], "ab")
            >>> ds.images[:, 0].tolist()
            [1.0, 0.0, 2.0]
        """
        labels = np.asarray(labels)
        order = np.argsort(labels, kind="stable")
        return cls(np.asarray(images)[order], labels[order], tuple(class_names))

    @property
    def num_classes(self) -> int:
        """The number of classes.

        Example::

            >>> import numpy as np
            >>> ClassDataset(np.zeros((2, 1), np.float32), np.array([0, 1]), ("a", "b")).num_classes
            2
        """
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(28, 28, 1)``.

        Example::

            >>> import numpy as np
            >>> ClassDataset(np.zeros((1, 8, 8, 1), np.uint8), np.array([0]), ("a",)).input_shape
            (8, 8, 1)
        """
        return tuple(self.images.shape[1:])

    def summary(self) -> str:
        """One line: classes, examples per class, total examples, and the shape and dtype of one.

        Example::

            >>> import numpy as np
            >>> ClassDataset(np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 0, 1, 1]), "ab").summary()
            '2 classes x 2 examples = 4 examples of 28x28x1 uint8'
        """
        low, high = int(self.counts.min()), int(self.counts.max())
        per_class = f"{low}" if low == high else f"{low} to {high}"
        shape = "x".join(map(str, self.input_shape))
        return (
            f"{self.num_classes} classes x {per_class} examples = {len(self.labels)} examples of "
            f"{shape} {self.images.dtype}"
        )

    def check_finite(self, where: str = "the dataset") -> None:
        """Raises ValueError when an example is NaN or infinite anywhere, naming ``where`` (e.g. the data set
        and split), the first such example's index in ``images``, its class and its value, and how many there
        are. uint8 images are always finite; float32 features are checked (one pass over them).

        A non-finite input makes every task that draws it diverge, and a layer such as XLA:CPU's fused ReLU
        may turn the NaN into a finite number in some programs and not in others, so such data are refused
        where they enter: :class:`FewShotData` checks every split and
        :func:`jmeta.tasks.episodes.make_episode_sampler` the split it samples.

        Example::

            >>> import numpy as np
            >>> ds = ClassDataset(np.array([[0.0], [1.0], [np.nan]], np.float32), np.array([0, 1, 1]), ("a", "b"))
            >>> ds.check_finite("toy's train split")
            Traceback (most recent call last):
            ValueError: toy's train split holds a non-finite example: images[2] (example 1 of class 'b') is nan \
at index (0,); 1 of its 3 examples are not finite. Fix or drop them before building the data (e.g. keep = \
np.isfinite(x).reshape(len(x), -1).all(axis=1)); a NaN input would make the tasks that draw it diverge.
        """
        if self.images.dtype == np.uint8:
            return
        finite = np.isfinite(self.images).reshape(len(self.images), -1).all(axis=1)
        if finite.all():
            return
        bad = np.flatnonzero(~finite)
        first, label = int(bad[0]), int(self.labels[bad[0]])
        position = np.argwhere(~np.isfinite(self.images[first]))[0]
        raise ValueError(
            f"{where} holds a non-finite example: images[{first}] (example {first - int(self.offsets[label])} of "
            f"class {self.class_names[label]!r}) is {self.images[first][tuple(position)]} at index "
            f"{tuple(int(i) for i in position)}; {len(bad)} of its {len(finite)} examples are not finite. Fix or "
            "drop them before building the data (e.g. keep = np.isfinite(x).reshape(len(x), -1).all(axis=1)); a "
            "NaN input would make the tasks that draw it diverge."
        )

    def device_arrays(self) -> ClassArrays:
        """Copies the examples and a padded per-class index table to the default device.

        Example::

            >>> import numpy as np
            >>> ds = ClassDataset(np.zeros((3, 1), np.float32), np.array([0, 1, 1]), ("a", "b"))
            >>> ds.device_arrays().index.shape
            (2, 2)
        """
        position = np.arange(len(self.labels)) - self.offsets[self.labels]
        index = np.full((self.num_classes, int(self.counts.max())), -1, np.int32)
        index[self.labels, position] = np.arange(len(self.labels), dtype=np.int32)
        return ClassArrays(jnp.asarray(self.images), jnp.asarray(index))


@dataclasses.dataclass(frozen=True, eq=False)
class FewShotData:
    """A data set's few-shot splits by name, with metadata (e.g. Omniglot's alphabets per split).

    Every split's examples must be finite (:meth:`ClassDataset.check_finite`): a ValueError names the data
    set, the split and the first non-finite example, so a NaN in the data is found when they are loaded.

    Metadata values that are dicts keyed by split name are shown per split by :meth:`summary`.

    Example::

        >>> import numpy as np
        >>> ds = ClassDataset(np.zeros((2, 1), np.float32), np.array([0, 1]), ("a", "b"))
        >>> data = FewShotData("toy", {"train": ds})
        >>> data["train"].num_classes
        2
    """

    name: str
    splits: Mapping[str, ClassDataset]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, dataset in self.splits.items():
            if not isinstance(dataset, ClassDataset):
                raise TypeError(f"splits[{split!r}] must be a ClassDataset; got {type(dataset).__name__}.")
            dataset.check_finite(f"data set {self.name!r}, split {split!r},")
        object.__setattr__(self, "splits", types.MappingProxyType(dict(self.splits)))
        object.__setattr__(self, "metadata", types.MappingProxyType(dict(self.metadata)))

    def __getitem__(self, split: str) -> ClassDataset:
        if split not in self.splits:
            raise KeyError(
                f"{self.name} has no split {split!r}; its splits are {', '.join(map(repr, self.splits))}."
            )
        return self.splits[split]

    def summary(self) -> str:
        """Multi-line text: each split's classes and examples, then metadata.

        Example::

            >>> import numpy as np
            >>> ds = ClassDataset(np.zeros((2, 1), np.float32), np.array([0, 1]), ("a", "b"))
            >>> print(FewShotData("toy", {"train": ds}, {"source": "made up"}).summary())
            toy
              train: 2 classes x 1 examples = 2 examples of 1 float32
              source: made up
        """
        per_split = {key: value for key, value in self.metadata.items() if _is_per_split(value, self.splits)}
        lines = [self.name]
        for split, dataset in self.splits.items():
            lines.append(f"  {split}: {dataset.summary()}")
            for key, value in per_split.items():
                if split in value:
                    lines.append(f"    {key}: {_describe(value[split])}")
        for key, value in self.metadata.items():
            if key not in per_split:
                lines.append(f"  {key}: {_describe(value)}")
        return "\n".join(lines)


def _is_per_split(value: Any, splits: Mapping[str, ClassDataset]) -> bool:
    return isinstance(value, Mapping) and bool(value) and set(value) <= set(splits)


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list) and len(value) > 6:
        return f"{len(value)} ({', '.join(map(str, value[:3]))}, ...)"
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value)) if value else "none"
    return str(value)
