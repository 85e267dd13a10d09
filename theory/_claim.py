"""The result type every theory script returns, one per checked claim."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Claim:
    """One checked statement: what was measured, what was expected, and whether it held.

    ``measured`` and ``expected`` are short human-readable values (numbers or strings);
    ``passed`` is decided by the script, with the tolerance stated in ``expected``
    (e.g. ``"-1 +/- 0.1"`` or ``"< 1e-10"``).
    """

    name: str
    measured: object
    expected: object
    passed: bool
    section: str = ""

    def as_dict(self):
        d = asdict(self)
        d["passed"] = bool(self.passed)
        for k in ("measured", "expected"):
            v = d[k]
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = str(v)
            elif hasattr(v, "item"):
                d[k] = v.item()
        return d


def fmt(x, digits=4):
    """Format a number for the table."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if x == 0 or (1e-3 <= abs(x) < 1e4):
        return f"{x:.{digits}g}"
    return f"{x:.{digits - 1}e}"


def close(name, measured, expected, rtol=0.0, atol=0.0, section=""):
    """Claim that ``measured`` equals ``expected`` within ``atol + rtol*|expected|``."""
    tol = atol + rtol * abs(expected)
    ok = math.isfinite(measured) and abs(measured - expected) <= tol
    return Claim(name, fmt(measured, 7), f"{fmt(expected, 7)} +/- {fmt(tol, 2)}", ok, section)


def below(name, measured, bound, section=""):
    """Claim that ``measured < bound``."""
    ok = math.isfinite(measured) and measured < bound
    return Claim(name, fmt(measured), f"< {fmt(bound)}", ok, section)


def above(name, measured, bound, section=""):
    """Claim that ``measured > bound``."""
    ok = math.isfinite(measured) and measured > bound
    return Claim(name, fmt(measured), f"> {fmt(bound)}", ok, section)
