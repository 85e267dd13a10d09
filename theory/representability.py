"""Which linear maps each model can represent (docs/theory.md, representable linear maps).

Checks, in float64 (regime: the ODE time-1 maps ``Psi_eps(theta)``, and for the learning
experiment also depth-16 networks in the ODE scaling ``f_n = h theta_n x``, ``h = 1/16``,
``gamma = 1 - h/eps``):

- ``psi`` against the scalar ODE solved by scipy (DOP853, rtol 1e-12) and ``Psi`` against
  ``so.SecondOrderODE`` (dopri5, rtol 1e-9) on a linear field;
- closed forms: ``psi(-1/(4 eps)) = (1+a) e^{-a}``; ``m_1 = -0.613499`` at ``-11.0478``;
  ``-(1+a) e^{-a} < m_eps <= -e^{-a}``, strictly decreasing in ``eps``, the global minimum on a
  dense scan; ``psi_eps -> exp`` at order 1 in ``eps`` (fitted slope);
- thresholds: the criterion's threshold on ``diag(mu, 1)`` (bisection on ``is_representable``)
  equals ``m_eps`` -- both against an independent reference: the minimum of the closed form of
  ``psi`` written out here (:func:`m_eps_reference`), not ``secondorder.linear.m_eps`` -- and
  the smallest simple real eigenvalue of ``Psi_eps(theta)`` over many
  random real 2x2 ``theta`` (then polished by Nelder-Mead) approaches ``m_eps`` from above and
  never crosses it; ``-I_2`` is representable at ``eps = 1`` and ``0.1`` through a complex pair;
- "any linear map up to a factor": ``represent(D, eps, scale="auto")`` on matrices with
  ``det < 0``, singular and non-diagonalizable ones, residual ``|Psi(theta) - c D|``; for small
  ``c`` the construction is the local inverse ``theta ~ lam_0 I + c D / psi'(lam_0)`` at the
  first zero ``lam_0`` of ``psi``; with ``eps = 0`` no multiple of a reflection is reachable;
- learning: a reflection scaled by ``c = 0.3``; first-order models (ResNet in the ODE scaling,
  Neural ODE ``expm(theta)``) stall at the floor ``c^2 sigma_min(D)^2`` (Eckart-Young: the
  distance from ``c D`` to the matrices with ``det >= 0``), momentum models reach ~0;
- nesting of the representable sets in eps (:mod:`theory.nesting`).

Each claim runs in isolation (:class:`theory._claim.Checks`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import torch
from torch import nn

import secondorder as so
from scripts.problems import ivp_psi
from secondorder.linear import (
    NotRepresentableError,
    Psi,
    dpsi,
    is_representable,
    m_eps,
    psi,
    psi_inverse_real,
    represent,
)

from ._claim import Checks, Claim, fmt, lazy

SECTION = "representable linear maps"
DT = torch.float64


def check_psi(ck, quick):
    eps_list = [0.05, 0.3, 1.0, 4.0]
    lams = [-50.0, -11.0, -2.0, 0.5, 2.0] if quick else [-80.0, -50.0, -11.0, -2.0, -0.1, 0.5, 2.0, 4.0]

    def ivp_err():
        errs = []
        for eps in eps_list:
            for lam in lams:
                for t1 in (1.0, 2.0):
                    ref = ivp_psi(lam, eps, t1)
                    errs.append(abs(psi(lam, eps, t1) - ref) / max(1.0, abs(ref)))
        return max(errs)

    # DOP853 at rtol 1e-12 over <= ~30 oscillations: 1e-9
    ck.below("psi = scalar ODE solution (scipy DOP853), max rel error", ivp_err, 1e-9)

    # Psi against the library's SecondOrderODE on F(t, x) = theta x
    rng = np.random.default_rng(1)
    theta = rng.standard_normal((3, 3))
    th = torch.tensor(theta, dtype=DT)

    def F(t, x):
        return x @ th.T

    for eps, t1 in ((0.5, 1.0), (0.2, 1.5)):
        def ode_err(eps=eps, t1=t1):
            model = so.SecondOrderODE(F, eps=eps, t1=t1, method="dopri5", rtol=1e-9, atol=1e-11)
            with torch.no_grad():
                X = model(torch.eye(3, dtype=DT)).numpy()  # rows: x(t1) for x0 = e_i
            return np.abs(X.T - Psi(theta, eps, t1)).max()

        # dopri5 at rtol 1e-9 / atol 1e-11 on an O(1) solution
        ck.below(f"Psi = so.SecondOrderODE time-t1 map (eps={eps}, t1={t1})", ode_err, 1e-7)

    def closed_form():
        worst = 0.0
        for eps in (1e-6, 0.01, 0.1, 1.0, 10.0, 1e6):
            a = 1 / (2 * eps)
            want = (1 + a) * math.exp(-a)
            if want > 0:
                worst = max(worst, abs(psi(-1 / (4 * eps), eps) - want) / want)
        return worst

    ck.below("psi(-1/(4 eps)) = (1+a) e^{-a}, max rel error over eps in 1e-6..1e6", closed_form, 1e-13)

    def slope():
        # eps -> 0: |psi_eps - exp| = O(eps), slope of log error vs log eps
        lam = np.linspace(-3, 2, 21)
        es = np.array([1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5])
        err = [np.abs(psi(lam, e) - np.exp(lam)).max() for e in es]
        return np.polyfit(np.log(es), np.log(err), 1)[0], 1.0

    # the next term is O(eps^2): over eps <= 1e-2 the local slope moves by < 0.05
    ck.close("eps -> 0: slope of max|psi_eps - exp| vs eps", slope, atol=0.05)


def _psi_osc(lam, eps):
    """Reference ``psi_eps(lam)`` (t1 = 1) on the oscillating side ``lam < -1/(4 eps)``, written
    out here from the solution of ``eps x'' + x' = lam x`` (independent of secondorder.linear):
    ``x(t) = e^{-t/(2 eps)} (cos(w t) + sin(w t) / (2 eps w))``, ``w = sqrt(-1 - 4 eps lam)/(2 eps)``."""
    w = math.sqrt(-1.0 - 4.0 * eps * lam) / (2.0 * eps)
    return math.exp(-1.0 / (2.0 * eps)) * (math.cos(w) + math.sin(w) / (2.0 * eps * w))


def m_eps_reference(eps):
    """Independent reference for ``(m_eps, lam*)``: the first trough of :func:`_psi_osc`, where
    bracketed by the angles ``w in (pi, 2 pi)`` and located by scipy's bounded scalar minimisation
    (Brent's method). ``t1 = 1``."""
    # the first trough: the angle w (x at t = 1) is in (pi, 2 pi) there; psi is unimodal on it
    lo = -(1.0 + (4.0 * eps * math.pi) ** 2) / (4.0 * eps)  # w = 2 pi
    hi = -(1.0 + (2.0 * eps * math.pi) ** 2) / (4.0 * eps)  # w = pi
    res = scipy.optimize.minimize_scalar(lambda x: _psi_osc(x, eps), bounds=(lo, hi), method="bounded",
                                         options=dict(xatol=1e-12 * max(1.0, abs(lo))))
    return float(res.fun), float(res.x)


def check_m_eps(ck, quick):
    # docs/theory.md, representable linear maps: m_1 = -0.613499 at lambda = -11.0478
    ck.close("m_1 = -0.613499 (docs/theory.md §3.2)", lambda: (m_eps(1.0)[0], -0.613499), atol=5e-7)
    ck.close("argmin of psi_1 = -11.0478 (docs/theory.md §3.2)", lambda: (m_eps(1.0)[1], -11.0478), atol=5e-5)
    eps_grid = np.geomspace(0.02, 50, 12 if quick else 40)
    ms = lazy(lambda: np.array([m_eps(e)[0] for e in eps_grid]))

    def bounds():
        a = 1 / (2 * eps_grid)
        ok = np.all((-(1 + a) * np.exp(-a) < ms()) & (ms() <= -np.exp(-a)))
        return f"{ok} ({len(eps_grid)} values)", bool(ok)

    ck.check("-(1+a) e^-a < m_eps <= -e^-a on an eps grid", bounds, "True")
    ck.below("m_eps strictly decreasing in eps: max difference", lambda: float(np.diff(ms()).max()), 0.0)

    def independent():
        worst = 0.0
        for e in eps_grid:
            worst = max(worst, abs(m_eps(e)[0] - m_eps_reference(e)[0]))
        return worst

    # bounded minimisation of a function flat at its minimum: value error ~ psi'' xatol^2, tiny
    ck.below("m_eps = min of the independent closed-form psi (scipy bounded minimisation), max abs diff",
             independent, 1e-10)

    def scan():
        # the first trough is the global minimum: a dense scan of the real line
        gap = 0.0
        for eps in (0.1, 1.0, 5.0):
            m, lam = m_eps(eps)
            grid = np.linspace(lam - 200 * (1 + eps), 5.0, 400001 if not quick else 100001)
            gap = max(gap, m - psi(grid, eps).min())
        return gap

    # the scan can only miss the minimum by psi'' h^2 (h ~ 1e-3): it is never below it
    ck.below("m_eps - (min of psi on a dense scan), eps in {0.1, 1, 5}", scan, 1e-12)


def _min_simple_real_eig(thetas, eps):
    """Smallest simple real eigenvalue of Psi(theta) over a batch of real 2x2 theta."""
    P = Psi(thetas, eps)
    tr = P[:, 0, 0] + P[:, 1, 1]
    det = P[:, 0, 0] * P[:, 1, 1] - P[:, 0, 1] * P[:, 1, 0]
    disc = tr * tr / 4 - det
    real = disc > 1e-12
    lo = tr / 2 - np.sqrt(np.where(real, disc, 0))
    return np.where(real, lo, np.inf)


def criterion_threshold(eps, lo=-5.0, hi=0.5, iters=60):
    """Bisection on ``is_representable(diag(mu, 1), eps)``: the smallest representable ``mu``."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if is_representable(np.diag([mid, 1.0]), eps) else (mid, hi)
    return hi


def check_thresholds(ck, quick, seed):
    rng = np.random.default_rng(seed)
    for eps in (0.1, 1.0, 3.0):
        # the criterion's cluster tolerance (1e-6) decides at the bound; the reference is the
        # independent minimum of the closed form (not secondorder.linear.m_eps)
        ck.close(f"criterion threshold on diag(mu, 1) = independent min of psi (eps={eps})",
                 lambda eps=eps: (criterion_threshold(eps), m_eps_reference(eps)[0]), atol=2e-6)

        def numerical(eps=eps):
            # numerically: random real 2x2 theta around the trough, then Nelder-Mead
            m, lam_star = m_eps_reference(eps)
            n = 4000 if quick else 40000
            thetas = rng.standard_normal((n, 2, 2)) * 2 * abs(lam_star) / 3 + rng.uniform(
                1.5 * lam_star, 0.5 * lam_star, (n, 1, 1)) * np.eye(2)
            vals = _min_simple_real_eig(thetas, eps)
            best = thetas[int(np.argmin(vals))]

            def f(x):
                return float(_min_simple_real_eig(x.reshape(1, 2, 2), eps)[0])

            res = scipy.optimize.minimize(f, best.ravel(), method="Nelder-Mead",
                                          options=dict(xatol=1e-10, fatol=1e-14, maxiter=4000))
            found = min(float(vals.min()), res.fun)
            return f"{fmt(found, 9)} (reference {fmt(m, 9)})", m - 1e-12 <= found <= m + 1e-6 * abs(m)

        # never below m_eps (rounding of Psi ~1e-14); within 1e-6 |m| after Nelder-Mead
        ck.check(f"numerical min real eigenvalue of Psi(theta) over 2x2 theta (eps={eps})", numerical,
                 "in [m_ref - 1e-12, m_ref + 1e-6 |m_ref|]")
    for eps in (1.0, 0.1):
        def minus_identity(eps=eps):
            theta = represent(-np.eye(2), eps)
            res = np.abs(Psi(theta, eps) + np.eye(2)).max()
            w = np.linalg.eigvals(theta)
            return f"residual {fmt(res)}, eig(theta) {w[0]:.4g}", res < 1e-12 and abs(w[0].imag) > 0.1

        ck.check(f"-I_2 = Psi(theta) with a complex pair of eigenvalues (eps={eps})", minus_identity,
                 "residual < 1e-12, non-real")


def check_factor(ck, seed):
    rng = np.random.default_rng(seed)
    eps = 1.0
    Q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    Q[:, 0] *= np.sign(np.linalg.det(Q)) * -1  # det Q = -1
    cases = {
        "reflection diag(-1, 1)": np.diag([-1.0, 1.0]),
        "random orthogonal, det -1 (4x4)": Q,
        "random 5x5": rng.standard_normal((5, 5)),
        "singular rank 1": np.outer([1.0, -2.0, 0.5], [0.3, 1.0, -1.0]),
        "Jordan block J_2(-3) + [2]": np.array([[-3.0, 1, 0], [0, -3.0, 0], [0, 0, 2.0]]),
        "nilpotent": np.array([[0.0, 1.0], [0.0, 0.0]]),
    }

    def factor():
        worst, cmin = 0.0, math.inf
        for D in cases.values():
            c, theta = represent(D, eps, scale="auto")
            worst = max(worst, np.abs(Psi(theta, eps) - c * D).max() / max(1.0, np.abs(c * D).max()))
            cmin = min(cmin, c)
        return f"residual {fmt(worst)}, smallest c {fmt(cmin)}", worst < 1e-9 and cmin > 0

    ck.check(f"Psi(theta) = c D, c > 0, for {len(cases)} matrices (det<0, singular, Jordan)", factor,
             "max rel residual < 1e-9 and every c > 0")

    def local_inverse():
        # small c: theta = g(c D) ~ lam_0 I + c D / psi'(lam_0), error O(c^2)
        lam0 = psi_inverse_real(0.0, eps)
        d0 = float(dpsi(lam0, eps))
        D = cases["random 5x5"]
        errs = []
        for c in (1e-2, 1e-3):
            theta = represent(c * D, eps)
            errs.append(np.abs(theta - (lam0 * np.eye(5) + c * D / d0)).max())
        return math.log(errs[0] / errs[1]) / math.log(10), 2.0

    ck.close("theta(c D) - (lam_0 I + c D/psi'(lam_0)) = O(c^2): slope", local_inverse, atol=0.1)

    def eps_zero():
        raised = []
        for c in (1.0, 0.3, 1e-3):
            try:
                represent(c * np.diag([-1.0, 1.0]), 0.0)
                raised.append(False)
            except NotRepresentableError:
                raised.append(True)
        return str(all(raised)), all(raised)

    ck.check("eps = 0: c * reflection not representable, c in {1, 0.3, 1e-3}", eps_zero, "True")


class HLinear(nn.Module):
    """Residual function in the ODE scaling: ``f(x) = h theta x`` (rows: ``x @ (h theta)^T``)."""

    def __init__(self, d, h, generator):
        super().__init__()
        self.h = h
        self.theta = nn.Parameter(0.01 * torch.randn(d, d, generator=generator, dtype=DT))

    def forward(self, x):
        return self.h * x @ self.theta.T


def train_linear(kind, target, eps, depth, steps, lr, seed):
    """Fit ``target`` (d x d) by gradient descent (Adam); returns (final loss, model).

    Loss ``|A - target|_F^2`` where ``A`` is the model's linear map (the network applied to the
    rows of ``I``): ``kind`` in ``resnet``, ``momentum`` (depth layers ``f_n = h theta_n x``,
    ``h = 1/depth``, ``gamma = 1 - h/eps``), ``node`` (``expm(theta)``), ``second_order``
    (``Psi(theta, eps)``)."""
    d = target.shape[0]
    g = torch.Generator().manual_seed(seed)
    h = 1.0 / depth
    X0 = torch.eye(d, dtype=DT)
    if kind in ("resnet", "momentum"):
        fs = [HLinear(d, h, g) for _ in range(depth)]
        model = so.ResNet(fs) if kind == "resnet" else so.MomentumResNet(fs, gamma=1 - h / eps)

        def fwd():
            return model(X0).T
    else:
        model = nn.Parameter(0.01 * torch.randn(d, d, generator=g, dtype=DT))

        def fwd():
            return torch.linalg.matrix_exp(model) if kind == "node" else Psi(model, eps)

    params = list(model.parameters()) if isinstance(model, nn.Module) else [model]
    opt = torch.optim.Adam(params, lr=lr)
    T = torch.as_tensor(target, dtype=DT)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((fwd() - T) ** 2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((fwd() - T) ** 2).sum()), model


def check_learning(ck, quick, seed):
    eps, depth, c = 1.0, 16, 0.3
    steps = 600 if quick else 2000
    targets = {"reflection": np.diag([-1.0, 1.0])}
    if not quick:
        rng = np.random.default_rng(seed)
        Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        Q[:, 0] *= -np.sign(np.linalg.det(Q))
        targets["orthogonal det -1 (3x3)"] = Q
    for name, D in targets.items():
        floor = (c * np.linalg.svd(D, compute_uv=False).min()) ** 2
        tag = f"{name}, c={c}, eps={eps}, depth {depth}"
        fit = {k: lazy(lambda k=k, D=D: train_linear(k, c * D, eps, depth, steps, 0.1, seed))
               for k in ("resnet", "node", "momentum", "second_order")}

        def rho(fit=fit):
            net = fit["resnet"]()[1]
            return max(float(torch.linalg.eigvals(f.h * f.theta.detach()).abs().max()) for f in net.functions)

        ck.below(f"ResNet stays in the ODE regime: max_n rho(h theta_n) ({name})", rho, 1.0)

        def stall(kind, up, fit=fit, floor=floor):
            loss = fit[kind]()[0]
            return fmt(loss), floor * (1 - 1e-9) <= loss <= up * floor

        # det(prod(I + h theta_n)) > 0 when every rho(h theta_n) < 1: loss >= floor; stall within 5%
        ck.check(f"ResNet loss stalls at floor c^2 sigma_min^2 ({tag})", lambda: stall("resnet", 1.05),
                 f"in [{fmt(floor)}, 1.05 x floor]")
        ck.check(f"Neural ODE expm(theta) loss stalls at floor ({tag})", lambda: stall("node", 1.1),
                 f"in [{fmt(floor)}, 1.1 x floor]")
        ck.below(f"Momentum ResNet (gamma = 1 - h/eps) loss ({tag})", lambda fit=fit: fit["momentum"]()[0], 1e-8)
        ck.below(f"second-order ODE Psi(theta) loss ({tag})", lambda fit=fit: fit["second_order"]()[0], 1e-8)

    # unscaled: -1 < m_eps is a simple eigenvalue, not representable; the ODE model stays away
    m = m_eps_reference(eps)[0]
    ck.above(f"second-order ODE on the unscaled reflection: loss (>= ~(1+m_eps)^2 = {(1 + m) ** 2:.4f})",
             lambda: train_linear("second_order", targets["reflection"], eps, depth, steps, 0.1, seed)[0],
             0.5 * (1 + m) ** 2)


def run(quick: bool = False, seed: int = 0, only=None) -> list[Claim]:
    """All claims of this script (``only``: substrings of the claim names to run)."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    ck = Checks(SECTION, only)
    check_psi(ck, quick)
    check_m_eps(ck, quick)
    check_thresholds(ck, quick, seed)
    check_factor(ck, seed)
    check_learning(ck, quick, seed)
    from theory import nesting  # the nesting of the representable sets (same topic)

    nesting.check_nesting(ck, quick, seed)
    return ck.claims
