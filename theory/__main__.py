"""Run the theory verification scripts: ``python -m theory [NAME ...] [--quick] [--seed N] [--only S]``.

Prints one line per claim (claim, measured, expected, pass/fail) and per measurement (reported,
not counted), writes a JSON report and exits non-zero if any claim fails. Each claim runs in
isolation: an exception fails that claim only (a script that cannot even be imported fails as one
claim "script ran").
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
import traceback
from pathlib import Path

from theory import SCRIPTS
from theory._claim import Claim


def build_parser():
    p = argparse.ArgumentParser(
        prog="secondorder verify",
        description="Run the theory verification scripts (also `python -m theory`): one line per "
        "claim of docs/theory.md (measured, expected, PASS/FAIL), a JSON report, exit 1 on a failed claim.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"scripts to run (default: all): {', '.join(SCRIPTS)}")
    p.add_argument("--quick", action="store_true", help="small sizes, for CI and a first look")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--only", action="append", default=None, metavar="S",
                   help="run only the claims whose name contains S (repeatable)")
    p.add_argument("--report", default="out/theory/theory_report.json",
                   help="JSON report path (default out/theory/theory_report.json)")
    return p


def run_script(name, quick, seed, only=None):
    """The claims of script ``name`` (an import error or a crash outside any claim is one failed
    claim "script ran")."""
    try:
        mod = importlib.import_module(f"theory.{SCRIPTS[name]}")
        if only is not None and "only" in inspect.signature(mod.run).parameters:
            return list(mod.run(quick=quick, seed=seed, only=only))
        return list(mod.run(quick=quick, seed=seed))
    except Exception:  # a crash is a failed claim, never a silent pass
        return [Claim("script ran", traceback.format_exc(limit=3).strip().splitlines()[-1], "no exception", False)]


def run(names, quick, seed, report, only=None):
    """Run ``names`` (all when empty); print the table, write ``report``; 1 if a claim failed."""
    from scripts.shared import write_json

    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        raise SystemExit(f"unknown theory script(s) {unknown}; available: {sorted(SCRIPTS)}")
    names = names or list(SCRIPTS)
    results, failed, counted, measured = {}, 0, 0, 0
    for name in names:
        t0 = time.perf_counter()
        claims = run_script(name, quick, seed, only)
        dt = time.perf_counter() - t0
        print(f"\n== {name} ({dt:.1f}s)")
        width = max([len(c.name) for c in claims] + [10])
        for c in claims:
            flag = ("PASS" if c.passed else "FAIL") if c.counted else "INFO"
            print(f"  {flag}  {c.name:<{width}}  measured {c.measured}  expected {c.expected}")
        failed += sum(not c.passed for c in claims)
        counted += sum(c.counted for c in claims)
        measured += sum(not c.counted for c in claims)
        results[name] = {"seconds": dt, "claims": [c.as_dict() for c in claims]}
    print(f"\n{counted - failed} claims passed, {failed} failed ({measured} measurements reported, not counted)")
    write_json(report, {"quick": quick, "seed": seed, "only": only, "results": results,
                        "claims": counted, "failed": failed, "measurements": measured})
    return 1 if failed else 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if not sys.stderr.isatty():  # redrawn progress bars would leave carriage returns in a log
        os.environ.setdefault("TQDM_DISABLE", "1")
    return run(args.names, args.quick, args.seed, args.report, args.only)


if __name__ == "__main__":
    sys.exit(main())
