"""MAML on real Omniglot through `jmeta train`: a short run beats chance (20% for 5-way) by a wide margin."""

import json

import pytest
from conftest import REPO

from jmeta.cli import main

OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
pytestmark = pytest.mark.skipif(
    not (OMNIGLOT / "images_background.zip").is_file(),
    reason=f"real Omniglot not found at {OMNIGLOT} (the two official zips); see ../shared/data/omniglot/README.md",
)


def test_jmeta_data_prints_the_omniglot_summary(capsys):
    assert main(["data", "omniglot", "--data-dir", str(OMNIGLOT), "--split", "background"]) == 0
    out = capsys.readouterr().out
    assert "train: 3856 classes x 20 examples" in out  # 964 characters x 4 rotations
    assert "test: 659 classes x 20 examples" in out


def test_short_maml_run_on_real_five_way_one_shot_omniglot_beats_chance_widely(tmp_path):
    config = str(REPO / "experiments" / "omniglot_maml.py")
    overrides = ["steps=100", "meta_batch=8", "log_every=50", "val_every=100", "val_tasks=20", "eval_tasks=100"]
    assert main(["train", config, "--workdir", str(tmp_path), f"data_dir={OMNIGLOT}", *overrides]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    accuracy = results["results"]["3"]["accuracy"]
    assert accuracy["tasks"] == 100
    assert accuracy["mean"] > 0.45, accuracy  # chance: 0.20
