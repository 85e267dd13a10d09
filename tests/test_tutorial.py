"""docs/tutorial.md is executable: every ```python block runs, in order, in one namespace.

The blocks assert the numbers they print, so this checks the tutorial's content, not only that it
runs.
"""

import re
from pathlib import Path

import matplotlib
import pytest
import torch

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(text):
    """The bodies of the ```python fenced blocks of ``text``, in order."""
    return BLOCK.findall(text)


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x + 1\n```\n"
    assert blocks(text) == ["x = 1\n", "y = x + 1\n"]


def test_tutorial_runs(monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(TUTORIAL.parent.parent)  # the tutorial runs from the repository root
    code = blocks(TUTORIAL.read_text())
    assert len(code) >= 6
    namespace = {"__name__": "tutorial"}
    dtype = torch.get_default_dtype()  # the tutorial switches to float64: restore it after
    try:
        for i, body in enumerate(code):
            try:
                exec(compile(body, f"{TUTORIAL.name}[block {i + 1}]", "exec"), namespace)
            except Exception as exc:  # name the block in the failure
                pytest.fail(f"tutorial block {i + 1} raised {type(exc).__name__}: {exc}\n{body}")
    finally:
        torch.set_default_dtype(dtype)


def test_tutorial_teaches_in_order():
    """The sections come in the teaching order of issue 13, with 4-6 exercises, each with a
    worked solution, and every inline figure exists in the committed gallery."""
    text = TUTORIAL.read_text()
    heads = [h.lower() for h in re.findall(r"^## (.*)$", text, re.M)]
    order = ["euler step", "momentum", "expressivity", "linear maps", "heavy ball", "memory", "exercises"]
    pos = [next(i for i, h in enumerate(heads) if key in h) for key in order]
    assert pos == sorted(pos), heads
    exercises = re.findall(r"^\*\*Exercise \d+", text, re.M)
    assert 4 <= len(exercises) <= 6
    assert text.count("<summary>Solution</summary>") == len(exercises)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) >= 4
    for rel in images:
        assert (TUTORIAL.parent / rel).resolve().is_file(), rel
