"""Every Python block of the docs pages on extending jmeta runs: blocks that start with ``# FILE.py`` are
written to that file (appended, in order), the others run in a fresh namespace in the same folder."""

from __future__ import annotations

import os
import re
import sys

import pytest
from conftest import REPO

PAGES = ["docs/your-own-learner.md"]


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / page).read_text(), re.DOTALL)
    assert blocks, f"no python block in {page}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = 0
    for block in blocks:
        first = block.splitlines()[0]
        if re.fullmatch(r"# [\w/.-]+\.py", first):
            with open(tmp_path / first[2:], "a") as file:
                file.write(block + "\n")
            continue
        exec(compile(block, f"{page} block {ran}", "exec"), {"__name__": "__docs__"})
        ran += 1
    assert ran >= 1 and (tmp_path / "runs" / "mine" / "results.json").exists()
    for module in [name for name in sys.modules if name in ("my_lab",)]:
        del sys.modules[module]
    assert os.getcwd() == str(tmp_path)
