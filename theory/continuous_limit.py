"""docs/theory.md §2: Momentum ResNets are order-1 discretizations of second-order ODEs.

Checks, in float64:

- ``discretize(ode, N)`` converges to the solver solution at order 1: the fitted slope of the
  error at ``t1`` against ``N`` (N = 32 .. 4096) is -1, for ``x`` and for ``v_N / h -> x'(t1)``,
  on a time-dependent neural ``F`` (eps in {1, 0.1}) and on a linear ``F`` with closed form;
- the linear closed form ``(x_N, v_N) = M^N (x_0, 0)``, ``M = [[1+c, gamma], [c, gamma]]``;
- ``eps -> 0`` recovers the first-order model, with error ``O(eps)`` (fitted slope +1);
- ``gamma`` held fixed while ``N`` grows converges to the *first-order* ODE (slope -1), and stays
  away from the second-order ODE with ``eps = eps_from_gamma(gamma, N_0)``;
- gradients: the adjoint's error against direct backprop grows as ``eps -> 0`` (the reverse-time
  solve is anti-damped), while ``backward="exact"`` on the discretized ODE matches autograd to
  1e-10 at every ``eps``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import secondorder as so
from scripts.problems import (
    D,
    Linear,
    fit_slope,
    linear_exact,
    linear_matrix,
    rel,
    time_problem,
)

from ._claim import Checks, Claim, fmt, lazy

SECTION = "continuous limit"
# The fit band N = 32..4096 (8 resolutions): the error of a first-order method is C1 h + C2 h^2;
# with h <= 1/32 and h/eps <= 0.31 (eps >= 0.1) the h^2 term changes the local slope by < 0.05
# (checked: local slopes -1.0x at both ends), and at N = 4096 the error (~1e-4..1e-5) is still
# 5+ orders above the reference solver's error (dopri5 at rtol 1e-12), so the band is asymptotic.
NS = [32, 64, 128, 256, 512, 1024, 2048, 4096]
SLOPE_TOL = 0.05
REF = dict(method="dopri5", rtol=1e-12, atol=1e-14)
# quick mode fits over N = 32..1024 (6 resolutions, same asymptotic band, 16x fewer layers)
NS_QUICK = NS[:6]
# eps -> 0 is stiff (dopri5 needs ~3000 NFE at eps = 0.0025): rtol 1e-8 keeps the solver error
# (~1e-8 relative) 5 orders below the measured gaps (>= 1e-3), so the fitted slope is unaffected
ZERO_TOL = dict(method="dopri5", rtol=1e-8, atol=1e-10)
# 5 values with eps <= 0.04: the O(eps^2) part of the gap moves the slope by < 0.03 here
ZERO_EPSS = [0.04, 0.02, 0.01, 0.005, 0.0025]


@torch.no_grad()
def convergence(F, eps, x0, u0, Ns=NS, exact=None):
    """Errors at t1 = 1 of ``discretize(SecondOrderODE(F, eps), N)`` against the reference.

    The reference is ``exact = (x(1), x'(1))`` when given, else the dopri5 solution at rtol 1e-12.
    The network starts from ``v0 = h u0`` and its velocity is compared as ``v_N / h``.
    Returns ``{"N", "err_x", "err_v", "slope_x", "slope_v"}``.
    """
    ode = so.SecondOrderODE(F, eps=eps, **REF)
    if exact is None:
        xs, us = ode.trajectory(x0, torch.tensor([0.0, 1.0], dtype=D), v0=u0)
        exact = (xs[-1], us[-1])
    ex, ev = [], []
    for N in Ns:
        xN, vN = so.discretize(ode, N)(x0, v0=u0 / N, return_velocity=True)
        ex.append(rel(xN, exact[0]))
        ev.append(rel(vN * N, exact[1]))
    return {"N": list(Ns), "err_x": ex, "err_v": ev, "slope_x": fit_slope(Ns, ex),
            "slope_v": fit_slope(Ns, ev), "eps": eps}


@torch.no_grad()
def eps_to_zero(F, x0, epss):
    """``|x_eps(1) - x_0(1)| / |x_0(1)|`` for each eps (dopri5 at rtol 1e-8, see ZERO_TOL)."""
    ref = so.NeuralODE(F, **ZERO_TOL)(x0)
    errs = [rel(so.SecondOrderODE(F, eps=e, **ZERO_TOL)(x0), ref) for e in epss]
    return {"eps": list(epss), "err": errs, "slope": fit_slope(epss, errs)}


@torch.no_grad()
def fixed_gamma(F, x0, gamma, Ns=NS):
    """Fixed ``gamma``, growing N: distance to the first-order ODE and to the second-order ODE with
    ``eps = eps_from_gamma(gamma, Ns[0])``."""
    first = so.NeuralODE(F, **REF)(x0)
    eps0 = so.eps_from_gamma(gamma, Ns[0])
    second = so.SecondOrderODE(F, eps=eps0, **REF)(x0)
    d1, d2 = [], []
    for N in Ns:
        # the network of depth N with this gamma: f_n = h F(t_n, .), eps = h / (1 - gamma)
        net = so.discretize(so.SecondOrderODE(F, eps=so.eps_from_gamma(gamma, N)), N)
        xN = net(x0)
        d1.append(rel(xN, first))
        d2.append(rel(xN, second))
    return {"N": list(Ns), "gamma": gamma, "eps0": eps0, "to_first": d1, "to_second": d2,
            "slope_first": fit_slope(Ns, d1), "gap": rel(second, first)}


def gradient_errors(F, x0, epss, rtol=1e-8, atol=1e-10, depth_per_unit=8):
    """Relative gradient errors for each eps: adjoint vs direct backprop (both dopri5 at ``rtol``),
    and ``backward="exact"`` vs ``"autograd"`` on ``discretize(ode, N)`` with
    ``N = depth_per_unit * ceil(1/eps)`` (rounded up to a power of two, so gamma is a dyadic
    rational). Gradients over F's parameters and eps (resp. gamma)."""
    out = {"eps": list(epss), "adjoint": [], "exact": [], "nfe": [], "nfe_backward": [], "depth": []}
    for eps in epss:
        gs = []
        for adjoint in (False, True):
            e = nn.Parameter(torch.tensor(eps, dtype=D))
            ode = so.SecondOrderODE(F, eps=e, method="dopri5", rtol=rtol, atol=atol, adjoint=adjoint)
            F.zero_grad()
            (ode(x0) ** 2).sum().backward()
            gs.append(torch.cat([p.grad.reshape(-1) for p in F.parameters()] + [e.grad.reshape(1)]))
        out["adjoint"].append(rel(gs[1], gs[0]))
        out["nfe"].append(ode.nfe)
        out["nfe_backward"].append(ode.nfe_backward)
        N = 2 ** math.ceil(math.log2(depth_per_unit * math.ceil(1 / eps)))
        out["depth"].append(N)
        gs = []
        for backward in ("autograd", "exact"):
            net = so.discretize(so.SecondOrderODE(F, eps=eps), N, backward=backward)
            F.zero_grad()
            (net(x0) ** 2).sum().backward()
            gs.append(torch.cat([p.grad.reshape(-1) for p in F.parameters()]))
        out["exact"].append(rel(gs[1], gs[0]))
    return out


def run(quick: bool, seed: int, only=None) -> list[Claim]:
    """All claims of this script (``only``: substrings of the claim names to run)."""
    ck = Checks(SECTION, only)
    F, x0, u0, g = time_problem(seed)
    A = linear_matrix(seed=seed)
    xl = torch.randn(8, 3, generator=g, dtype=D)
    ul = torch.randn(8, 3, generator=g, dtype=D)

    # 1. order 1 on the neural F, x and v/h
    Ns = NS_QUICK if quick else NS
    for eps in ([1.0, 0.1] if quick else [1.0, 0.1, 10.0]):
        c = lazy(lambda eps=eps: convergence(F, eps, x0, u0, Ns=Ns))
        for key in ("x", "v"):
            what = "x_N" if key == "x" else "v_N/h"
            ck.close(f"order of {what} -> ODE, neural F, eps={eps}",
                     lambda c=c, key=key: (c()[f"slope_{key}"], -1.0), atol=SLOPE_TOL)

    # 2. order 1 on a linear F against its closed form (expm of the first-order system)
    eps = 0.5
    c = lazy(lambda: convergence(Linear(A), eps, xl, ul, Ns=Ns, exact=linear_exact(A, eps, xl, ul)))
    for key in ("x", "v"):
        what = "x_N" if key == "x" else "v_N/h"
        ck.close(f"order of {what} -> closed form, linear F, eps={eps}",
                 lambda key=key: (c()[f"slope_{key}"], -1.0), atol=SLOPE_TOL)

    # 3. (x_N, v_N) = M^N (x_0, 0) for f_n = h lam x, scalar lam; gamma from the formula
    # gamma = 1 - h/eps (not read from the network), M = [[1 + c, gamma], [c, gamma]]
    def closed_form():
        worst = 0.0
        for lam, eps, N in [(-2.0, 1.0, 10), (1.5, 0.3, 40), (-30.0, 0.05, 100), (0.7, 4.0, 333)]:
            net = so.discretize(so.SecondOrderODE(lambda x, lam=lam: lam * x, eps=eps), N)
            h = 1.0 / N
            gm = 1.0 - h / eps
            cc = (1 - gm) * h * lam
            M = np.array([[1 + cc, gm], [cc, gm]])
            y = np.linalg.matrix_power(M, N) @ np.array([1.0, 0.0])
            with torch.no_grad():
                xN, vN = net(torch.ones(1, dtype=D), return_velocity=True)
            worst = max(worst, abs(xN.item() - y[0]) / abs(y[0]), abs(vN.item() - y[1]) / max(abs(y[1]), 1e-300))
        return worst

    # float64 rounding ~1e-16 per layer, amplified at most by N * ||M||: 1e-12 over <= 333 layers
    ck.below("linear closed form (x_N, v_N) = M^N (x_0, 0), gamma = 1 - h/eps, max rel. error",
             closed_form, 1e-12)

    # 3b. the first-order model on a linear F is expm(A) (a Neural ODE must not carry a velocity)
    def node_expm():
        with torch.no_grad():
            x1 = so.NeuralODE(Linear(A), **REF)(xl)
        return rel(x1, linear_exact(A, 0.0, xl, ul)[0])

    # dopri5 at rtol 1e-12 on an O(1) linear solution: ~1e-12; 1e-9 leaves margin
    ck.below("NeuralODE on a linear F = expm(A) x_0 (closed form), rel. error", node_expm, 1e-9)

    # 4. eps -> 0 recovers the first-order model with O(eps) error
    epss = ZERO_EPSS
    z = lazy(lambda: eps_to_zero(F, x0, epss))
    # the gap is eps * (a boundary layer term + a smooth O(1) term) + O(eps^2): slope 1 within 0.1
    ck.close(f"eps -> 0: |x_eps(1) - x_0(1)| slope in eps ({epss[0]}..{epss[-1]})",
             lambda: (z()["slope"], 1.0), atol=0.1)
    lam = -2.0

    def psi_closed(e):
        s = math.sqrt(1 + 4 * e * lam)
        return 0.5 * (1 + 1 / s) * math.exp(2 * lam / (1 + s)) + 0.5 * (1 - 1 / s) * math.exp(-(1 + s) / (2 * e))

    ck.close("eps -> 0: |psi_eps(-2) - e^-2| slope (closed form)",
             lambda: (fit_slope(epss, [abs(psi_closed(e) - math.exp(lam)) for e in epss]), 1.0), atol=0.1)

    def solver_gap():
        num = abs(so.SecondOrderODE(lambda x: lam * x, eps=epss[-1], method="dopri5", rtol=1e-10,
                                    atol=1e-12)(torch.ones(1, dtype=D)).item() - math.exp(lam))
        return num, abs(psi_closed(epss[-1]) - math.exp(lam))

    ck.close(f"solver matches psi_eps at eps={epss[-1]}: gap to e^-2", solver_gap,
             rtol=1e-5)  # rtol 1e-10 solver: 1e-7 of a 1e-3 gap

    # 5. gamma fixed, N growing: the limit is first order. gamma = 0.5 gives eps_N = 2/N <= 1/16
    # on the band, so the O(eps_N^2) term moves local slopes by < 0.03 (0.9 would need N >= 256).
    fg = lazy(lambda: fixed_gamma(F, x0, 0.5, Ns=Ns))
    ck.close("gamma=0.5 fixed, N -> inf: slope of distance to the first-order ODE",
             lambda: (fg()["slope_first"], -1.0), atol=SLOPE_TOL)
    ck.below("gamma=0.5 fixed, deepest N: dist. to 1st-order ODE / dist. to 2nd-order ODE (eps = eps(gamma, N_0))",
             lambda: fg()["to_first"][-1] / fg()["to_second"][-1], 0.05)  # measured 0.018 at
    # N = 1024 and 0.0044 at N = 4096 (the first distance is O(1/N), the second tends to a constant)

    # 6. gradients: adjoint error grows as eps -> 0; exact discretization does not
    ge = lazy(lambda: gradient_errors(F, x0[:8], [1.0, 0.1] if quick else [1.0, 0.3, 0.1, 0.05]))
    ck.below("adjoint vs direct backprop, eps=1, rel. gradient error (rtol 1e-8)", lambda: ge()["adjoint"][0], 1e-5)
    ck.above("adjoint error grows as eps -> 0: ratio smallest eps / eps=1",
             lambda: ge()["adjoint"][-1] / ge()["adjoint"][0], 100.0)
    ck.below("exact discretization vs autograd, worst over eps", lambda: max(ge()["exact"]), 1e-10)
    ck.measure("adjoint rel. gradient errors by eps",
               lambda: ", ".join(f"{e}: {fmt(r, 2)}" for e, r in zip(ge()["eps"], ge()["adjoint"], strict=True)))
    return ck.claims
