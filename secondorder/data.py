"""Data: families of random optimisation problems with their exact minimisers.

Learning to optimize (docs/theory.md §5.6) trains a network to map a problem instance to its
minimiser. The instances come in batches: ``A`` of shape ``(n, m, d)``, ``b`` of shape ``(n, m)``,
minimisers ``x_star`` of shape ``(n, d)``; every function below is batched over the leading ``n``.

- least squares: ``L(x) = 1/2 ||A x - b||^2``;
- l2-regularised logistic regression, labels ``b in {-1, +1}``:
  ``L(x) = 1/m sum_i log(1 + exp(-b_i <a_i, x>)) + l2/2 ||x||^2``.
"""

from __future__ import annotations

import math

import torch

from ._errors import NumericalError
from ._validate import check_count, check_positive, check_real

__all__ = [
    "least_squares_problems",
    "least_squares_loss",
    "least_squares_gradient",
    "logistic_problems",
    "logistic_loss",
    "logistic_gradient",
    "LOGISTIC_L2",
]

#: Default ridge weight of the logistic problems (makes the minimiser exist and unique).
LOGISTIC_L2 = 0.1


def _check_sizes(n, d, m, seed):
    n = check_count(n, "n")
    d = check_count(d, "d")
    m = 2 * d if m is None else check_count(m, "m")
    check_count(seed, "seed", minimum=0)
    return n, d, m


def _check_batch(x, A, b):
    if A.dim() != 3 or b.shape != A.shape[:2] or x.shape != (A.shape[0], A.shape[2]):
        raise ValueError(
            f"shapes x {tuple(x.shape)}, A {tuple(A.shape)}, b {tuple(b.shape)} do not match; "
            f"expected x (n, d), A (n, m, d), b (n, m)."
        )


def _matvec(A, x):
    """``A x`` per instance: ``(n, m, d), (n, d) -> (n, m)``."""
    return (A @ x.unsqueeze(-1)).squeeze(-1)


def _rmatvec(A, r):
    """``A^T r`` per instance: ``(n, m, d), (n, m) -> (n, d)``."""
    return (A.transpose(-1, -2) @ r.unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------- least squares
def least_squares_loss(x, A, b):
    """``L(x) = 1/2 ||A x - b||^2`` per instance: shapes ``(n, d), (n, m, d), (n, m) -> (n,)``."""
    _check_batch(x, A, b)
    return 0.5 * (_matvec(A, x) - b).pow(2).sum(-1)


def least_squares_gradient(x, A, b):
    """``grad L(x) = A^T (A x - b)``: shapes ``(n, d), (n, m, d), (n, m) -> (n, d)``."""
    _check_batch(x, A, b)
    return _rmatvec(A, _matvec(A, x) - b)


def least_squares_problems(n, d, seed=0, m=None, noise=0.1, dtype=torch.float64):
    """``n`` random least-squares problems ``min_x 1/2 ||A x - b||^2`` in dimension ``d``.

    ``A`` has ``m = 2 d`` rows by default with i.i.d. ``N(0, 1/m)`` entries (so the Hessian
    ``A^T A`` has its spectrum near ``[(1 - sqrt(d/m))^2, (1 + sqrt(d/m))^2]``), ``b = A x_true +
    noise * e`` with ``x_true, e`` standard normal. Needs ``m >= d`` (a unique minimiser almost
    surely).

    Returns ``(A, b, x_star)`` of shapes ``(n, m, d)``, ``(n, m)``, ``(n, d)``, where ``x_star``
    solves the normal equations ``A^T A x = A^T b`` (computed by QR in float64, then cast).
    Deterministic for a given ``seed``.
    """
    n, d, m = _check_sizes(n, d, m, seed)
    if m < d:
        raise ValueError(f"m == {m} < d == {d}: least squares needs m >= d for a unique minimiser.")
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    A = torch.randn(n, m, d, generator=g, dtype=f64) / math.sqrt(m)
    x_true = torch.randn(n, d, generator=g, dtype=f64)
    b = _matvec(A, x_true) + noise * torch.randn(n, m, generator=g, dtype=f64)
    Q, R = torch.linalg.qr(A)  # A = Q R, x_star = R^{-1} Q^T b
    x_star = torch.linalg.solve_triangular(R, _rmatvec(Q, b).unsqueeze(-1), upper=True).squeeze(-1)
    return A.to(dtype), b.to(dtype), x_star.to(dtype)


# ---------------------------------------------------------------- logistic regression
def logistic_loss(x, A, b, l2=LOGISTIC_L2):
    """``L(x) = 1/m sum_i log(1 + exp(-b_i <a_i, x>)) + l2/2 ||x||^2`` per instance: ``(n,)``."""
    _check_batch(x, A, b)
    margins = b * _matvec(A, x)
    return torch.nn.functional.softplus(-margins).mean(-1) + 0.5 * l2 * x.pow(2).sum(-1)


def logistic_gradient(x, A, b, l2=LOGISTIC_L2):
    """``grad L(x) = -1/m A^T (b * sigmoid(-b * A x)) + l2 x``: shapes ``(n, d), (n, m, d), (n, m) -> (n, d)``."""
    _check_batch(x, A, b)
    m = A.shape[1]
    margins = b * _matvec(A, x)
    return -_rmatvec(A, b * torch.sigmoid(-margins)) / m + l2 * x


def _logistic_hessian(x, A, b, l2):
    m, d = A.shape[1], A.shape[2]
    s = torch.sigmoid(b * _matvec(A, x))
    w = s * (1 - s) / m  # (n, m)
    return A.transpose(-1, -2) @ (w.unsqueeze(-1) * A) + l2 * torch.eye(d, dtype=A.dtype)


def logistic_problems(n, d, seed=0, m=None, l2=LOGISTIC_L2, flip=0.1, dtype=torch.float64, tol=1e-12):
    """``n`` random l2-regularised logistic regressions in dimension ``d``.

    Rows ``a_i`` of ``A`` are standard normal (``m = 2 d`` rows by default); labels
    ``b_i = sign(<a_i, w>)`` for a standard normal ``w``, each flipped with probability ``flip``.
    The loss is ``logistic_loss`` with weight ``l2 > 0``, strongly convex: the minimiser is
    unique. It is computed by damped Newton's method in float64 (step halved until the loss does not
    increase) until ``max_i ||grad L(x_i)|| <= tol`` (default ``1e-12``); a batch that does not
    reach it in 100 iterations raises ``secondorder.NumericalError``.

    Returns ``(A, b, x_star)`` of shapes ``(n, m, d)``, ``(n, m)``, ``(n, d)``.
    """
    n, d, m = _check_sizes(n, d, m, seed)
    check_positive(l2, "l2")  # > 0 makes the minimiser unique
    if not 0 <= check_real(flip, "flip") <= 1:
        raise ValueError(f"flip == {flip!r}, must be in [0, 1].")
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    A = torch.randn(n, m, d, generator=g, dtype=f64)
    w = torch.randn(n, d, generator=g, dtype=f64)
    b = torch.sign(_matvec(A, w))
    b[b == 0] = 1.0
    flips = torch.rand(n, m, generator=g, dtype=f64) < flip
    b = torch.where(flips, -b, b)
    x = _newton(A, b, l2, tol)
    return A.to(dtype), b.to(dtype), x.to(dtype)


def _newton(A, b, l2, tol, max_iter=100):
    x = torch.zeros(A.shape[0], A.shape[2], dtype=A.dtype)
    loss = logistic_loss(x, A, b, l2)
    for _ in range(max_iter):
        grad = logistic_gradient(x, A, b, l2)
        if grad.norm(dim=-1).max() <= tol:
            return x
        step = torch.linalg.solve(_logistic_hessian(x, A, b, l2), grad.unsqueeze(-1)).squeeze(-1)
        t = torch.ones(x.shape[0], 1, dtype=x.dtype)
        for _ in range(60):  # backtracking, per instance: halve until the loss does not increase
            new = x - t * step
            new_loss = logistic_loss(new, A, b, l2)
            bad = new_loss > loss + 1e-13 * (1 + loss.abs())  # slack: rounding of the loss itself
            if not bad.any():
                break
            t = torch.where(bad.unsqueeze(-1), 0.5 * t, t)
        x, loss = new, new_loss
    raise NumericalError(
        f"Newton's method did not reach ||grad|| <= {tol:g} in {max_iter} iterations "
        f"(max gradient norm {logistic_gradient(x, A, b, l2).norm(dim=-1).max().item():.3g})."
    )
