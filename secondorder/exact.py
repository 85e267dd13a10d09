"""Exact fixed-point arithmetic for memory-free backprop through Momentum ResNets and RevNets.

Following Maclaurin, Duvenaud & Adams (ICML 2015, "Gradient-based hyperparameter optimization
through reversible learning"), both the position ``x`` and the velocity ``v`` are held as int64
fixed-point numbers ``X = round(x * 2**bits)``. Additions of quantized terms are exactly
invertible; the multiplication ``v <- gamma * v`` is made invertible by writing gamma as a
rational ``n/d`` (``d <= 2**31``; ``d = 2**24`` for float32) and trading digits with an integer *bit store* ``S``::

    forward:  s = S mod n;  S = S div n;  U = V*n + s;  V' = U div d;  S = S*d + (U mod d)
    inverse:  U = V'*d + (S mod d);  S = S div d;  V = U div n;  S = S*n + (U mod n)

so ``V' = floor((V*n + s) / d)`` is within one quantum of ``V * n/d`` (the rounding bits ``s`` come
from the store, the bits it drops go back to it). ``V*n`` is never formed: ``V`` is split as
``V = Vh*d + Vl`` and only ``Vl*n + s < n*d <= 2**62`` is. Floor division and floor modulo are used
throughout (mixing truncation with floor breaks exactness for negative values). The store grows
by ``log2(d/n) ~ log2(1/gamma)`` bits per element per layer. Its worst-case size is tracked on the
host, so no device synchronisation is needed: the store is kept below ``2**53`` (so that its
divisions can run exactly in float64, see ``floor_divmod``), and before it could pass that, its
high 31 bits are *spilled* to a list as an int32 tensor and the low 22 bits continue (the inverse
puts them back at the same layer). There is therefore no depth limit, and the store costs about
``log2(1/gamma)`` bits per element and layer plus 8 bytes per element.

The value range is ``|x| < 2**(61 - bits)``; a value outside it (or NaN/inf) raises
``FixedPointOverflowError`` naming the layer, the magnitude and the ``fixed_point_bits`` knob.

Speed: the exact backward runs each layer's integer chain (the store's multiply or divide, the
quantization of ``(1 - gamma) * f(x)``, the additions, the range-check maxima) as one kernel
compiled by ``torch.compile`` when a compiler works (``secondorder._fused``; bit-identical to the
eager operations here, which remain the fallback). ``set_fused`` or the environment variable
``SECONDORDER_FUSED=0/1`` forces either path.
"""

from __future__ import annotations

import copy as _copy
from fractions import Fraction

import torch

from . import _fused
from ._errors import FixedPointOverflowError


def set_fused(flag: bool | None) -> None:
    """Choose how the exact backward runs its fixed-point arithmetic.

    ``True``: always through the fused kernels compiled by ``torch.compile`` (inductor; a compile
    failure raises). ``False``: always the eager PyTorch operations. ``None`` (the default): the
    environment variable ``SECONDORDER_FUSED`` (``0``, ``1`` or ``auto``) if set, else automatic:
    fused for state tensors of at least ``secondorder._fused.MIN_NUMEL`` elements when the compiler
    works (the first call of each kernel is checked bit for bit against the eager path; a failure
    falls back to eager with one warning). Both paths give bit-identical results.
    """
    _fused.set_fused(flag)


def fused_mode() -> bool | None:
    """The current choice: True (fused forced), False (eager forced) or None (automatic)."""
    return _fused.mode()

__all__ = [
    "BITS_LADDER",
    "DEFAULT_BITS",
    "FixedPoint",
    "BitStore",
    "FixedPointOverflowError",
    "rational_gamma",
    "floor_divmod",
    "set_fused",
    "fused_mode",
]

#: Fractional bits tried per dtype, finest first. A forward pass whose values leave the range
#: ``|x| < 2**(61 - bits)`` is run again with the next, coarser rung (RNG state and buffers
#: restored first), so small values keep the finest quantum and large ones still fit. float64:
#: 52 bits (quantum 2.2e-16, range 512) down to 28 (range 8.6e9); float32: 32 bits (quantum
#: 2.3e-10, below one float32 ulp for |x| > 2**-9; range 5.4e8) down to 14.
BITS_LADDER = {
    torch.float64: (52, 46, 40, 34, 28),
    torch.float32: (32, 26, 20, 14),
    torch.float16: (20, 14, 8),
    torch.bfloat16: (20, 14, 8),
}
#: The finest rung, used when a single format is needed.
DEFAULT_BITS = {dtype: ladder[0] for dtype, ladder in BITS_LADDER.items()}

#: Largest denominator used to write gamma as n/d (see ``rational_gamma``); keeps n*d <= 2**62.
MAX_DENOMINATOR = 2**31
#: Bits of the power-of-two denominator used for float32 and half networks.
DYADIC_BITS = 24
#: The store ``S`` and every operand divided by a non-power of two stay below ``2**53``, where a
#: float64 division is exact (see ``floor_divmod``) and about 6x faster than an int64 one.
FLOAT_EXACT = 2**53
_KEEP_BITS = 22  # a spill keeps the store's low 22 bits and moves the high (< 2**31) to int32

_INT64_MAX = 2**63 - 1


def rational_gamma(gamma: float, max_denominator: int = MAX_DENOMINATOR, dyadic: bool = False) -> Fraction:
    """The fraction ``n/d`` (``d <= max_denominator = 2**31``) that exact mode uses for ``gamma``.

    ``dyadic=False`` (float64 networks): the closest such fraction. Short decimals are recovered
    exactly (0.9 -> 9/10, 0.99 -> 99/100, 0.5 -> 1/2); any other float (a learned gamma, say) is
    approximated within ``1/(d * max_denominator)``, typically about 1e-18.

    ``dyadic=True`` (float32 and half networks): ``d = 2**24``, so that the divisions by ``d`` in
    ``BitStore`` are shifts: ``n = round(gamma * 2**24)``, within ``2**-25 ~ 3e-8`` of gamma,
    below float32's resolution (short dyadic fractions such as 1/2 or 3/4 stay exact).
    """
    g = float(gamma)
    if not (0 < g <= 1):
        raise ValueError(f"gamma == {gamma!r}, must be in (0, 1] for exact arithmetic.")
    frac = Fraction(g).limit_denominator(max_denominator)
    d = frac.denominator
    if dyadic and d & (d - 1):
        frac = Fraction(max(1, round(g * 2**DYADIC_BITS)), 2**DYADIC_BITS)
    return frac


def floor_divmod(a: torch.Tensor, m: int, bound: int = 2**63):
    """Floor division and floor modulo of an int64 tensor by a positive int: ``a = q*m + r``, ``0 <= r < m``.

    ``bound`` is a known bound on ``|a|``. A power of two uses shift and mask (exact floor
    semantics on two's complement). Below ``2**53`` the quotient is ``floor(float64(a) / m)``: ``a``
    converts exactly, and a correctly rounded quotient can only reach the next integer if it is
    within ``|a/m| * 2**-53 < 1/m`` of it, which a non-integer ``a/m`` never is; so the floor is
    exact (and about 6x faster than an int64 division). Otherwise an int64 floor division.
    """
    if m & (m - 1) == 0:
        k = m.bit_length() - 1
        return a >> k, a & (m - 1)
    if bound <= FLOAT_EXACT:
        t = a.to(torch.float64, copy=True)
        q = t.div_(m).floor_().to(torch.int64)  # in place: one float64 temporary
        del t
    else:
        q = torch.div(a, m, rounding_mode="floor")
    return q, torch.sub(a, q, alpha=m)


class FixedPoint:
    """Conversion between a float dtype and int64 fixed point with ``bits`` fractional bits."""

    def __init__(self, dtype: torch.dtype, bits: int | None = None):
        if not dtype.is_floating_point:
            raise TypeError(f"exact arithmetic needs a floating-point input, got {dtype}.")
        if bits is None:
            bits = DEFAULT_BITS.get(dtype, 32)
        if not isinstance(bits, int) or not (0 <= bits <= 60):
            raise ValueError(f"fixed_point_bits == {bits!r}, must be an int in [0, 60].")
        self.dtype = dtype
        self.bits = bits
        self.scale = float(2**bits)
        self.inv_scale = float(2.0**-bits)
        self.max_abs = float(2 ** (61 - bits))  # |x| < max_abs keeps X + V inside int64
        # half types would overflow when scaled: work in float32 for them
        self._work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def quantize(self, y: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
        """``round(factor * y * 2**bits)`` as int64 (the power of two scales exactly; round half to even)."""
        return torch.round(y.to(self._work) * (factor * self.scale)).to(torch.int64)

    def dequantize(self, Y: torch.Tensor) -> torch.Tensor:
        """The float value ``Y * 2**-bits`` in ``dtype``."""
        return (Y.to(self._work) * self.inv_scale).to(self.dtype)

    def overflow_error(self, what: str, layer: int, magnitude: float, limit: float | None = None) -> FixedPointOverflowError:
        if magnitude != magnitude or magnitude == float("inf"):
            return FixedPointOverflowError(
                f"non-finite values (NaN or inf) in {what} at layer {layer} of the exact backward.",
                finite=False,
            )
        limit = self.max_abs if limit is None else limit
        return FixedPointOverflowError(
            f"{what} at layer {layer} reached |value| = {magnitude:.3g}, outside the fixed-point range "
            f"|value| < {limit:.3g} of {self.bits} fractional bits for {self.dtype}; pass a "
            f"smaller fixed_point_bits (range 2**(61 - bits), velocities below float64 2**(53 - bits)) "
            f"or rescale the network."
        )


class BitStore:
    """Integer store that makes ``V <- V * n/d`` exactly invertible (see the module docstring).

    ``mul`` and ``div`` must be called in exactly reverse order. ``spills`` lists the layer count
    at which a full store was set aside; ``nbytes`` is the memory it holds.
    """

    def __init__(self, like: torch.Tensor, gamma: Fraction, v_bound: int = 2**63):
        self.n, self.d = gamma.numerator, gamma.denominator
        if not (0 < self.n <= self.d <= MAX_DENOMINATOR):
            raise ValueError(f"gamma == {gamma}, must be n/d with 0 < n <= d <= 2**31.")
        if self.d >= 2**30 * self.n:
            raise ValueError(f"gamma == {float(gamma):.3g} is too small for exact arithmetic (must be > 2**-30).")
        self.v_bound = v_bound  # known bound of |V| (2**53 lets V's divisions run in float64)
        self.S = torch.zeros(like.shape, dtype=torch.int64, device=like.device)
        self._bound = 0  # upper bound of every element of S (0 <= S < FLOAT_EXACT always)
        self._count = 0  # number of mul calls not yet undone
        self._spilled: list[tuple[int, torch.Tensor, int]] = []

    def copy(self) -> BitStore:
        """An independent store from the current state: the tensors are shared (the store never
        modifies them in place unless it owns them) and the spill list is copied."""
        c = _copy.copy(self)
        c._spilled = list(self._spilled)
        return c

    @property
    def spills(self) -> list[int]:
        """The number of multiplications done when each spill happened."""
        return [c for c, _, _ in self._spilled]

    @property
    def nbytes(self) -> int:
        """Bytes held by the store: the live int64 tensor and the int32 spills."""
        return self.S.numel() * (8 + 4 * len(self._spilled))

    def _next_bound(self, bound: int) -> int:
        """The bound of every element of ``S`` after one more ``mul`` (host side)."""
        return (bound // self.n) * self.d + self.d - 1

    def prepare_mul(self) -> None:
        """Spill the store's high bits if the next ``mul`` could take it past ``2**53`` (host side)."""
        if self._next_bound(self._bound) >= FLOAT_EXACT:  # spill the high bits as int32
            self._spilled.append((self._count, (self.S >> _KEEP_BITS).to(torch.int32), self._bound))
            self.S = self.S & (2**_KEEP_BITS - 1)
            self._bound = 2**_KEEP_BITS - 1

    def commit_mul(self, S: torch.Tensor) -> None:
        """Take ``S`` as the store after a multiplication (done by ``mul`` or a fused kernel)."""
        self.S = S
        self._bound = self._next_bound(self._bound)
        self._count += 1

    def commit_div(self, S: torch.Tensor) -> None:
        """Take ``S`` as the store after a division, and put back a spill made at this layer."""
        self.S = S
        self._count -= 1
        if self._spilled and self._spilled[-1][0] == self._count:
            _, high, self._bound = self._spilled.pop()
            self.S = S.bitwise_or_(high.to(torch.int64) << _KEEP_BITS)  # S is always a fresh tensor

    def mul(self, V: torch.Tensor) -> torch.Tensor:
        """Return ``floor((V*n + s)/d)`` (within one quantum of ``V*gamma``), keeping what is lost."""
        n, d = self.n, self.d
        if n == d:
            return V
        self.prepare_mul()
        # every temporary below is fresh, so the updates run in place (fewer live int64 tensors)
        Vh, Vl = floor_divmod(V, d, self.v_bound)
        S, s = floor_divmod(self.S, n, FLOAT_EXACT)
        Vl.mul_(n).add_(s)  # Vl*n + s < n*d <= 2**62
        del s
        w, r = floor_divmod(Vl, d, n * d)
        del Vl
        self.commit_mul(r.add_(S, alpha=d))
        del S, r
        return w.add_(Vh, alpha=n)

    def div(self, V: torch.Tensor) -> torch.Tensor:
        """Exact inverse of the last ``mul``."""
        n, d = self.n, self.d
        if n == d:
            return V
        Vh, w = floor_divmod(V, n, self.v_bound)
        S, r = floor_divmod(self.S, d, FLOAT_EXACT)
        w.mul_(d).add_(r)
        del r
        Vl, s = floor_divmod(w, n, n * d)
        del w
        self.commit_div(s.add_(S, alpha=n))
        del S, s
        return Vl.add_(Vh, alpha=d)
