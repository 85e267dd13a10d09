"""The tests' shared registry: closed-form problems, residual-function factories, gradient checks.

Every test file imports what it needs from here instead of defining its own copy, in the spirit
of torchdiffeq's shared problems: one definition of each test problem and one tolerance rule.

- ``Lin``: the linear field ``F(x) = A x`` (closed-form flows via ``expm``);
- ``Scale``: the residual function ``f(x) = c x`` (closed-form Momentum ResNet: ``M**N``);
- ``mlp``, ``mlp_functions``: small MLP residual functions, reproducible from a seed;
- ``rel_err``, ``assert_grads_match``: gradients compared relative to the norm of the *whole*
  reference gradient (a single entry of a true gradient can be 0), ``None`` meaning "no gradient".
"""

import math

import torch
from torch import nn

__all__ = ["Lin", "Scale", "mlp", "mlp_functions", "rel_err", "assert_grads_match"]


class Lin(nn.Module):
    """``F(x) = x @ A^T`` (a module taking ``x`` only): the linear field with closed-form flows."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, x):
        return x @ self.A.T


def mlp_functions(depth, d=6, h=12, dtype=torch.float64, scale=0.3, seed=0):
    """``depth`` independent ``Linear(d, h)-Tanh-Linear(h, d)`` residual functions, weights drawn
    from ``seed`` with standard deviation ``scale / sqrt(fan_in)``."""
    g = torch.Generator().manual_seed(seed)
    fs = []
    for _ in range(depth):
        f = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, d)).to(dtype)
        with torch.no_grad():
            for p in f.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * scale / math.sqrt(p.shape[-1]))
        fs.append(f)
    return fs


class Scale(nn.Module):
    """``f(x) = c * x``: with it a Momentum ResNet is linear and ``(x_N, v_N) = M**N (x_0, v_0)``."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, x):
        return self.c * x


def mlp(d, hidden=None, dtype=torch.float64, seed=None, dropout=None):
    """One ``Linear(d, hidden)-Tanh-[Dropout]-Linear(hidden, d)`` module (``hidden = 2 d`` by
    default), PyTorch's default initialisation drawn after ``torch.manual_seed(seed)`` when a seed
    is given (from the current global generator otherwise)."""
    if seed is not None:
        torch.manual_seed(seed)
    hidden = 2 * d if hidden is None else hidden
    mid = [nn.Dropout(dropout)] if dropout is not None else []
    return nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), *mid, nn.Linear(hidden, d)).to(dtype)


def rel_err(got, ref) -> float:
    """``||got - ref|| / ||ref||`` over all tensors together (the whole gradient's norm).

    ``got`` and ``ref`` are sequences of tensors or ``None`` (no gradient); a ``None`` must face a
    ``None``. A single tensor may be passed for each side.
    """
    if isinstance(got, torch.Tensor) or isinstance(ref, torch.Tensor):
        got, ref = [got], [ref]
    pairs = list(zip(got, ref, strict=True))
    for a, b in pairs:
        assert (a is None) == (b is None), "one side has a gradient and the other has none"
    num = sum(float((a - b).detach().double().pow(2).sum()) for a, b in pairs if b is not None) ** 0.5
    den = sum(float(b.detach().double().pow(2).sum()) for _, b in pairs if b is not None) ** 0.5
    return num / den


def assert_grads_match(got, ref, rtol: float) -> None:
    """Assert ``rel_err(got, ref) <= rtol`` (see ``rel_err``), printing the error when it fails."""
    err = rel_err(got, ref)
    assert err <= rtol, f"gradients differ: relative error {err:.3g} > {rtol:.3g} (whole-gradient norm)"
