"""Run a benchmark: ``python -m benchmarks NAME [options]`` (``NAME --help`` for its options)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from benchmarks import BENCHMARKS


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: secondorder bench NAME [options]\n\nbenchmarks:")
        for name, mod in BENCHMARKS.items():
            doc = (importlib.import_module(f"benchmarks.{mod}").__doc__ or "").strip().splitlines()
            print(f"  {name:<12} {doc[0] if doc else ''}")
        return 0
    name = argv[0]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    return int(importlib.import_module(f"benchmarks.{BENCHMARKS[name]}").main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
