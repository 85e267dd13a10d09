"""Input validation: one place owns the wording of every error message."""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["check_choice", "check_gamma", "check_eps", "check_shape", "check_output", "check_finite"]


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
    g = _value(gamma)
    if isinstance(g, bool) or not isinstance(g, numbers.Real):
        raise TypeError(f"{name} must be a real number or a scalar tensor, got {type(gamma).__name__}.")
    g = float(g)
    if not (0.0 <= g <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} == {g!r}, must be in [0, 1].")
    if invertible and g == 0.0:
        raise ValueError(
            f"{name} == 0 cannot be inverted (the inverse divides by {name}); "
            f"use backward='autograd' for gamma = 0 (a plain ResNet), or gamma in (0, 1]."
        )
    return g


def check_eps(eps, name: str = "eps") -> float:
    """``eps`` must be a finite real number >= 0."""
    e = _value(eps)
    if isinstance(e, bool) or not isinstance(e, numbers.Real) or not math.isfinite(float(e)) or e < 0:
        raise ValueError(f"{name} == {e!r}, must be a finite number >= 0.")
    return float(e)


def check_shape(index: int, got: torch.Size, expected: torch.Size, what: str = "residual function", hint: str = "") -> None:
    """A residual function must keep the shape of its input (``hint`` is appended to the error)."""
    if got != expected:
        raise ValueError(
            f"{what} {index} returned shape {tuple(got)} for an input of shape {tuple(expected)}; "
            f"a residual function must keep the shape of its input.{hint}"
        )


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
