"""The ``secondorder`` command: ``figures``, ``verify``, ``bench``.

``figures``, ``verify`` and ``bench`` run the scripts of a source checkout (the folders
``figures/``, ``theory/`` and ``benchmarks/`` next to the package, which stay out of the wheel).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

_COMMANDS = {
    "figures": ("figures.__main__", "render the project's figures (PNG + PDF) and figures.json"),
    "verify": ("theory.__main__", "run the theory verification scripts; non-zero exit on a failed claim"),
    "bench": ("benchmarks.__main__", "run the memory / speed / solver benchmarks"),
}


def _checkout_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    missing = [d for d in ("figures", "theory", "benchmarks") if not (root / d).is_dir()]
    if missing:
        raise SystemExit(
            f"secondorder: this command needs a source checkout (folders {missing} not found next to "
            f"{Path(__file__).resolve().parent}); install with `pip install -e .` from a clone."
        )
    return root


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="secondorder",
        description="Second-order (momentum) continuous-depth models. "
        "Run `secondorder COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in _COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] == "--version":
        from secondorder import __version__

        print(__version__)
        return 0
    if argv[0] not in _COMMANDS:
        parser.print_usage(sys.stderr)
        print(f"secondorder: unknown command {argv[0]!r}; choose from {', '.join(_COMMANDS)}", file=sys.stderr)
        return 2
    root = _checkout_root()
    sys.path.insert(0, str(root))
    mod = importlib.import_module(_COMMANDS[argv[0]][0])
    return int(mod.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
