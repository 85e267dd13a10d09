"""MkDocs hooks for the documentation site (configured in mkdocs.yml).

- The committed figure gallery (``figures/*.png``), the repository's scripts (``theory/``,
  ``figures/``, ``benchmarks/``, ``examples/``, ``secondorder/``) and MathJax become files of the
  site, so that pages can show the figures, link the script that checks a claim, and render math
  with no network access at view time.
- A page may link repository files with the relative path that works when the Markdown is read on
  a code host (``../figures/phase_space.png`` from ``docs/tutorial.md``); such links are rewritten to
  the site's copy (``figures/phase_space.png``). ``README.md`` maps to the home page and
  ``BENCHMARKS.md`` to the benchmarks page.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("theory", "figures", "benchmarks", "examples", "secondorder")
PAGES = {"README.md": "index.md", "BENCHMARKS.md": "benchmarks.md"}
LINK = re.compile(r"(\]\()(\.\./[^)\s#]+)(#[^)\s]*)?(\))")


def _mathjax() -> Path:
    import mathjax  # the django-static-mathjax distribution: MathJax 3 as package data

    path = Path(mathjax.__file__).resolve().parent / "static" / "mathjax" / "es5" / "tex-svg-full.js"
    if not path.is_file():
        raise FileNotFoundError(f"MathJax not found at {path}; install the docs extra: pip install -e '.[docs]'")
    return path


def on_files(files, config):
    """Add the gallery PNGs, the scripts and MathJax to the site's files."""
    for png in sorted((ROOT / "figures").glob("*.png")):
        files.append(File.generated(config, f"figures/{png.name}", abs_src_path=str(png)))
    for folder in SOURCES:
        for py in sorted((ROOT / folder).rglob("*.py")):
            rel = py.relative_to(ROOT).as_posix()
            files.append(File.generated(config, f"src/{rel}", abs_src_path=str(py)))
    files.append(File.generated(config, "assets/mathjax/tex-svg-full.js", abs_src_path=str(_mathjax())))
    return files


def _site_target(page_src: str, target: str) -> str | None:
    """The site path of a ``../`` link from docs page ``page_src`` that leaves ``docs/`` (else None)."""
    repo_path = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), target))
    if repo_path.startswith("docs/") or repo_path.startswith(".."):
        return None
    if repo_path in PAGES:
        return PAGES[repo_path]
    if repo_path.endswith(".py") and repo_path.split("/")[0] in SOURCES:
        return f"src/{repo_path}"
    return repo_path


def on_page_markdown(markdown, page, config, files):
    """Rewrite links into the repository to the site's copies."""
    src = page.file.src_uri

    def fix(m):
        site = _site_target(src, m.group(2))
        if site is None:
            return m.group(0)
        rel = posixpath.relpath(site, posixpath.dirname(src) or ".")
        return f"{m.group(1)}{rel}{m.group(3) or ''}{m.group(4)}"

    return LINK.sub(fix, markdown)
