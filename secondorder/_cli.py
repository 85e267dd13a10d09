"""The ``secondorder`` command: ``figures``, ``verify``, ``bench``.

``figures``, ``verify`` and ``bench`` run the scripts of a source checkout (the folders
``figures/``, ``theory/`` and ``benchmarks/`` next to the package, which stay out of the wheel).
Every command writes its outputs under the checkout's gitignored ``out/`` folder:
``out/figures/`` (``secondorder figures``; ``--gallery`` rewrites the committed gallery in
``figures/`` instead), ``out/theory/report.json`` (``secondorder verify``) and ``out/bench/``
(``secondorder bench``). Usage errors exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

_COMMANDS = {
    "figures": ("figures.__main__", "render the project's figures (PNG + PDF) and figures.json into out/figures/"),
    "verify": ("theory.__main__", "run the theory verification scripts; non-zero exit on a failed claim"),
    "bench": ("benchmarks.__main__", "run the memory / speed / solvers / adjoint benchmarks (JSON into out/bench/)"),
}

#: where every command writes, relative to the checkout root (gitignored)
OUT = "out"


def _checkout_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    missing = [d for d in ("figures", "theory", "benchmarks") if not (root / d).is_dir()]
    if missing:
        raise SystemExit(
            f"secondorder: this command needs a source checkout (folders {missing} not found next to "
            f"{Path(__file__).resolve().parent}); install with `pip install -e .` from a clone."
        )
    return root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secondorder",
        description="Second-order (momentum) continuous-depth models. "
        "Run `secondorder COMMAND --help` for the options of a command.",
        epilog="Outputs go to out/ at the root of the checkout (gitignored).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in _COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def _has_option(argv, name) -> bool:
    return any(a == name or a.startswith(name + "=") for a in argv)


def main(argv=None) -> int:
    """Run ``secondorder ARGV``; return the exit status (0 ok, 1 failed claim, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv:  # no command: a usage error
        parser.print_help(sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
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
    command, rest = argv[0], argv[1:]
    if command == "verify" and not _has_option(rest, "--report") and not {"-h", "--help"} & set(rest):
        (root / OUT / "theory").mkdir(parents=True, exist_ok=True)
        rest = [*rest, "--report", str(root / OUT / "theory" / "report.json")]
    mod = importlib.import_module(_COMMANDS[command][0])
    try:
        return int(mod.main(rest) or 0)
    except SystemExit as exc:  # argparse's usage errors (status 2) and --help (status 0)
        if isinstance(exc.code, int) or exc.code is None:
            return int(exc.code or 0)
        raise


if __name__ == "__main__":
    sys.exit(main())
