"""docs/theory.md §8: the Strang splitting scheme is a second-order, exactly reversible integrator.

Checks, in float64:

- ``discretize(ode, N, scheme="strang")`` converges at order 2: the fitted slope of the error at
  ``t1`` against ``N`` is -2 for ``x`` and for ``v_N / h -> x'(t1)``, eps in {0.1, 1, 10}, on a
  time-dependent neural ``F`` against scipy's DOP853 at rtol 1e-13; the default (semi-implicit
  Euler) scheme has slope -1 on the same problem;
- the linear closed form: in ``(x, v)`` one step is ``S^-1 M S`` with ``M`` the Momentum ResNet
  matrix of §2.5 at ``gamma = exp(-h/eps)`` and ``S`` the half drift;
- linear stability: ``F = lam x`` (lam < 0) is stable exactly for ``h |lam| < 2 coth(h / 2 eps)``;
- ``eps -> 0`` at a fixed step (``h / eps >= 125``): bounded, order 1 against a stiff solver;
- the memory-free exact backward equals autograd's gradients, and its chain round-trips bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import secondorder as so
from scripts.problems import fit_slope, reference, rel, time_problem

from ._claim import Checks, Claim, fmt, lazy

SECTION = "splitting"
D = torch.float64
# N = 16..1024: errors from ~1e-3 (eps = 0.1, N = 16) down to ~1e-10 (eps = 10, N = 1024), all
# far above the DOP853 reference's ~1e-13; local slopes are -2.00 +/- 0.01 over the whole band
NS = [16, 32, 64, 128, 256, 512, 1024]
NS_QUICK = NS[:5]
SLOPE_TOL = 0.1
EPSS = [0.1, 1.0, 10.0]
# eps -> 0 at a fixed step: eps = 1e-4, h = 0.1 .. 0.0125, so h / eps >= 125 (gamma <= e^-125)
ZERO_EPS = 1e-4
ZERO_NS = [10, 20, 40, 80]


@torch.no_grad()
def convergence(F, eps, x0, u0, Ns, scheme="strang", ref=None):
    """Errors at t1 = 1 of ``discretize(SecondOrderODE(F, eps), N, scheme=scheme)`` against
    ``ref`` (default: DOP853 at rtol 1e-13); the network starts from ``v0 = h u0``."""
    ref = reference(F, eps, x0, u0) if ref is None else ref
    ode = so.SecondOrderODE(F, eps=eps)
    ex, ev = [], []
    for N in Ns:
        xN, vN = so.discretize(ode, N, scheme=scheme)(x0, v0=u0 / N, return_velocity=True)
        ex.append(rel(xN, ref[0]))
        ev.append(rel(vN * N, ref[1]))
    return {"N": list(Ns), "err_x": ex, "err_v": ev, "slope_x": fit_slope(Ns, ex), "slope_v": fit_slope(Ns, ev)}


def stability_bound(h, eps):
    """The largest stable ``h |lam|`` for ``F = lam x``, lam < 0: ``2 coth(h / (2 eps))``."""
    return 2.0 / math.tanh(h / (2 * eps))


@torch.no_grad()
def linear_growth(lam, eps, N, t1=None):
    """``max_n |x_n|`` of the network on ``F = lam x`` from ``x_0 = 1, v_0 = 0`` over ``N`` layers
    of step ``h = 1 / 10`` (``t1 = N / 10``)."""
    t1 = N / 10 if t1 is None else t1
    net = so.discretize(so.SecondOrderODE(lambda x: lam * x, eps=eps, t1=t1), N, scheme="strang")
    return float(net.trajectory(torch.ones(1, dtype=D)).abs().max())


def run(quick: bool, seed: int, only=None) -> list[Claim]:
    """All claims of this script (``only``: substrings of the claim names to run)."""
    ck = Checks(SECTION, only)
    F, x0, u0, g = time_problem(seed)
    Ns = NS_QUICK if quick else NS

    # 1. order 2 in x and v/h; the euler scheme's order 1 on the same problem
    refs = {eps: lazy(lambda eps=eps: reference(F, eps, x0, u0)) for eps in EPSS}
    for eps in EPSS:
        c = lazy(lambda eps=eps: convergence(F, eps, x0, u0, Ns, ref=refs[eps]()))
        for key in ("x", "v"):
            what = "x_N" if key == "x" else "v_N/h"
            ck.close(f"strang: order of {what}, neural F(t, x), eps={eps}",
                     lambda c=c, key=key: (c()[f"slope_{key}"], -2.0), atol=SLOPE_TOL)
        ck.measure(f"strang: rel. error of x_N at N={Ns[0]}..{Ns[-1]}, eps={eps}",
                   lambda c=c: ", ".join(fmt(e, 2) for e in c()["err_x"]))
    for eps in (0.1, 1.0):
        e = lazy(lambda eps=eps: convergence(F, eps, x0, u0, [32, 64, 128, 256], "euler", ref=refs[eps]()))
        ck.close(f"euler (contrast): order of x_N, same problem, eps={eps}",
                 lambda e=e: (e()["slope_x"], -1.0), atol=SLOPE_TOL)
    def error_at(N, scheme, eps=1.0):
        with torch.no_grad():
            xN = so.discretize(so.SecondOrderODE(F, eps=eps), N, scheme=scheme)(x0, v0=u0 / N)
        return rel(xN, refs[eps]()[0])

    ck.below("strang at N=16 / euler at N=256, error of x_N, eps=1",
             lambda: error_at(16, "strang") / error_at(256, "euler"), 1.0)  # measured 0.09

    # 2. linear closed form: S^-1 M^N S with S(x, v) = (x + v/2, v), gamma = exp(-h/eps) (formula)
    def closed_form():
        worst = 0.0
        for lam, eps, N in [(-2.0, 1.0, 10), (1.5, 0.3, 40), (-30.0, 0.05, 100), (0.7, 4.0, 333), (-5.0, 0.01, 20)]:
            h = 1.0 / N
            gm = math.exp(-h / eps)
            cc = (1 - gm) * h * lam
            M = np.array([[1 + cc, gm], [cc, gm]])
            S = np.array([[1.0, 0.5], [0.0, 1.0]])
            y = np.linalg.solve(S, np.linalg.matrix_power(M, N) @ S @ np.array([1.0, 0.3 * h]))
            net = so.discretize(so.SecondOrderODE(lambda x, lam=lam: lam * x, eps=eps), N, scheme="strang")
            with torch.no_grad():
                xN, vN = net(torch.ones(1, dtype=D), v0=torch.full((1,), 0.3 * h, dtype=D), return_velocity=True)
            worst = max(worst, abs(xN.item() - y[0]) / abs(y[0]), abs(vN.item() - y[1]) / max(abs(y[1]), 1e-300))
        return worst

    ck.below("linear closed form S^-1 M^N S (x_0, v_0), gamma = exp(-h/eps), max rel. error", closed_form, 1e-12)

    # 3. linear stability at h = 0.1: 2000 layers at 0.97 and 1.03 times the bound in h |lam|
    cases = [(1e-3, 0.1), (0.1, 0.1), (1.0, 0.1), (10.0, 0.1)]

    def stability():
        inside, outside = 0.0, math.inf
        for eps, h in cases:
            b = stability_bound(h, eps)
            inside = max(inside, linear_growth(-0.97 * b / h, eps, 2000))
            outside = min(outside, linear_growth(-1.03 * b / h, eps, 2000))
        return inside, outside

    st = lazy(stability)
    ck.below("stability: max |x_n| over 2000 layers at h|lam| = 0.97 * 2 coth(h/2eps), worst eps", lambda: st()[0], 10.0)
    ck.above("stability: max |x_n| over 2000 layers at h|lam| = 1.03 * 2 coth(h/2eps), least eps", lambda: st()[1], 1e6)

    # 4. eps -> 0 at a fixed step: bounded, order 1 against a stiff (Radau) reference
    def small_mass():
        ref = reference(F, ZERO_EPS, x0, u0, method="Radau", rtol=1e-10, atol=1e-12)
        ode = so.SecondOrderODE(F, eps=ZERO_EPS)
        errs, peak = [], 0.0
        with torch.no_grad():
            for N in ZERO_NS:
                xs = so.discretize(ode, N, scheme="strang").trajectory(x0, v0=u0 / N)
                peak = max(peak, float(xs.abs().max()) / float(x0.abs().max()))
                errs.append(rel(xs[-1], ref[0]))
        return {"slope": fit_slope(ZERO_NS, errs), "errs": errs, "peak": peak}

    sm = lazy(small_mass)
    # first order with an O(h^2) correction: local slopes measured -0.96 .. -1.0; 0.15 margin
    ck.close(f"eps={ZERO_EPS}, h = 0.1..0.0125 (h/eps >= 125): order of x_N (Euler on z)",
             lambda: (sm()["slope"], -1.0), atol=0.15)
    ck.below(f"eps={ZERO_EPS}: max |x_n| / max |x_0| over all depths (bounded)", lambda: sm()["peak"], 10.0)
    ck.measure(f"eps={ZERO_EPS}: rel. errors at N={ZERO_NS}", lambda: ", ".join(fmt(e, 2) for e in sm()["errs"]))

    # 5. exact backward = autograd; bit-exact chain
    def gradients():
        depth = 64 if quick else 400
        ode = so.SecondOrderODE(F, eps=0.1)
        out = {}
        for backward in ("autograd", "exact"):
            net = so.discretize(ode, depth, backward=backward, scheme="strang")
            F.zero_grad()
            x = x0[:8].clone().requires_grad_(True)
            (net(x, v0=u0[:8] / depth) ** 2).sum().backward()
            out[backward] = [x.grad] + [p.grad.clone() for p in F.parameters()]
        num = sum(((a - b) ** 2).sum() for a, b in zip(out["exact"], out["autograd"], strict=True)).sqrt()
        return float(num / sum((b**2).sum() for b in out["autograd"]).sqrt())

    ck.below("exact backward vs autograd, rel. gradient error (eps=0.1)", gradients, 1e-10)

    def roundtrip():
        net = so.discretize(so.SecondOrderODE(F, eps=0.05), 300, scheme="strang")
        out = so.exact_roundtrip(net, x0, v0=u0 / 300)
        return str(out["bit_exact"]), out["bit_exact"]

    ck.check("exact_roundtrip of the chain (z, v), 300 layers, eps=0.05", roundtrip, "True (bit for bit)")
    return ck.claims
