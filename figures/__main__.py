"""Render figures: ``secondorder figures [NAME ...] [--quick] [--gallery | --out DIR] [--seed N]``.

By default writes ``out/figures/<name>.png`` and ``.pdf`` (``out/`` at the checkout root is
gitignored) atomically and updates ``out/figures/figures.json`` (one entry per figure:
``{"path": "<name>.png", "numbers": {...}}``; entries of figures not rendered this time are kept).
``--gallery`` writes into ``figures/`` instead: the committed gallery that the README and the
documentation show (regenerate it at full settings, without ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from figures import FIGURES

GALLERY = Path(__file__).resolve().parent
DEFAULT_OUT = GALLERY.parent / "out" / "figures"


def build_parser():
    """The argument parser of ``secondorder figures``."""
    p = argparse.ArgumentParser(
        prog="secondorder figures",
        description="Render the figures (PNG + PDF) and a figures.json of the numbers each shows. "
        "Default output: out/figures/ (gitignored); --gallery rewrites the committed gallery in figures/.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"figures to render (default: all): {', '.join(FIGURES)}")
    p.add_argument("--quick", action="store_true", help="small settings, all figures in a few minutes")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="output folder (default: out/figures/ of the checkout)")
    where.add_argument("--gallery", action="store_true",
                       help="write into figures/, the committed gallery (use full settings: no --quick)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def render(names, quick=False, out=None, seed=0, progress=True):
    """Render ``names`` (all when empty) into ``out`` (default ``out/figures/``); return the
    manifest entries written. ``progress``: a tqdm bar on a terminal, one line per figure otherwise."""
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from scripts.shared import atomic_path, seed_everything, write_json

    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise SystemExit(f"unknown figure(s) {unknown}; available: {sorted(FIGURES)}")
    names = list(names) or list(FIGURES)
    out = Path(out) if out is not None else DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "figures.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    written = {}
    tty = sys.stderr.isatty()
    bar = tqdm(names, desc="figures", unit="fig", disable=not (progress and tty))
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        mod = importlib.import_module(f"figures.{FIGURES[name]}")
        seed_everything(seed)
        data = mod.compute(quick=quick, seed=seed)
        fig = mod.plot(data)
        for ext in ("png", "pdf"):
            with atomic_path(out / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, format=ext, bbox_inches="tight", metadata=_metadata(ext))
        plt.close(fig)
        entry = {"path": f"{name}.png", "pdf": f"{name}.pdf", "quick": quick, "seed": seed,
                 "seconds": round(time.perf_counter() - t0, 2), "numbers": mod.numbers(data)}
        manifest[name] = written[name] = entry
        write_json(manifest_path, manifest)  # after each figure: an interrupt loses nothing done
        if progress and not tty:
            print(f"[{len(written)}/{len(names)}] {name} ({entry['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return written


def _metadata(ext):
    # fixed metadata keeps the files byte-stable for a given seed
    return {"Software": None} if ext == "png" else {"Creator": None, "Producer": None, "CreationDate": None}


def _quiet_bars():
    """Off-terminal, disable the tqdm bars of the scripts themselves (training loops): redrawn
    bars leave carriage returns and escape codes in a log. A bar that passes ``disable=`` keeps it."""
    from tqdm import std

    init = std.tqdm.__init__
    if getattr(init, "_quiet", False):
        return

    def quiet_init(self, *args, **kwargs):
        kwargs.setdefault("disable", True)
        init(self, *args, **kwargs)

    quiet_init._quiet = True
    std.tqdm.__init__ = quiet_init


def main(argv=None):
    """Entry point of ``secondorder figures``; returns the exit status."""
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(GALLERY.parent))
    if not sys.stderr.isatty():
        _quiet_bars()
    out = GALLERY if args.gallery else (Path(args.out) if args.out else DEFAULT_OUT)
    if args.gallery and args.quick:
        print("secondorder figures: note: --gallery with --quick writes quick renders into the "
              "committed gallery", file=sys.stderr)
    written = render(args.names, quick=args.quick, out=out, seed=args.seed)
    for name, entry in written.items():
        print(f"{name}: {out / entry['path']}")
        print(f"  {json.dumps(entry['numbers'], default=str)}")
    print(f"numbers of every figure: {out / 'figures.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
