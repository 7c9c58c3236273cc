"""The README's "In ten lines" example (also on docs/index.md) runs and shows adaptation helping."""

import contextlib
import io
import re

import pytest
from conftest import REPO


def example(path: str) -> str:
    text = (REPO / path).read_text()
    match = re.search(r"```python\n(import jax, jax.numpy as jnp, optax, jmeta\n.*?)```", text, re.DOTALL)
    assert match, f"no example code block in {path}"
    return match.group(1)


def test_docs_index_shows_the_readme_example():
    assert example("docs/index.md") == example("README.md")


@pytest.mark.slow
def test_readme_example_prints_error_falling_with_inner_steps():
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example("README.md"), "README.md", "exec"), namespace)
    losses = {k: v["loss"] for k, v in namespace["results"].items()}
    assert losses[0].mean > losses[1].mean > losses[5].mean
    assert losses[0].mean - losses[5].mean > 3 * (losses[0].ci95 + losses[5].ci95)  # well outside both intervals
    assert printed.getvalue().strip() == str({k: str(v) for k, v in losses.items()})
    shown = re.search(r"It prints.*?```\n(\{.*?\})\n```", (REPO / "README.md").read_text(), re.DOTALL).group(1)
    print(printed.getvalue().strip(), "| README shows", shown)
