"""Render figures: ``python -m figures [NAME ...] [--quick] [--out DIR] [--seed N]``.

Writes ``DIR/<name>.png`` and ``DIR/<name>.pdf`` atomically and updates ``DIR/figures.json``
(one entry per figure: ``{"path": "<name>.png", "numbers": {...}}``; entries of figures not
rendered this time are kept).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from figures import FIGURES


def build_parser():
    p = argparse.ArgumentParser(prog="secondorder figures", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"figures to render (default: all): {', '.join(FIGURES)}")
    p.add_argument("--quick", action="store_true", help="small settings, all figures in a few minutes")
    p.add_argument("--out", default=None, help="output folder (default: figures/ of the checkout)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def render(names, quick=False, out=None, seed=0, progress=True):
    """Render ``names`` (all when empty) into ``out``; return the manifest entries written."""
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from secondorder._io import atomic_path, seed_everything, write_json

    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise SystemExit(f"unknown figure(s) {unknown}; available: {sorted(FIGURES)}")
    names = list(names) or list(FIGURES)
    out = Path(out) if out is not None else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "figures.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    written = {}
    for name in tqdm(names, desc="figures", unit="fig", disable=not progress):
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
    return written


def _metadata(ext):
    # fixed metadata keeps the files byte-stable for a given seed
    return {"Software": None} if ext == "png" else {"Creator": None, "Producer": None, "CreationDate": None}


def main(argv=None):
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    written = render(args.names, quick=args.quick, out=args.out, seed=args.seed)
    for name, entry in written.items():
        print(f"{name}: {entry['path']}  {json.dumps(entry['numbers'], default=str)[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
