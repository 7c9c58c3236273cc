"""Export and reload: predictions survive the round trip for Conv4 (with BatchNorm state) and an MLP
adapted by MAML; missing, corrupt or mismatched artifacts are refused with errors that say why."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmeta
from jmeta.export import MANIFEST, VARIABLES, export_model, load_predictor, register_module
from jmeta.models.ports import IrisBaseModel003

IRIS = ("setosa", "versicolor", "virginica")


def random_like(tree, seed: int = 0):
    """Fills a variables tree with NumPy normals (faster than compiling model.init's random kernels)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(0.3 * rng.normal(size=a.shape), a.dtype), tree)


def conv4_variables(num_classes: int = 5):
    model = jmeta.from_linen(jmeta.models.Conv4(num_classes=num_classes, hidden=8), jnp.zeros((1, 28, 28, 1)))
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    return model, random_like(params), jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), state)


@pytest.fixture
def iris_export(tmp_path):
    model = jmeta.from_linen(IrisBaseModel003(hidden=16), jnp.zeros((1, 4)))
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    params = random_like(params)
    path = export_model(
        tmp_path / "iris", "iris_base_model_003", {"hidden": 16}, params, state, input_shape=(4,), class_names=IRIS
    )
    return model, params, state, path


def test_conv4_round_trip_gives_the_same_predictions(tmp_path):
    model, params, state = conv4_variables()
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(10, 28, 28, 1)), jnp.float32)
    before, _ = jax.jit(model.apply)(params, state, x)
    path = export_model(tmp_path / "conv4", "conv4", {"num_classes": 5, "hidden": 8}, params, state,
                        input_shape=(28, 28, 1))
    predictor = load_predictor(path)
    np.testing.assert_array_equal(predictor(x), before)
    np.testing.assert_array_equal(predictor.predict_classes(x), np.argmax(before, -1))
    jax.tree.map(np.testing.assert_array_equal, predictor.params, params)
    assert predictor.class_names == ("0", "1", "2", "3", "4")
    restored = jax.tree.leaves(predictor.state)
    assert restored and all(np.all(np.asarray(leaf) == 1.0) for leaf in restored)


def test_maml_adapted_mlp_round_trip(tmp_path):
    model = jmeta.from_linen(jmeta.models.MLP((16, 3)), jnp.zeros((1, 4)))
    learner = jmeta.maml(model, jmeta.losses.cross_entropy, inner_lr=0.1, steps=2)
    params, state = jax.eval_shape(model.init, jax.random.key(0))
    params = random_like(params, seed=2)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(9, 4)), jnp.float32)
    y = jnp.array([0, 1, 2] * 3)
    adapted = learner.adapt(params, state, x, y)
    path = export_model(tmp_path / "mlp", "mlp", {"features": [16, 3]}, adapted, state, input_shape=(4,),
                        class_names=IRIS)
    predictor = load_predictor(path)
    np.testing.assert_allclose(predictor(x), learner.predict(adapted, state, x)[0], rtol=1e-6, atol=1e-6)
    assert predictor.predict_names(x) == [IRIS[i] for i in np.argmax(model.apply(adapted, state, x)[0], -1)]
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["model"] == "mlp" and manifest["kwargs"] == {"features": [16, 3]} and manifest["input_shape"] == [4]


def test_missing_manifest_and_directory(iris_export, tmp_path):
    *_, path = iris_export
    (path / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing: .* is not an exported jmeta model"):
        load_predictor(path)
    with pytest.raises(FileNotFoundError, match="no exported model at .*: not a directory"):
        load_predictor(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda text: text[: len(text) // 2], ValueError, "is not valid JSON"),
        (lambda text: "[1, 2]", ValueError, "must hold a JSON object; got list"),
        (lambda text: json.dumps({**json.loads(text), "model": "gpt"}), ValueError, "registered name.*got 'gpt'"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "kwargs"}), ValueError,
         "lacks the fields kwargs"),
        (lambda text: json.dumps({**json.loads(text), "kwargs": {"hidden": 8}}), ValueError,
         r"do not fit the model: at \['params'\]\['Dense_0'\]\['bias'\] the model expects an array of shape \(8,\)"),
        (lambda text: json.dumps({**json.loads(text), "version": 99}), ValueError, "version 99"),
        (lambda text: json.dumps({**json.loads(text), "input_shape": 4}), ValueError, "input_shape must be a list"),
    ],
)
def test_corrupt_manifest(iris_export, edit, error, message):
    *_, path = iris_export
    (path / MANIFEST).write_text(edit((path / MANIFEST).read_text()))
    with pytest.raises(error, match=message):
        load_predictor(path)


def test_corrupt_or_missing_variables(iris_export):
    *_, path = iris_export
    payload = (path / VARIABLES).read_bytes()
    (path / VARIABLES).write_bytes(payload[:-10])
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        load_predictor(path)
    (path / VARIABLES).unlink()
    with pytest.raises(FileNotFoundError, match="variables.msgpack is missing"):
        load_predictor(path)


def test_export_argument_errors(iris_export, tmp_path):
    model, params, state, path = iris_export
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_model(path, "iris_base_model_003", {"hidden": 16}, params, state, input_shape=(4,))
    export_model(path, "iris_base_model_003", {"hidden": 16}, params, state, input_shape=(4,), overwrite=True)
    assert load_predictor(path).class_names == ("0", "1", "2")
    with pytest.raises(ValueError, match="do not fit the model"):
        export_model(tmp_path / "x", "iris_base_model_003", {"hidden": 32}, params, state, input_shape=(4,))
    with pytest.raises(ValueError, match="class_names must be 3 strings"):
        export_model(tmp_path / "x", "iris_base_model_003", {"hidden": 16}, params, state, input_shape=(4,),
                     class_names=("a", "b"))
    with pytest.raises(ValueError, match="JSON values only"):
        export_model(tmp_path / "x", "iris_base_model_003", {"hidden": object()}, params, state, input_shape=(4,))
    with pytest.raises(ValueError, match="do not construct model"):
        export_model(tmp_path / "x", "iris_base_model_003", {"width": 16}, params, state, input_shape=(4,))
    with pytest.raises(ValueError, match="already registered"):
        register_module("mlp", IrisBaseModel003)
    with pytest.raises(ValueError, match=r"x must have shape \(points, 4\)"):
        load_predictor(path)(np.zeros((2, 5)))
    assert not (tmp_path / "x").exists()


def test_jmeta_predict_prints_the_class_names_of_an_exported_model(iris_export, tmp_path, capsys):
    from jmeta.cli import main

    model, params, state, path = iris_export
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(path), str(tmp_path / "x.npy"), "--outputs", str(tmp_path / "y.npy")]) == 0
    expected_logits = np.asarray(model.apply(params, state, jnp.asarray(x))[0])
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected_logits, rtol=1e-5, atol=1e-6)
    assert capsys.readouterr().out.split() == [IRIS[i] for i in expected_logits.argmax(-1)]
    assert main(["predict", str(tmp_path / "missing"), str(tmp_path / "x.npy")]) == 2
