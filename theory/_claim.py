"""The result type every theory script returns, and the collector that evaluates claims in isolation.

A *claim* is a statement that can fail: it compares a measured number with an independent
expected value (a closed form, another solver, a bound). A *measurement* is a number worth
reporting that no implementation error could make "fail" (e.g. an accuracy a first-order model
may or may not reach): it is printed and kept in the JSON report, but it is not counted.

:class:`Checks` evaluates each claim on its own: an exception inside one claim fails that claim
(with the exception's message) and the others still run. Expensive shared work goes in
:func:`lazy` values, computed once on first use, so a claim that is not selected (``only=``)
costs nothing, and an exception in shared work fails exactly the claims that use it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Claim:
    """One checked statement: what was measured, what was expected, and whether it held.

    ``measured`` and ``expected`` are short human-readable values (numbers or strings);
    ``passed`` is decided by the script, with the tolerance stated in ``expected``
    (e.g. ``"-1 +/- 0.1"`` or ``"< 1e-10"``). ``counted`` is False for a measurement (reported,
    never failing on its value, not part of the claim count).
    """

    name: str
    measured: object
    expected: object
    passed: bool
    section: str = ""
    counted: bool = True

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


def measurement(name, measured, note="measurement (not a claim)", section=""):
    """A reported number: never fails on its value, not counted among the claims."""
    return Claim(name, measured if isinstance(measured, str) else fmt(measured), note, True, section,
                 counted=False)


class lazy:  # noqa: N801 - used like a function decorator
    """A zero-argument computation evaluated once, on first call; an exception is kept and
    re-raised on every call (so each claim that needs the value fails with it)."""

    def __init__(self, fn):
        self.fn = fn
        self._done = False
        self._value = None
        self._error = None

    def __call__(self):
        if not self._done:
            try:
                self._value = self.fn()
            except Exception as e:  # kept, re-raised for every dependent claim
                self._error = e
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


class Checks:
    """Collects the claims of one script, each evaluated in isolation.

    Args:
        section: the docs/theory.md topic the claims belong to (stored in each claim).
        only: ``None`` (run all) or a list of substrings; a claim or measurement runs only if its
            name contains one of them (the others are skipped, costing nothing).

    Each method takes the claim's name and a zero-argument function computing the measured value;
    an exception raised by that function fails the claim with the exception's type and message.
    """

    def __init__(self, section="", only=None):
        if only is not None and (isinstance(only, str) or not all(isinstance(s, str) for s in only)):
            raise TypeError("only must be None or a list of strings.")
        self.section = section
        self.only = None if only is None else list(only)
        self.claims: list[Claim] = []

    def selected(self, name: str) -> bool:
        """Whether the claim ``name`` runs under ``only``."""
        return self.only is None or any(s in name for s in self.only)

    def _add(self, name, build, counted=True):
        if not self.selected(name):
            return None
        try:
            c = build()
        except Exception as e:  # the claim fails, the others still run
            c = Claim(name, _error_text(e), "no exception", False, self.section, counted=True)
        c.name, c.section = name, self.section
        self.claims.append(c)
        return c

    def close(self, name, fn, rtol=0.0, atol=0.0):
        """``fn() -> (measured, expected)``; passes if ``|measured - expected| <= atol + rtol |expected|``."""
        return self._add(name, lambda: close(name, *map(float, fn()), rtol=rtol, atol=atol))

    def below(self, name, fn, bound):
        """``fn() -> measured``; passes if ``measured < bound`` (finite)."""
        return self._add(name, lambda: below(name, float(fn()), bound))

    def above(self, name, fn, bound):
        """``fn() -> measured``; passes if ``measured > bound`` (finite)."""
        return self._add(name, lambda: above(name, float(fn()), bound))

    def check(self, name, fn, expected):
        """``fn() -> (measured, passed)``: a claim with a custom test, ``expected`` its description."""

        def build():
            measured, passed = fn()
            return Claim(name, measured, expected, bool(passed))

        return self._add(name, build)

    def measure(self, name, fn, note="measurement (not a claim)"):
        """``fn() -> value``: a reported number, not counted (an exception still fails it)."""
        return self._add(name, lambda: measurement(name, fn(), note), counted=False)
