"""The data faults of issue 16: non-finite data found where they enter (a data set when loaded, a sampler's
tasks before a program is compiled on them), a diverged count that does not depend on the evaluation's
batch size, and the leftovers: 1-bit PNG arrays, empty class folders, loader options on the command line,
image queries in ``jmeta predict``, errors naming the config key, the augmentation's own key, and ``jmeta
eval``/``plot`` on a program's workdir."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from test_runs import DIGITS_PROTONET

import jmeta
import jmeta.data
import jmeta.experiment
import jmeta.population
from jmeta.cli import main
from jmeta.data import ClassDataset, FewShotData, folder, from_folder, register_dataset
from jmeta.evaluation import per_task_metrics
from jmeta.experiment import build, few_shot_config, load_config
from jmeta.tasks.episodes import augment_keys, episode_keys, make_episode_sampler
from jmeta.train import train_and_evaluate

REAL_OMNIGLOT = Path(os.environ.get("JMETA_TEST_OMNIGLOT", REPO / ".." / "shared" / "data" / "omniglot"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JMETA_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------------------
# A. Non-finite data


def _features_with_nan() -> tuple[np.ndarray, np.ndarray]:
    """4 classes x 6 examples of 3 features; class 1's example 2 of the test classes (1, 3) holds a NaN."""
    x = np.random.default_rng(0).normal(size=(24, 3)).astype(np.float32)
    y = np.repeat(np.arange(4), 6)
    x[6 * 3 + 2, 1] = np.nan  # class 3, its example 2
    return x, y


def load_nan_toy(data_dir=None, *, seed: int = 0) -> FewShotData:
    x, y = _features_with_nan()
    names = ("c0", "c1", "c2", "c3")
    splits = jmeta.data.tfds_sets.split_by_class(x, y, names, {"train": [0, 2], "test": [1, 3]})
    return FewShotData("nan-toy", splits)


def test_a_nan_example_is_refused_when_its_data_set_is_loaded_naming_the_set_split_and_example(
    tmp_path, capsys, monkeypatch
):
    register_dataset("nan-toy", load_nan_toy, replace=True)
    # In the test split, classes c1 then c3 (6 examples each): c3's example 2 is row 6 + 2 = 8.
    message = (
        r"data set 'nan-toy', split 'test', holds a non-finite example: images\[8\] \(example 2 of class 'c3'\) "
        r"is nan at index \(1,\); 1 of its 12 examples are not finite"
    )
    with pytest.raises(ValueError, match=message):
        jmeta.data.load("nan-toy")
    assert main(["data", "nan-toy"]) == 2
    assert re.search(message, capsys.readouterr().err)
    # jmeta train stops at the data, before a workdir is written or anything compiled.
    config = tmp_path / "nan_toy.py"
    config.write_text(
        "from jmeta.experiment import few_shot_config\n\n\ndef get_config():\n"
        "    config = few_shot_config('nan-toy', 'protonet', ways=2, shots=1)\n"
        "    del config.hidden, config.downsample, config.pool\n"
        "    config.split, config.model, config.hidden, config.val_every = '', 'mlp', (8, 4), 0\n"
        "    return config\n"
    )
    assert main(["train", str(config), "--workdir", str(tmp_path / "run")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_make_episode_sampler_refuses_a_class_dataset_with_an_infinite_example():
    x = np.zeros((6, 2), np.float32)
    x[4, 0] = -np.inf
    dataset = ClassDataset(x, np.array([0, 0, 0, 1, 1, 1]), ("a", "b"))
    with pytest.raises(ValueError, match=r"my features holds a non-finite example: images\[4\] \(example 1 of class "
                                         r"'b'\) is -inf at index \(0,\)"):
        make_episode_sampler(dataset, 2, 1, 1, name="my features")


def _nan_when_first_x_is_high(base):
    """A sampler of ``base``'s tasks that puts a NaN into query_x[2] of every task whose first support x > 3."""

    def sample(key, n):
        tasks = base(key, n)
        high = tasks.support_x[:, 0, 0] > 3
        return tasks._replace(query_x=tasks.query_x.at[:, 2, 0].set(jnp.where(high, jnp.nan, tasks.query_x[:, 2, 0])))

    return jax.tree_util.Partial(sample)


def test_evaluate_refuses_a_user_samplers_nan_task_naming_it_and_checks_the_first_batch_before_compiling():
    model = jmeta.from_linen(jmeta.models.MLP((8, 1)), jnp.zeros((1, 1)))
    learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    sample = _nan_when_first_x_is_high(jmeta.tasks.SinusoidSampler(shots=5, queries=10))
    key = jax.random.key(4)
    # Task i is drawn alone from fold_in(key, i): the first with a NaN, found independently.
    first_x = [float(sample(jax.random.fold_in(key, i), 1).support_x[0, 0, 0]) for i in range(40)]
    bad = next(i for i, x in enumerate(first_x) if x > 3)
    assert bad >= 4  # in a later batch than the first, so the check runs on every batch
    with pytest.raises(ValueError, match=rf"sample_tasks drew a task with a non-finite input: task {bad}'s "
                                         r"query_x\[2\] holds nan at index \(0,\)"):
        jmeta.evaluate(learner, params, state, sample, key, num_tasks=40, steps=(1,), batch_size=4)

    def never_compiled(*args, **kwargs):
        raise AssertionError("the learner was traced before the tasks were checked")

    all_nan = jax.tree_util.Partial(lambda k, n: jax.tree.map(lambda a: a * jnp.nan, sample(k, n)))
    with pytest.raises(ValueError, match="task 0's support_x"):
        jmeta.evaluate(learner._replace(task_loss=never_compiled), params, state, all_nan, key, num_tasks=4, steps=(1,))


def test_meta_training_refuses_a_nan_first_batch_before_compiling(tmp_path):
    config = load_config(str(REPO / "experiments" / "sinusoid_maml.py"), ["steps=2", "log_every=1", "val_every=0"])
    sinusoid = jmeta.registry.TASK_FAMILIES["sinusoid"]

    def nan_family(config):
        family = sinusoid.builder(config)
        return family._replace(sample_train=_nan_when_first_x_is_high(family.sample_train))

    jmeta.register_task_family("nan-sinusoid", nan_family, **sinusoid.properties, replace=True)
    config.task = "nan-sinusoid"
    with pytest.raises(ValueError, match=r"the meta-training sampler \(step 1\) drew a task with a non-finite input: "
                                         r"task \d+'s query_x\[2\] holds nan"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # not one step was run


def test_the_diverged_count_and_every_task_value_do_not_depend_on_the_batch_size():
    model = jmeta.from_linen(jmeta.models.MLP((16, 16, 1)), jnp.zeros((1, 1)))
    learner = jmeta.maml(model, jmeta.losses.mse, inner_lr=0.5)  # a large step: many inner loops blow up
    params, state = learner.init(jax.random.key(0))
    sample = jmeta.tasks.SinusoidSampler(shots=5, queries=10)
    options = dict(num_tasks=100, steps=(5,))
    small = per_task_metrics(learner, params, state, sample, jax.random.key(1), batch_size=16, **options)[5]["loss"]
    large = per_task_metrics(learner, params, state, sample, jax.random.key(1), batch_size=100, **options)[5]["loss"]
    diverged = ~np.isfinite(small)
    assert 10 < diverged.sum() < 90  # the tasks legitimately diverge, some of them
    np.testing.assert_array_equal(diverged, ~np.isfinite(large))
    np.testing.assert_allclose(small[~diverged], large[~diverged], rtol=1e-6)
    for size in (16, 100):
        estimate = jmeta.evaluate(learner, params, state, sample, jax.random.key(1), batch_size=size, **options)[5]
        assert estimate["loss"].diverged == diverged.sum()


# ---------------------------------------------------------------------------------------------------------
# B. Leftovers


def _one_bit_png(path: Path) -> Path:
    """A 1-bit drawing as Omniglot's PNGs are (mode "1": white paper, a black cross), 20x20."""
    image = Image.new("1", (20, 20), 1)
    for i in range(20):
        image.putpixel((i, i), 0)
        image.putpixel((19 - i, i), 0)
    image.save(path)
    return path


def test_preprocess_reads_the_boolean_array_of_a_1_bit_png_as_0_and_255(tmp_path):
    path = _one_bit_png(tmp_path / "drawing.png")
    array = np.asarray(Image.open(path))
    assert array.dtype == np.bool_ and array.shape == (20, 20)
    # At the PNG's own size nothing is resized: white (True) is 255, and Omniglot's inversion makes ink 255.
    omniglot = jmeta.data.preprocess("omniglot", array[None], image_size=20)
    np.testing.assert_array_equal(omniglot[0, ..., 0], np.where(array, 0, 255))
    np.testing.assert_array_equal(folder.preprocess(array[None], image_size=20)[0, ..., 0], np.where(array, 255, 0))
    # Resized, the array and the file give the same image.
    np.testing.assert_array_equal(
        jmeta.data.preprocess("omniglot", [array], image_size=28), jmeta.data.preprocess("omniglot", path)
    )
    np.testing.assert_array_equal(folder.preprocess(array[None], image_size=8), folder.preprocess(path, image_size=8))


def test_preprocess_of_a_real_omniglot_png_as_an_array_equals_that_of_its_file(tmp_path):
    import zipfile

    archive = REAL_OMNIGLOT / "images_background.zip"
    if not archive.is_file():
        pytest.skip(f"the real Omniglot zips are not in {REAL_OMNIGLOT}")
    with zipfile.ZipFile(archive) as opened:
        member = next(name for name in opened.namelist() if name.endswith(".png"))
        path = tmp_path / "drawing.png"
        path.write_bytes(opened.read(member))
    array = np.asarray(Image.open(path))
    assert array.dtype == np.bool_
    np.testing.assert_array_equal(jmeta.data.preprocess("omniglot", [array]), jmeta.data.preprocess("omniglot", path))


def _image_folder(root: Path, classes: list[str]) -> Path:
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(3):
            Image.new("RGB", (12, 10), (40 * i, 10 * j, 0)).save(root / name / f"{j}.png")
    return root


def test_empty_class_folders_are_counted_in_the_summary(tmp_path):
    root = _image_folder(tmp_path / "flat", ["ants", "bees", "cats", "dogs"])
    (root / "zebras").mkdir()
    (root / "zebras" / "notes.txt").write_text("to do")  # a folder of no image is still empty
    (root / ".git").mkdir()  # hidden: not a class folder
    data = from_folder(root, image_size=8, fractions=(0.5, 0.25, 0.25))
    assert sum(data[s].num_classes for s in data.splits) == 4
    assert "  skipped folders: 1 empty class folder skipped: zebras" in data.summary().splitlines()
    assert from_folder(root.parent / "flat", image_size=8).metadata["skipped files"].startswith("1 (1 not an image")

    groups = _image_folder(tmp_path / "groups", ["Latin/c1", "Latin/c2", "Runic/c1", "Runic/c2"])
    (groups / "Latin" / "c3").mkdir()
    (groups / "Greek" / "c1").mkdir(parents=True)  # a group without images: its topmost folder is named
    data = from_folder(groups, image_size=8, fractions=(0.5, 0.25, 0.25))
    assert data.metadata["skipped folders"] == "2 empty class folders skipped: Greek, Latin/c3"

    clean = _image_folder(tmp_path / "clean", ["a", "b", "c", "d"])
    assert from_folder(clean, image_size=8).metadata["skipped folders"] == "none"


def test_jmeta_data_passes_any_option_of_the_data_sets_loader(tmp_path, capsys):
    root = _image_folder(tmp_path / "images", ["ants", "bees", "cats", "dogs", "eels"])
    split_file = tmp_path / "split.csv"
    split_file.write_text("class,split\nants,train\nbees,train\ncats,val\ndogs,test\n")
    command = ["data", "folder", "--data-dir", str(root), "--option", "image_size=(6, 9)", "--option", "channels=3"]
    assert main([*command, "--option", f"split_file={split_file}"]) == 0
    expected = from_folder(root, image_size=(6, 9), channels=3, split_file=split_file).summary()
    assert capsys.readouterr().out.strip() == expected
    assert "train: 2 classes" in expected and "6x9x3 uint8" in expected
    assert main([*command, "--option", "fractions=(0.6, 0.2, 0.2)", "--option", "seed=3"]) == 0
    assert capsys.readouterr().out.strip() == from_folder(
        root, image_size=(6, 9), channels=3, fractions=(0.6, 0.2, 0.2), seed=3
    ).summary()
    assert main(["data", "iris", "--option", "val_fraction=0.5", "--option", "seed=1"]) == 0
    assert capsys.readouterr().out.strip() == jmeta.data.load("iris", val_fraction=0.5, seed=1).summary()
    assert main(["data", "folder", "--data-dir", str(root), "--option", "shots=5"]) == 2
    assert "folder takes the options image_size, channels, resample, fractions, split_file, split, seed; got " \
           "unknown shots." in capsys.readouterr().err
    assert main(["data", "folder", "--data-dir", str(root), "--option", "channels"]) == 2
    assert "options must look like key=value" in capsys.readouterr().err


def test_predict_reads_a_query_image_file_and_names_query_for_other_files(tmp_path, capsys, monkeypatch):
    config = tmp_path / "digits_protonet.py"
    config.write_text(DIGITS_PROTONET)
    workdir = tmp_path / "run"
    assert main(["train", str(config), "--workdir", str(workdir)]) == 0
    support, queries = tmp_path / "support", tmp_path / "queries"
    digits = jmeta.data.load("digits")["test"]
    for label in range(5):
        (support / f"digit{label}").mkdir(parents=True)
        first = int(digits.offsets[label])
        Image.fromarray(digits.images[first, ..., 0]).save(support / f"digit{label}" / "0.png")
    queries.mkdir()
    for label in range(5):
        Image.fromarray(digits.images[int(digits.offsets[label]) + 1, ..., 0]).save(queries / f"q{label}.png")
    capsys.readouterr()
    command = ["predict", "--workdir", str(workdir), "--support", str(support)]
    assert main([*command, "--query", str(queries)]) == 0
    by_folder = capsys.readouterr().out.splitlines()
    assert len(by_folder) == 5
    name = by_folder[3].split("\t")[0]  # one image file as the query: its line of the folder's predictions
    assert main([*command, "--query", str(queries / name)]) == 0
    assert capsys.readouterr().out.splitlines() == [by_folder[3]]
    (tmp_path / "notes.txt").write_text("not inputs")
    assert main([*command, "--query", str(tmp_path / "notes.txt")]) == 2
    assert "--query '" + str(tmp_path / "notes.txt") + "' is not an image file and numpy cannot read it as a .npy " \
           "file of numbers; --query takes a .npy file of inputs (points, *input_shape), an image file" \
           in capsys.readouterr().err

    # --support on a run that is not on images (regression): one clear line, before any file is read.
    sinusoid = ml_collections.ConfigDict({"task": "sinusoid"})
    monkeypatch.setattr(jmeta.population, "load_run", lambda *args, **kwargs: SimpleNamespace(config=sinusoid))
    assert main([*command, "--query", str(queries)]) == 2
    assert "--support reads a folder of images per class, for a run on an image data set; this run's task " \
           "'sinusoid' is not one. Give --support-x and --support-y (.npy files) instead." in capsys.readouterr().err


def test_episode_errors_name_the_config_key_the_value_came_from():
    config = few_shot_config("digits", "protonet", ways=5, shots=1)
    del config.hidden, config.downsample, config.pool
    config.split, config.model, config.hidden, config.val_every = "", "mlp", (16, 8), 0
    config.eval_ways = 6  # digits' test split has 5 classes
    with pytest.raises(ValueError, match=r"eval_ways must be at most the number of classes in digits's test split "
                                         r"\(its default split\) \(5\); got eval_ways=6. Lower eval_ways"):
        build(config)
    config.eval_ways, config.eval_shots, config.eval_queries = 5, 100, 100
    with pytest.raises(ValueError, match=r"eval_shots \+ eval_queries must be at most the number of examples in the "
                                         r"smallest class of digits's test split"):
        build(config)
    config.ways, config.eval_shots, config.eval_queries = 6, 1, 1
    with pytest.raises(ValueError, match=r"^ways must be at most the number of classes in digits's train split"):
        build(config)


def _key_data(key: jax.Array) -> tuple[int, ...]:
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


def test_the_augmentation_key_differs_from_every_other_key_of_an_episode_batch():
    key = jax.random.key(7)
    keys = episode_keys(key)
    used = [key, *keys, *augment_keys(keys.augment)]
    assert len({_key_data(k) for k in used}) == len(used) == 7
    # The old augmentation key, fold_in(key, 1), is the example key under partitionable threefry.
    assert _key_data(jax.random.fold_in(key, 1)) == _key_data(keys.examples) != _key_data(keys.augment)
    # The sampler flips with the flip key split from the augmentation key: the flips, computed independently.
    images = np.zeros((4, 3, 3, 1), np.uint8)
    images[:, 1, 0, 0] = 255  # a dot at the left edge, at the right edge once flipped
    sampler = make_episode_sampler(ClassDataset(images, np.array([0, 0, 1, 1]), "ab"), 2, 1, 1, augment="flip")
    task = sampler(key, 50)
    flips = np.asarray(jax.random.bernoulli(augment_keys(keys.augment)[2], 0.5, (50, 2, 2, 1, 1, 1)))[..., 0, 0, 0]
    assert 0 < flips.mean() < 1
    np.testing.assert_array_equal(np.asarray(task.support_x)[:, :, 1, 2, 0] == 1.0, flips[:, :, 0])  # shots=1
    np.testing.assert_array_equal(np.asarray(task.query_x)[:, :, 1, 2, 0] == 1.0, flips[:, :, 1])  # queries=1


def test_eval_and_plot_of_a_programs_workdir_say_what_it_holds(tmp_path, capsys):
    workdir = tmp_path / "gmm"
    overrides = ["steps=3", "eval_tasks=4"]
    assert main(["train", str(REPO / "experiments" / "seed003_gmm.py"), "--workdir", str(workdir), *overrides]) == 0
    capsys.readouterr()
    assert main(["eval", "--workdir", str(workdir)]) == 2
    assert capsys.readouterr().err.strip() == (
        "jmeta eval: error: this workdir holds a run of program 'gmm', which declares no evaluate; its results are in "
        "results.json; jmeta eval re-tests meta-learner runs."
    )
    assert main(["plot", "--workdir", str(workdir)]) == 2
    assert capsys.readouterr().err.strip() == (
        "jmeta plot: error: this workdir holds a run of program 'gmm', which logs no learning curves (no "
        "metrics.jsonl) and drew no figure; its results are in results.json."
    )
    Image.new("RGB", (4, 4)).save(workdir / "figure.png")  # a figure the program drew is what plot shows
    assert main(["plot", "--workdir", str(workdir)]) == 0
    assert capsys.readouterr().out.split() == [str(workdir / "figure.png")]
    assert json.loads((workdir / "config.json").read_text())["program"] == "gmm"


def test_evaluate_refuses_a_sampler_that_ignores_the_number_of_tasks(mlp_model):
    learner = jmeta.maml(mlp_model, jmeta.losses.mse, inner_lr=0.01)
    params, state = learner.init(jax.random.key(0))
    pool = jmeta.tasks.sinusoid_tasks(jax.random.key(5), 10, shots=5, queries=20)
    fixed = jax.tree_util.Partial(lambda key, n, pool: pool, pool=pool)  # always the same 10 tasks
    with pytest.raises(ValueError, match=r"sample_tasks\(key, 1\) must return 1 task .* it returned tasks of "
                                         r"\{'support_x': 10, 'support_y': 10, 'query_x': 10, 'query_y': 10\}"):
        jmeta.evaluate(learner, params, state, fixed, jax.random.key(1), num_tasks=10, steps=(0,))
