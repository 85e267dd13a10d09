"""Per-feature momentum: a Momentum ResNet whose ``gamma`` is a tensor (one value per feature).

``gamma`` of a shape that broadcasts against the state ``x`` (e.g. ``(d,)`` for ``x`` of shape
``(batch, d)``) gives every feature its own damping::

    v_{n+1} = gamma * v_n + (1 - gamma) * f_n(x_n)      (elementwise, gamma broadcast)

The autograd and float backwards broadcast as they are. The exact backward writes every entry as
its own rational ``gamma_i = n_i / d_i`` (the fraction ``secondorder.exact.rational_gamma`` picks
for that value, so a constant tensor runs bit for bit like the scalar), and the bit store's algebra
of ``secondorder.exact`` runs elementwise with ``n`` and ``d`` broadcast::

    s = S mod n;  S = S div n;  U = V*n + s;  V' = U div d;  S = S*d + (U mod d)

The worst-case size of the store, tracked on the host, is the largest over the distinct pairs
``(n_i, d_i)``: ``B' = max_i (B div n_i) * d_i + d_i - 1`` (entries with ``n_i = d_i`` leave their
store unchanged), so it grows by the largest ``log2(d_i / n_i)`` per layer and is spilled exactly as
the scalar store is. Per-feature gammas run the eager integer operations (the fused kernels of
``secondorder._fused`` take scalar constants); the results are the same bits either way.

d loss / d gamma of one layer is ``(v_n - f_n(x_n)) * g`` (``g`` the gradient reaching
``v_{n+1}``), summed over the dimensions ``gamma`` was broadcast along.
"""

from __future__ import annotations

import torch

from . import exact as _exact
from ._validate import check_broadcast, check_rate_tensor

__all__ = ["is_per_feature", "check_gamma_tensor", "gamma_for", "sum_to", "rational_gammas",
           "TensorBitStore"]


def is_per_feature(gamma) -> bool:
    """True for a tensor ``gamma`` (or ``eps``) of at least one dimension."""
    return isinstance(gamma, torch.Tensor) and gamma.dim() > 0


def check_gamma_tensor(gamma, *, invertible: bool, x_shape=None) -> torch.Tensor:
    """Every entry of a per-feature ``gamma`` in [0, 1] ((0, 1] when the step must be inverted);
    its shape broadcasts against ``x_shape`` when given. Raises TypeError / ValueError."""
    hint = (" gamma == 0 cannot be inverted (the inverse divides by gamma); use backward='autograd'."
            if invertible else "")
    g = check_rate_tensor(gamma, "gamma", 0.0, 1.0, low_open=invertible, what=hint)
    if x_shape is not None:
        check_broadcast("gamma", gamma.shape, x_shape)
    return g


def gamma_for(gamma, x):
    """``gamma`` as used against ``x``: a per-feature tensor is cast to ``x``'s dtype (so that a
    float64 gamma does not promote a float32 state); a scalar is returned as is."""
    if is_per_feature(gamma) and gamma.dtype != x.dtype:
        return gamma.to(x.dtype)
    return gamma


def sum_to(t: torch.Tensor, shape) -> torch.Tensor:
    """``t`` summed over the dimensions a tensor of ``shape`` was broadcast along."""
    return t.sum_to_size(tuple(shape))


def rational_gammas(gamma: torch.Tensor, dtype: torch.dtype):
    """Per-entry fractions ``n_i / d_i`` of a per-feature gamma, as int64 tensors ``(n, d)`` of
    ``gamma``'s shape, plus the distinct pairs ``[(n, d), ...]``. Each entry gets the fraction
    ``secondorder.exact.rational_gamma`` gives its value (dyadic below float64)."""
    g = gamma.detach().to(torch.float64).cpu()
    values, inverse = torch.unique(g.reshape(-1), return_inverse=True)
    fracs = [_exact.rational_gamma(float(v), dyadic=dtype != torch.float64) for v in values.tolist()]
    for f in fracs:
        if f.denominator >= 2**30 * f.numerator:
            raise ValueError(f"gamma == {float(f):.3g} is too small for exact arithmetic (must be > 2**-30).")
    ns = torch.tensor([f.numerator for f in fracs], dtype=torch.int64)
    ds = torch.tensor([f.denominator for f in fracs], dtype=torch.int64)
    n = ns[inverse].reshape(g.shape).to(gamma.device)
    d = ds[inverse].reshape(g.shape).to(gamma.device)
    return n, d, sorted({(f.numerator, f.denominator) for f in fracs})


def _floor_divmod(a: torch.Tensor, m: torch.Tensor, bound: int):
    """Floor division and modulo of int64 ``a`` by the positive int64 tensor ``m`` (broadcast);
    ``bound`` bounds ``|a|``. Below ``2**53`` the quotient is the floor of the float64 quotient
    (exact, see ``secondorder.exact.floor_divmod``), otherwise an int64 floor division."""
    if bound <= _exact.FLOAT_EXACT:
        q = a.to(torch.float64).div_(m.to(torch.float64)).floor_().to(torch.int64)
    else:
        q = torch.div(a, m, rounding_mode="floor")
    return q, a - q * m


class TensorBitStore(_exact.BitStore):
    """``secondorder.exact.BitStore`` for per-element fractions ``n_i / d_i`` (int64 tensors that
    broadcast against the state). ``mul`` and ``div`` are the scalar store's operations,
    elementwise; the host-side bound is the worst case over the distinct pairs."""

    def __init__(self, like: torch.Tensor, n: torch.Tensor, d: torch.Tensor, pairs, v_bound: int = 2**63):
        for pn, pd in pairs:
            if not (0 < pn <= pd <= _exact.MAX_DENOMINATOR):
                raise ValueError(f"gamma == {pn}/{pd}, must be n/d with 0 < n <= d <= 2**31.")
        self.n_t, self.d_t = n, d
        self.pairs = list(pairs)
        self.n = self.d = None  # no single fraction
        self.nd_max = max(pn * pd for pn, pd in self.pairs)
        self.v_bound = v_bound
        self.S = torch.zeros(like.shape, dtype=torch.int64, device=like.device)
        self._bound = 0
        self._count = 0
        self._spilled = []

    def _next_bound(self, bound: int) -> int:
        """The worst case over the distinct pairs (``prepare_mul`` / ``commit_mul`` are the scalar
        store's, which spill and track the bound through this)."""
        return max(bound if pn == pd else (bound // pn) * pd + pd - 1 for pn, pd in self.pairs)

    def mul(self, V: torch.Tensor) -> torch.Tensor:
        """``floor((V*n + s)/d)`` elementwise (within one quantum of ``V * gamma``)."""
        n, d = self.n_t, self.d_t
        self.prepare_mul()
        Vh, Vl = _floor_divmod(V, d, self.v_bound)
        S, s = _floor_divmod(self.S, n, _exact.FLOAT_EXACT)
        w, r = _floor_divmod(Vl * n + s, d, self.nd_max)  # Vl*n + s < n*d <= 2**62
        self.commit_mul(r + S * d)
        return w + Vh * n

    def div(self, V: torch.Tensor) -> torch.Tensor:
        """Exact inverse of the last ``mul``."""
        n, d = self.n_t, self.d_t
        Vh, w = _floor_divmod(V, n, self.v_bound)
        S, r = _floor_divmod(self.S, d, _exact.FLOAT_EXACT)
        Vl, s = _floor_divmod(w * d + r, n, self.nd_max)
        self.commit_div(s + S * n)  # fresh tensor: commit_div may OR a spill into it
        return Vl + Vh * d
