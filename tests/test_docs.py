"""The documentation: references into docs/theory.md resolve, links between pages resolve, the
code of the user guide runs, and the site builds in strict mode with no network at view time."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
THEORY = DOCS / "theory.md"
OLD_NAME = "THEORY" + ".md"  # the theory file that lived outside the repository
# pages written on other branches, listed in the nav before they land (mkdocs.yml: not_found: info)
PENDING_PAGES = {"theory-checks.md", "experiments.md"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".txt", ".cfg", ".js"}


def _tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        paths = [ROOT / p for p in out]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        paths = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and "out" not in p.parts]
    return [p for p in paths if p.suffix in TEXT_SUFFIXES and p.is_file()]


def _slug(heading: str) -> str:
    """The anchor MkDocs' toc extension gives a heading (default slugify)."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(md: Path) -> set[str]:
    """Explicit ``<div id="...">`` anchors and heading slugs of a Markdown page."""
    text = md.read_text()
    ids = set(re.findall(r'<(?:div|span|a) id="([^"]+)"', text))
    ids |= {_slug(h) for h in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)}
    return ids


def sections(md: Path) -> set[str]:
    """Section numbers of the headings ``## 3.`` / ``### 3.2``."""
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)?)\.? ", md.read_text(), re.M))


def test_theory_page_has_numbered_sections_and_key_anchors():
    secs = sections(THEORY)
    assert {str(i) for i in range(1, 8)} <= secs
    for anchor in ("phase-space", "reachable-linear-maps", "psi", "expressivity", "heavy-ball",
                   "stability-window", "rate", "best-gamma", "exact-backward", "self-verification",
                   "float-trap", "fixed-gamma-limit", "measuring-memory"):
        assert anchor in anchors(THEORY), anchor


def test_every_reference_into_the_theory_page_resolves():
    """`docs/theory.md#anchor`, `docs/theory.md §N` and Markdown links `theory.md#anchor` anywhere
    in the repository (code, docstrings, CLI strings, docs, README) must exist; and nothing may
    point at the theory file that is not in the repository."""
    ids, secs = anchors(THEORY), sections(THEORY)
    dangling, old = [], []
    for path in _tracked_text_files():
        text = path.read_text(errors="replace")
        rel = path.relative_to(ROOT).as_posix()
        for a in re.findall(r"theory\.md#([A-Za-z0-9_-]+)", text):
            if a not in ids and a != "anchor":  # "anchor": the placeholder in prose
                dangling.append(f"{rel}: theory.md#{a}")
        for s in re.findall(r"docs/theory\.md §(\d+(?:\.\d+)?)", text):
            if s not in secs:
                dangling.append(f"{rel}: docs/theory.md §{s}")
        if OLD_NAME in text and path.name != "test_docs.py":
            old.append(rel)
    assert not dangling, f"dangling references into docs/theory.md: {dangling}"
    assert not old, f"files still citing {OLD_NAME} (use docs/theory.md §N or #anchor): {old}"


def test_links_between_pages_resolve():
    """Relative links of README.md and docs/**/*.md point at existing files (and anchors)."""
    bad = []
    for md in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve()
            if not dest.exists():
                bad.append(f"{md.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{md.relative_to(ROOT)}: {target} (no such anchor)")
    assert not bad, bad


def test_nav_pages_exist():
    yaml = pytest.importorskip("yaml")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(items):
        for item in items:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(nav))
    assert {"index.md", "tutorial.md", "theory.md", "gallery.md", "benchmarks.md", "api.md"} <= set(listed)
    missing = [p for p in listed if not (DOCS / p).is_file() and p not in PENDING_PAGES]
    assert not missing, missing


GUIDE = sorted((DOCS / "guide").glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("page", GUIDE, ids=[p.stem for p in GUIDE])
def test_guide_code_runs(page, monkeypatch):
    """Every ```python block of a user-guide page runs, in order, in one namespace."""
    import torch

    monkeypatch.chdir(ROOT)
    namespace = {"__name__": "guide"}
    dtype = torch.get_default_dtype()
    try:
        for i, body in enumerate(BLOCK.findall(page.read_text())):
            if "torchvision" in body and importlib.util.find_spec("torchvision") is None:
                pytest.skip("torchvision not installed")
            exec(compile(body, f"{page.name}[block {i + 1}]", "exec"), namespace)
    finally:
        torch.set_default_dtype(dtype)


def _external(html: str) -> list[str]:
    """Resources a page would load from the network (scripts, stylesheets, images, fonts)."""
    refs = re.findall(r'<script[^>]+src="([^"]+)"', html)
    refs += re.findall(r'<link[^>]+href="([^"]+)"', html)
    refs += re.findall(r'<img[^>]+src="([^"]+)"', html)
    return [r for r in refs if re.match(r"(https?:)?//", r)]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mathjax") is None,
                    reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_site_builds_strict_and_offline(tmp_path):
    site = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                        "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    pages = list(site.rglob("*.html"))
    assert {"index.html", "tutorial.html", "theory.html", "gallery.html", "api.html", "benchmarks.html"} <= {p.name for p in pages}
    for page in pages:
        assert not _external(page.read_text()), (page.name, _external(page.read_text()))
    assert (site / "assets" / "mathjax" / "tex-svg-full.js").stat().st_size > 1_000_000
    tutorial = (site / "tutorial.html").read_text()
    assert 'class="arithmatex"' in tutorial and "assets/mathjax/tex-svg-full.js" in tutorial
    for img in re.findall(r'<img[^>]+src="([^"]+)"', tutorial):
        assert (site / img).is_file(), img
    api = (site / "api.html").read_text()
    assert "MomentumResNet" in api and "SecondOrderODE" in api and "exact_roundtrip" in api
    bench = (site / "benchmarks.html").read_text()
    assert "Memory and time against depth" in bench  # BENCHMARKS.md included, not copied
