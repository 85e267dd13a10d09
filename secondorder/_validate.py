"""Input validation: one place owns the wording of every error message, with one rule.

- wrong type (a string where a number belongs, a module where a list of modules belongs): ``TypeError``;
- right type, value outside what the function accepts (a negative eps, a depth of 0, a shape
  that does not match): ``ValueError``;
- a well-posed request that the available precision or range cannot carry out reliably:
  ``secondorder.NumericalError`` (a ``RuntimeError``, see ``secondorder._errors``).
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "check_choice",
    "check_real",
    "check_gamma",
    "check_eps",
    "check_t1",
    "check_positive",
    "check_count",
    "check_shape",
    "check_velocity",
    "check_output",
    "check_finite",
    "check_rate_tensor",
    "check_eps_tensor",
    "check_broadcast",
]


def _value(x):
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(f"expected a scalar, got a tensor of shape {tuple(x.shape)}.")
        return float(x.detach())
    return x


def check_choice(name: str, value, choices) -> None:
    """``value`` must be one of ``choices`` (a dict or sequence of names)."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} == {value!r}, must be one of {valid}.")


def check_gamma(gamma, *, invertible: bool = False, name: str = "gamma") -> float:
    """``gamma`` must be a real number in [0, 1]; in (0, 1] when the step must be inverted."""
    g = check_real(gamma, name)
    if not (0.0 <= g <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} == {g!r}, must be in [0, 1].")
    if invertible and g == 0.0:
        raise ValueError(
            f"{name} == 0 cannot be inverted (the inverse divides by {name}); "
            f"use backward='autograd' for gamma = 0 (a plain ResNet), or gamma in (0, 1]."
        )
    return g


def check_real(value, name: str) -> float:
    """``value`` must be a real number or a one-element tensor (``TypeError`` otherwise); as float."""
    v = _value(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number or a scalar tensor, got {type(value).__name__}.")
    return float(v)


def check_eps(eps, name: str = "eps") -> float:
    """``eps`` must be a finite real number >= 0."""
    e = check_real(eps, name)
    if not (math.isfinite(e) and e >= 0):
        raise ValueError(f"{name} == {e!r}, must be a finite number >= 0.")
    return e


def check_t1(t1, name: str = "t1") -> float:
    """The final time ``t1`` must be a finite real number > 0."""
    return check_positive(t1, name)


def check_positive(value, name: str) -> float:
    """``value`` must be a finite real number > 0 (a time, a tolerance)."""
    v = check_real(value, name)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} == {v!r}, must be a finite number > 0.")
    return v


def check_count(value, name: str, minimum: int = 1) -> int:
    """``value`` must be an ``int`` (not a bool) >= ``minimum`` (a depth, a size, a seed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"{name} == {value!r}, must be an integer >= {minimum}.")
    return int(value)


def check_shape(index: int, got: torch.Size, expected: torch.Size, what: str = "residual function", hint: str = "") -> None:
    """A residual function must keep the shape of its input (``hint`` is appended to the error)."""
    if got != expected:
        raise ValueError(
            f"{what} {index} returned shape {tuple(got)} for an input of shape {tuple(expected)}; "
            f"a residual function must keep the shape of its input.{hint}"
        )


def check_velocity(v0, x, name: str = "v0", x_name: str = "x"):
    """An initial velocity must be a tensor of ``x``'s shape; returned unchanged."""
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(v0).__name__}.")
    if v0.shape != x.shape:
        raise ValueError(f"{name} has shape {tuple(v0.shape)}, must have the shape of {x_name} {tuple(x.shape)}.")
    return v0


def check_output(index: int, out, expected: torch.Size, what: str = "residual function", hint: str = "", rule=None) -> None:
    """A residual function must return a tensor of the expected shape.

    ``rule``, if given, replaces the default message's shape rule: a callable
    ``rule(index, got_shape) -> str`` for functions whose output shape differs from their input's
    (a RevNet's coupling functions).
    """
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{what} {index} returned {type(out).__name__}, expected a tensor.{hint}")
    if rule is not None and out.shape != expected:
        raise ValueError(rule(index, out.shape) + hint)
    check_shape(index, out.shape, expected, what, hint)


def check_finite(t: torch.Tensor, what: str) -> None:
    """Raise if ``t`` holds NaN or inf."""
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"non-finite values (NaN or inf) in {what}.")


def check_rate_tensor(t, name: str, low: float, high: float | None, *, low_open: bool, what: str = "") -> torch.Tensor:
    """A per-feature ``eps`` or ``gamma``: a floating-point tensor of at least one dimension with
    every entry finite and in ``(low, high]`` / ``[low, high]`` (``high=None``: no upper bound).
    Returns the detached values (no copy). ``what`` is appended to the error."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"{name} must be a float, a 0-dim tensor or a floating-point tensor, got "
                        f"{type(t).__name__}{' of dtype ' + str(t.dtype) if isinstance(t, torch.Tensor) else ''}.")
    if t.numel() == 0:
        raise ValueError(f"{name} is an empty tensor of shape {tuple(t.shape)}.")
    a = t.detach()
    bad = ~torch.isfinite(a) | (a <= low if low_open else a < low)
    if high is not None:
        bad |= a > high
    if bool(bad.any()):
        i = int(torch.nonzero(bad.reshape(-1))[0])
        rng = f"{'(' if low_open else '['}{low:g}, {'inf)' if high is None else f'{high:g}]'}"
        raise ValueError(f"{name} has an entry {float(a.reshape(-1)[i])!r} (flat index {i}) outside "
                         f"{rng}; every entry must be in {rng}.{what}")
    return a


def check_eps_tensor(eps, what: str = "") -> torch.Tensor:
    """A per-feature ``eps``: every entry finite and > 0 (``check_rate_tensor``); detached values."""
    return check_rate_tensor(eps, "eps", 0.0, None, low_open=True, what=what)


def check_broadcast(name: str, shape, x_shape) -> None:
    """A per-feature ``eps`` / ``gamma`` of ``shape`` must broadcast against the state ``x`` without
    changing ``x``'s shape (e.g. ``(d,)`` or ``(1, d)`` for ``x`` of shape ``(batch, d)``)."""
    try:
        out = torch.broadcast_shapes(tuple(shape), tuple(x_shape))
    except RuntimeError:
        out = None
    if out != torch.Size(x_shape):
        raise ValueError(f"{name} has shape {tuple(shape)}, which does not broadcast against the state x of "
                         f"shape {tuple(x_shape)} (it must, without enlarging x: e.g. ({x_shape[-1] if len(x_shape) else 1},) "
                         f"for per-feature values along the last dimension).")
