"""Run a benchmark: ``secondorder bench NAME [options]`` (or ``python -m benchmarks NAME``).

Each benchmark prints a table and writes its JSON to ``out/bench/NAME[_DEVICE][_quick].json`` at
the root of the checkout (gitignored) unless ``--out`` says otherwise. ``NAME --help`` lists the
options of one benchmark.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from pathlib import Path

from benchmarks import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench"


def _option(argv, name):
    """The value of ``--name VALUE`` / ``--name=VALUE`` in ``argv`` (None when absent)."""
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


#: Flags that switch a benchmark to a different measurement (and so to a different output file).
_MODES = {"memory": ("--break-even",), "speed": ("--kernels", "--phases")}


def default_out(name: str, argv) -> Path:
    """Where ``secondorder bench NAME ARGV`` writes its JSON when ``--out`` is not given."""
    device = _option(argv, "--device")
    stem = name + (f"_{device}" if device else "") + ("_quick" if "--quick" in argv else "")
    # a mode that measures something else writes its own file (a break-even run must not replace
    # the depth table's JSON, nor a kernel run the speed table's)
    stem += "".join(f"_{flag[2:].replace('-', '_')}" for flag in _MODES.get(name, ()) if flag in argv)
    return OUT / f"{stem}.json"


def _options_of(name: str) -> str:
    """The ``--help`` text of one benchmark, from its own parser."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        importlib.import_module(f"benchmarks.{BENCHMARKS[name]}").main(["--help"])
    return buf.getvalue()


def usage() -> str:
    """The text of ``secondorder bench --help``: every benchmark with its options."""
    lines = ["usage: secondorder bench NAME [options]", "",
             "Run one benchmark: print a table, write JSON to out/bench/NAME[_DEVICE][_quick].json",
             "(gitignored; --out FILE overrides). Benchmarks and their options:", ""]
    for name in BENCHMARKS:
        text = _options_of(name).rstrip().splitlines()
        lines.append(f"== {name}")
        lines += ["  " + t for t in text]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    """Dispatch ``argv = [NAME, *options]`` to ``benchmarks/NAME.py``; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(ROOT))
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"secondorder bench: unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    if _option(rest, "--out") is None and not {"-h", "--help"} & set(rest):
        OUT.mkdir(parents=True, exist_ok=True)
        rest = [*rest, "--out", str(default_out(name, rest))]
    return int(importlib.import_module(f"benchmarks.{BENCHMARKS[name]}").main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
