"""Test problems shared by the scripts of the checkout (theory claims, benchmarks, figures).

Not installed with the library. ``TimeMLP`` is a time-dependent neural field, ``Linear`` the
linear field whose flow is a matrix exponential (``linear_exact``, through the companion matrix of
the first-order system), ``time_problem`` the batch the convergence claims and benchmarks use; all
float64. ``rel`` and ``fit_slope`` are the error measure and the convergence-order fit;
``reference`` (the second-order system) and ``ivp_psi`` (its scalar linear case) are the tight
``scipy`` solutions the claims and tests compare against.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from scipy.integrate import solve_ivp
from torch import nn

from secondorder.linear import companion

__all__ = [
    "D",
    "TimeMLP",
    "Linear",
    "linear_matrix",
    "linear_exact",
    "rel",
    "fit_slope",
    "time_problem",
    "reference",
    "ivp_psi",
]

D = torch.float64


class TimeMLP(nn.Module):
    """A time-dependent neural field ``F(t, x) = W2 tanh(W1 x + b1 + t c) + b2`` (d -> d), drawn
    from ``seed``; ``c_scale`` scales the time coefficients ``c`` (how fast ``F`` changes in time)."""

    def __init__(self, d=2, width=16, seed=0, c_scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(d, width).to(D)
        self.l2 = nn.Linear(width, d).to(D)
        self.c = nn.Parameter(c_scale * torch.randn(width, generator=g, dtype=D))
        with torch.no_grad():
            for p in (self.l1.weight, self.l1.bias, self.l2.weight, self.l2.bias):
                p.copy_(torch.randn(p.shape, generator=g, dtype=D) / math.sqrt(p.shape[-1]))

    def forward(self, t, x):
        return self.l2(torch.tanh(self.l1(x) + t * self.c))


class Linear(nn.Module):
    """``F(x) = x A^T`` (a module taking ``x`` only)."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(torch.as_tensor(A, dtype=D))

    def forward(self, x):
        return x @ self.A.T


def linear_matrix(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -0.5 * torch.eye(d, dtype=D) + 0.6 * torch.randn(d, d, generator=g, dtype=D) / math.sqrt(d)


def linear_exact(A, eps, x0, u0, t1=1.0):
    """``(x(t1), x'(t1))`` of ``eps x'' + x' = A x`` from the matrix exponential (eps = 0: expm(A))."""
    A = torch.as_tensor(A).numpy()
    d = A.shape[0]
    if eps == 0:
        x = x0.numpy() @ scipy.linalg.expm(t1 * A).T
        return torch.from_numpy(x), torch.from_numpy(x @ A.T)
    B = companion(A, eps)
    y = np.concatenate([x0.numpy(), u0.numpy()], -1) @ scipy.linalg.expm(t1 * B).T
    return torch.from_numpy(y[..., :d]), torch.from_numpy(y[..., d:])


def rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


def fit_slope(xs, ys) -> float:
    """Least-squares slope of ``log ys`` against ``log xs``."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def time_problem(seed: int):
    """The time-dependent test problem of the convergence claims: ``F = TimeMLP(seed)``, a batch of
    16 two-dimensional ``x0`` and initial velocities ``u0``; also returns the generator that drew
    them (later draws continue from it). Seeds torch's global generator too."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    F = TimeMLP(seed=seed)
    x0 = torch.randn(16, 2, generator=g, dtype=D)
    u0 = 0.5 * torch.randn(16, 2, generator=g, dtype=D)
    return F, x0, u0, g


def reference(F, eps, x0, u0, t1=1.0, method="DOP853", rtol=1e-13, atol=1e-15):
    """``(x(t1), x'(t1))`` of ``eps x'' + x' = F(t, x)`` (``eps > 0``, ``x'(0) = u0``) by scipy's
    ``solve_ivp`` on the first-order system (DOP853 at rtol 1e-13 unless said): the tight
    reference of the convergence claims and tests."""
    shape, k = x0.shape, x0.numel()

    def rhs(t, y):
        x, u = torch.from_numpy(y[:k].reshape(shape)), torch.from_numpy(y[k:].reshape(shape))
        with torch.no_grad():
            du = (F(torch.tensor(t, dtype=D), x) - u) / eps
        return np.concatenate([u.reshape(-1).numpy(), du.reshape(-1).numpy()])

    y0 = np.concatenate([x0.reshape(-1).numpy(), u0.reshape(-1).numpy()])
    sol = solve_ivp(rhs, (0.0, t1), y0, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference solve failed: {sol.message}")
    y = torch.from_numpy(sol.y[:, -1])
    return y[:k].reshape(shape), y[k:].reshape(shape)


def ivp_psi(lam, eps, t1=1.0):
    """``x(t1)`` of ``eps x'' + x' = lam x``, ``x(0) = 1``, ``x'(0) = 0`` (scalar), by DOP853 at
    rtol 1e-12: the numerical reference for ``secondorder.linear.psi``."""
    sol = solve_ivp(lambda t, y: [y[1], (lam * y[0] - y[1]) / eps], [0, t1], [1.0, 0.0],
                    method="DOP853", rtol=1e-12, atol=1e-14)
    return sol.y[0, -1]
