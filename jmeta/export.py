"""Deployment: a trained, adapted or distilled model as a self-contained directory, and a predictor from it.

An exported model is a directory holding two files:

* ``manifest.json``: the format and its version, the model as a *registered name* with its constructor
  keyword arguments (JSON values only: no code is stored or executed), the input shape of one example,
  the class names, and the SHA-256 of the variables file;
* ``variables.msgpack``: the parameters and model state (e.g. BatchNorm statistics), in Flax's msgpack
  serialisation (``flax.serialization.to_bytes``), which stores arrays only.

Loading rebuilds the module from the registry (:data:`MODULES`, extended with :func:`register_module`),
initialises it abstractly to learn the expected structure and shapes, and restores the variables into it,
so a file that does not fit the manifest's model is refused.

Example::

    >>> import jax, jax.numpy as jnp, jmeta
    >>> model = jmeta.from_linen(jmeta.models.MLP((8, 3)), jnp.zeros((1, 4)))
    >>> params, state = model.init(jax.random.key(0))
    >>> path = export_model("/tmp/iris-mlp", "mlp", {"features": [8, 3]}, params, state,  # doctest: +SKIP
    ...                     input_shape=(4,), class_names=("setosa", "versicolor", "virginica"))
    >>> predictor = load_predictor(path)  # doctest: +SKIP
    >>> predictor.predict_names(jnp.ones((2, 4)))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, serialization

from jmeta.models import MLP, Conv4, ResNet12
from jmeta.models.ports import (
    ImageMLP000,
    IrisBaseModel003,
    LearningCurveLSTM003,
    SharedTrunk002,
    SourceMLP004,
)
from jmeta.nn import PyTree, from_linen
from jmeta.registry import Registry
from jmeta.validation import positive_int

FORMAT = "jmeta-export"
VERSION = 1
MANIFEST = "manifest.json"
VARIABLES = "variables.msgpack"
REQUIRED_FIELDS = ("format", "version", "model", "kwargs", "input_shape", "class_names", "sha256")

ModuleFactory = Callable[..., linen.Module]

# Flax module factories by name (the name and keyword arguments an artifact records), a jmeta.registry.Registry.
MODULES = Registry("exported module", register_with="jmeta.export.register_module")


def register_module(name: str, factory: ModuleFactory | None = None, *, replace: bool = False) -> Any:
    """Makes ``factory(**kwargs) -> flax.linen.Module`` exportable and loadable under ``name`` (usable as a
    decorator). Registering a taken name for another factory raises ValueError unless ``replace=True``.

    Example::

        >>> from flax import linen
        >>> _ = register_module("dense", linen.Dense)
        >>> "dense" in MODULES
        True
    """
    return MODULES.register(name, factory, replace=replace)


for _name, _factory in {
    "mlp": MLP,
    "conv4": Conv4,
    "resnet12": ResNet12,
    "source_mlp_004": SourceMLP004,
    "image_mlp_000": ImageMLP000,
    "shared_trunk_002": SharedTrunk002,
    "iris_base_model_003": IrisBaseModel003,
    "learning_curve_lstm_003": LearningCurveLSTM003,
}.items():
    register_module(_name, _factory)


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A loaded model: ``predictor(x) -> outputs``, ``predict_classes(x) -> indices`` and
    ``predict_names(x) -> class names``; ``manifest`` is the exported manifest.

    ``x`` is a batch ``(points, *input_shape)``; the forward pass is jit-compiled. A model whose
    BatchNorm uses batch statistics (jmeta's default, ``use_running_average=False``) normalises with the
    statistics of the batch given, as during adaptation; export it with ``use_running_average=True``
    for per-point predictions.

    Example::

        >>> predictor = load_predictor("/tmp/iris-mlp")  # doctest: +SKIP
        >>> predictor.predict_classes(np.zeros((1, 4)))  # doctest: +SKIP
        array([2])
    """

    forward: Callable[[PyTree, PyTree, jax.Array], jax.Array]
    params: PyTree
    state: PyTree
    manifest: Mapping[str, Any]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names of the model's outputs, in output order."""
        return tuple(self.manifest["class_names"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input example."""
        return tuple(self.manifest["input_shape"])

    def __call__(self, x: Any) -> np.ndarray:
        x = jnp.asarray(x, jnp.float32)
        if x.shape[1:] != self.input_shape:
            expected = ", ".join(map(str, ("points", *self.input_shape)))
            raise ValueError(f"x must have shape ({expected}) for this model; got {x.shape}.")
        return np.asarray(self.forward(self.params, self.state, x))

    def predict_classes(self, x: Any) -> np.ndarray:
        """The index of the highest output of every point."""
        return np.argmax(self(x), axis=-1)

    def predict_names(self, x: Any) -> list[str]:
        """The class name of the highest output of every point."""
        return [self.class_names[i] for i in self.predict_classes(x)]


def export_model(
    path: str | Path,
    name: str,
    kwargs: Mapping[str, Any],
    params: PyTree,
    state: PyTree,
    *,
    input_shape: Sequence[int],
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the model ``MODULES[name](**kwargs)`` with ``params`` and ``state`` to the directory ``path``.

    ``params`` and ``state`` are what ``jmeta.from_linen(module, x).init`` returns, or adapted or
    distilled versions of them (e.g. ``learner.adapt(...)`` of ``jmeta.maml``); they must match the
    module's variables in structure and shapes. ``kwargs`` must be JSON values. ``class_names`` (one
    per output; default ``"0"``, ``"1"``, ...) names the outputs. The directory is written beside its
    final place and renamed into it, so a crash never leaves half an export; an existing ``path`` is
    replaced only with ``overwrite=True``. Returns the directory.

    Example::

        >>> import jax, jax.numpy as jnp, jmeta
        >>> model = jmeta.from_linen(jmeta.models.Conv4(num_classes=5), jnp.zeros((1, 28, 28, 1)))
        >>> params, state = model.init(jax.random.key(0))  # doctest: +SKIP
        >>> export_model("/tmp/conv4", "conv4", {"num_classes": 5}, params, state,  # doctest: +SKIP
        ...              input_shape=(28, 28, 1))
    """
    module, kwargs = _build(name, kwargs)
    input_shape = tuple(positive_int("input_shape entries", size) for size in input_shape)
    expected, outputs = _abstract(module, input_shape)
    _check_matches(expected, {"params": params, "state": state}, "the given params and state")
    class_names = _class_names(class_names, outputs)
    payload = serialization.to_bytes({"params": params, "state": state})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "kwargs": kwargs,
        "input_shape": list(input_shape),
        "class_names": list(class_names),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    (staging / VARIABLES).write_bytes(payload)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if path.exists():
        shutil.rmtree(path)
    os.replace(staging, path)
    return path


def load_predictor(path: str | Path) -> Predictor:
    """Loads a directory written by :func:`export_model` as a :class:`Predictor`.

    Raises FileNotFoundError when the directory, its manifest or its variables are missing, and
    ValueError, saying what is wrong, when the manifest is not valid JSON, lacks a field, names an
    unregistered model, or when the variables are corrupt or do not fit the model.

    Example::

        >>> predictor = load_predictor("/tmp/conv4")  # doctest: +SKIP
        >>> predictor(np.zeros((2, 28, 28, 1))).shape  # doctest: +SKIP
        (2, 5)
    """
    path = Path(path)
    manifest = _read_manifest(path)
    module, _ = _build(manifest["model"], manifest["kwargs"])
    if not isinstance(manifest["input_shape"], list):
        raise ValueError(f"{path / MANIFEST}: input_shape must be a list of sizes; got {manifest['input_shape']!r}.")
    input_shape = tuple(positive_int("input_shape entries", size) for size in manifest["input_shape"])
    expected, outputs = _abstract(module, input_shape)
    _class_names(manifest["class_names"], outputs)
    variables_file = path / VARIABLES
    if not variables_file.is_file():
        raise FileNotFoundError(f"{variables_file} is missing; the export is incomplete: export the model again.")
    payload = variables_file.read_bytes()
    if hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
        raise ValueError(
            f"{variables_file} does not match the SHA-256 in {path / MANIFEST}: the file is corrupt or was "
            "replaced; export the model again."
        )
    try:
        variables = serialization.msgpack_restore(payload)
    except Exception as error:  # msgpack raises several unrelated types on bad input
        raise ValueError(f"{variables_file} is not a Flax msgpack file ({error}); export the model again.") from error
    variables = jax.tree.map(jnp.asarray, variables)
    variables = {"params": variables.get("params", {}), "state": variables.get("state", {})}
    _check_matches(expected, variables, str(variables_file))
    model = from_linen(module, jnp.zeros((1, *input_shape), jnp.float32))
    forward = jax.jit(lambda params, state, x: model.apply(params, state, x)[0])
    return Predictor(forward, variables["params"], variables["state"], manifest)


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise FileNotFoundError(f"no exported model at {path}: not a directory. Export one with export_model.")
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise FileNotFoundError(
            f"{manifest_file} is missing: {path} is not an exported jmeta model (export_model writes "
            f"{MANIFEST} and {VARIABLES})."
        )
    try:
        manifest = json.loads(manifest_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{manifest_file} is not valid JSON ({error}); export the model again.") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_file} must hold a JSON object; got {type(manifest).__name__}.")
    missing = [field for field in REQUIRED_FIELDS if field not in manifest]
    if missing:
        raise ValueError(f"{manifest_file} lacks the fields {', '.join(missing)}; export the model again.")
    if manifest["format"] != FORMAT or manifest["version"] != VERSION:
        raise ValueError(
            f"{manifest_file} is format {manifest['format']!r} version {manifest['version']!r}; this jmeta "
            f"reads {FORMAT!r} version {VERSION}."
        )
    return manifest


def _build(name: Any, kwargs: Any) -> tuple[linen.Module, dict[str, Any]]:
    """The module ``MODULES[name](**kwargs)``, and ``kwargs`` as they read back from JSON."""
    if name not in MODULES:
        raise ValueError(
            f"model must be a registered name, one of {', '.join(map(repr, sorted(MODULES)))}; got {name!r}. "
            "Register your own with jmeta.export.register_module(name, factory) first."
        )
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"kwargs must be a mapping of constructor arguments; got {type(kwargs).__name__}.")
    try:
        kwargs = json.loads(json.dumps(dict(kwargs)))
    except (TypeError, ValueError) as error:
        raise ValueError(f"kwargs must hold JSON values only (numbers, strings, lists, dicts): {error}.") from None
    try:
        module = MODULES[name].builder(**kwargs)
    except TypeError as error:
        raise ValueError(f"kwargs {kwargs} do not construct model {name!r}: {error}.") from None
    return module, kwargs


def _abstract(module: linen.Module, input_shape: tuple[int, ...]) -> tuple[PyTree, int | None]:
    """The shapes of the module's ``{"params", "state"}`` and its number of outputs (None if not 2-D)."""
    model = from_linen(module, jnp.zeros((1, *input_shape), jnp.float32))

    def init_and_apply(key: jax.Array) -> tuple[dict[str, PyTree], jax.Array]:
        params, state = model.init(key)
        return {"params": params, "state": state}, model.apply(params, state, jnp.zeros((1, *input_shape)))[0]

    variables, y = jax.eval_shape(init_and_apply, jax.random.key(0))
    return variables, (y.shape[-1] if y.ndim == 2 else None)


def _class_names(class_names: Sequence[str] | None, outputs: int | None) -> tuple[str, ...]:
    if class_names is None:
        return tuple(str(i) for i in range(outputs or 0))
    names = tuple(class_names)
    if not all(isinstance(name, str) for name in names) or (outputs is not None and len(names) != outputs):
        raise ValueError(f"class_names must be {outputs} strings, one per output of the model; got {names!r}.")
    return names


def _check_matches(expected: PyTree, given: PyTree, what: str) -> None:
    """Raises naming the first path whose presence or shape differs between ``expected`` and ``given``."""
    want = {jax.tree_util.keystr(p): leaf.shape for p, leaf in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(p): np.shape(leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(given)}
    for key in sorted(set(want) | set(got)):
        if want.get(key) != got.get(key):
            raise ValueError(
                f"{what} do not fit the model: at {key} the model expects "
                f"{_describe(want.get(key))} and got {_describe(got.get(key))}."
            )


def _describe(shape: tuple[int, ...] | None) -> str:
    return "nothing" if shape is None else f"an array of shape {shape}"
