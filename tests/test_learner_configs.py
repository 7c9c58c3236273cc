"""Every learner trains and evaluates through `jmeta train` on its real-Omniglot config (slow: ~1 min each;
run with `pytest -m slow`)."""

import json

import pytest
from conftest import REPO

from jmeta.cli import main

OMNIGLOT = REPO.parent / "shared" / "data" / "omniglot"
LEARNERS = [
    "maml", "fomaml", "mamlpp", "metasgd", "anil", "reptile", "protonet", "imaml", "boil", "metaoptnet_r2d2",
    "metaoptnet_svm", "matchingnet", "relationnet", "baselinepp",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not (OMNIGLOT / "images_background.zip").is_file(), reason=f"real Omniglot not found at {OMNIGLOT}")
@pytest.mark.parametrize("learner", LEARNERS)
def test_learner_config_trains_and_evaluates(tmp_path, learner):
    config = REPO / "experiments" / f"omniglot_{learner}.py"
    args = ["train", str(config), "--workdir", str(tmp_path), f"data_dir={OMNIGLOT}", "steps=3", "eval_tasks=20"]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (by_metric,) = results["results"].values()
    assert by_metric["accuracy"]["tasks"] == 20
    assert 0.0 <= by_metric["accuracy"]["mean"] <= 1.0
