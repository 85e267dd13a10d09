"""Run the theory verification scripts: ``python -m theory [NAME ...] [--quick] [--seed N]``.

Prints one line per claim (claim, measured, expected, pass/fail), writes a JSON report and exits
non-zero if any claim fails (or a script crashes).
"""

from __future__ import annotations

import argparse
import importlib
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
    p.add_argument("--report", default="theory_report.json", help="JSON report path (default: out/theory/report.json under `secondorder verify`, "
                   "theory_report.json under `python -m theory`)")
    return p


def run(names, quick, seed, report):
    from secondorder._io import write_json

    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        raise SystemExit(f"unknown theory script(s) {unknown}; available: {sorted(SCRIPTS)}")
    names = names or list(SCRIPTS)
    results, failed = {}, 0
    for name in names:
        t0 = time.perf_counter()
        try:
            mod = importlib.import_module(f"theory.{SCRIPTS[name]}")
            claims = list(mod.run(quick=quick, seed=seed))
        except Exception:  # a crash is a failed claim, never a silent pass
            claims = [Claim("script ran", traceback.format_exc(limit=3).strip().splitlines()[-1], "no exception", False)]
        dt = time.perf_counter() - t0
        print(f"\n== {name} ({dt:.1f}s)")
        width = max([len(c.name) for c in claims] + [10])
        for c in claims:
            flag = "PASS" if c.passed else "FAIL"
            print(f"  {flag}  {c.name:<{width}}  measured {c.measured}  expected {c.expected}")
        failed += sum(not c.passed for c in claims)
        results[name] = {"seconds": dt, "claims": [c.as_dict() for c in claims]}
    total = sum(len(r["claims"]) for r in results.values())
    print(f"\n{total - failed} passed, {failed} failed")
    write_json(report, {"quick": quick, "seed": seed, "results": results, "failed": failed})
    return 1 if failed else 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    return run(args.names, args.quick, args.seed, args.report)


if __name__ == "__main__":
    sys.exit(main())
