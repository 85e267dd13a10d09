"""What a learned initial velocity ``v_0 = phi(x_0)`` adds, and what it does not.

``MomentumResNet(..., init_velocity=phi)`` starts from ``v_0 = phi(x_0)`` instead of 0 (the
paper's image models learn it); its continuous counterpart is ``SecondOrderODE`` with
``x'(0) = phi(x_0)`` (pass ``v0=``). Claims, float64:

- **It adds linear maps.** (Time-independent fields: the weight-tied network and ``Psi(theta)``;
  a network with a different ``theta_n`` per layer is a time-dependent field and reaches the
  reflection without a velocity, measured.) With ``v_0 = B x_0`` (``B`` learned) the time-1 map of
  ``eps x'' + x' = theta x`` is ``Psi(theta) + Phi(theta) B`` (``Phi`` the response to the initial
  velocity), no longer restricted to the representable set: already at ``theta = 0`` it is
  ``I + k B`` with ``k = eps (1 - e^{-1/eps})``, so every matrix is reachable. The unscaled
  reflection ``diag(-1, 1)`` (eigenvalue ``-1 < m_eps``, not representable without a velocity, see
  docs/theory.md, representable linear maps) is fitted to ~0 loss by the Momentum ResNet and by
  the ODE with a linear initial velocity, while both stay at a loss ``>= ~(1 + m_eps)^2`` without.
- **It adds nothing to a ResNet** (``gamma = 0``: ``v_1 = f(x_0)`` overwrites ``v_0``; the output
  is bit-identical) and **vanishes in the first-order limit**: the velocity's reach ``k`` is
  ``O(eps)`` as ``eps -> 0`` (checked on ``SecondOrderODE`` against the closed form).
- The ODE with ``v0`` agrees with the block-exponential closed form.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from torch import nn

import secondorder as so
from secondorder.linear import m_eps

from ._claim import Checks, Claim, fmt, lazy

SECTION = "learned initial velocity"
DT = torch.float64
EPS, DEPTH, STEPS, LR = 1.0, 16, 600, 0.1
REACH_EPS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def reach(eps, t1=1.0):
    """``k(eps) = d x(t1) / d v0`` of ``eps x'' + x' = 0``: ``eps (1 - exp(-t1/eps))`` (closed form)."""
    return eps * (1.0 - math.exp(-t1 / eps)) if eps > 0 else 0.0


def block_map(theta, B, eps):
    """Time-1 map ``x_0 -> x(1)`` of ``eps x'' + x' = theta x`` with ``x'(0) = B x_0`` (torch,
    differentiable): ``[I 0] expm([[0, I], [theta/eps, -I/eps]]) [I; B]``."""
    d = theta.shape[0]
    I, Z = torch.eye(d, dtype=theta.dtype), torch.zeros(d, d, dtype=theta.dtype)
    E = torch.linalg.matrix_exp(torch.cat([torch.cat([Z, I], 1), torch.cat([theta / eps, -I / eps], 1)], 0))
    return E[:d, :d] + E[:d, d:] @ B


class HLinear(nn.Module):
    """``f(x) = h theta x`` (rows ``x @ (h theta)^T``), ``theta`` initialised small."""

    def __init__(self, d, h, g):
        super().__init__()
        self.h = h
        self.theta = nn.Parameter(0.01 * torch.randn(d, d, generator=g, dtype=DT))

    def forward(self, x):
        return self.h * x @ self.theta.T


def fit_linear(kind, target, velocity, seed=0, steps=STEPS):
    """Fit ``target`` by Adam (lr 0.1, cosine schedule) on ``|A - target|_F^2``; ``kind`` is ``"momentum"``
    (depth 16, weight-tied ``f = h theta x``, ``gamma = 1 - h/eps``; untied layers form a
    time-dependent field, whose maps are not restricted by the criterion) or ``"ode"`` (the exact map :func:`block_map`);
    ``velocity``: learn ``v_0 = B x_0`` (else ``v_0 = 0``). Returns ``(losses, model parts)``."""
    d = target.shape[0]
    g = torch.Generator().manual_seed(seed)
    T = torch.as_tensor(target, dtype=DT)
    X0 = torch.eye(d, dtype=DT)
    h = 1.0 / DEPTH
    B = nn.Linear(d, d, bias=False).to(DT)
    with torch.no_grad():
        B.weight.copy_(0.01 * torch.randn(d, d, generator=g, dtype=DT))
    if kind == "momentum":
        fs = [HLinear(d, h, g)] * DEPTH  # weight-tied: the discretization of one Psi(theta)
        net = so.MomentumResNet(fs, gamma=1 - h / EPS, init_velocity=B if velocity else None)
        params = list(net.parameters())  # B is the net's init_velocity submodule when learned

        def fwd():
            return net(X0).T

        parts = {"net": net, "B": B}
    else:
        theta = nn.Parameter(0.01 * torch.randn(d, d, generator=g, dtype=DT))
        params = [theta] + (list(B.parameters()) if velocity else [])

        def fwd():
            return block_map(theta, B.weight if velocity else torch.zeros(d, d, dtype=DT), EPS)

        parts = {"theta": theta, "B": B}
    opt = torch.optim.Adam(params, lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # settles Adam's last steps
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((fwd() - T) ** 2).sum()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        losses.append(float(((fwd() - T) ** 2).sum()))
    return losses, parts


def reach_measured(eps_list=REACH_EPS):
    """``x(1) - x_0`` per unit ``v0`` of ``SecondOrderODE(F = 0, eps)`` (dopri5, rtol 1e-10)."""
    x0 = torch.zeros(1, 1, dtype=DT)
    v0 = torch.ones(1, 1, dtype=DT)
    out = []
    for eps in eps_list:
        ode = so.SecondOrderODE(lambda x: torch.zeros_like(x), eps=eps, method="dopri5", rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            out.append(float(ode(x0, v0=v0)))
    return out


def run(quick: bool = True, seed: int = 0, only=None) -> list[Claim]:
    """All claims of this script (``only``: substrings of the claim names to run)."""
    torch.set_num_threads(1)
    ck = Checks(SECTION, only)
    D = np.diag([-1.0, 1.0])
    m = m_eps(EPS)[0]
    floor = (1 + m) ** 2  # distance^2 from the unscaled reflection to the representable set (approx.)
    fits = {(k, v): lazy(lambda k=k, v=v: fit_linear(k, D, v, seed)) for k in ("momentum", "ode")
            for v in (False, True)}

    def resnet_ignores():
        g = torch.Generator().manual_seed(seed)
        fs = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT) for _ in range(4)]
        phi = nn.Linear(3, 3).to(DT)
        x = torch.randn(5, 3, generator=g, dtype=DT)
        a = so.MomentumResNet(fs, gamma=0.0, init_velocity=phi)(x)
        b = so.ResNet(fs)(x)
        return f"max |diff| {fmt(float((a - b).abs().max().detach()))}", torch.equal(a, b)

    ck.check("gamma = 0 (ResNet): the output ignores v_0 = phi(x_0), bit for bit", resnet_ignores,
             "torch.equal with so.ResNet")
    tag = f"unscaled reflection, eps={EPS}, depth {DEPTH}"
    # without a velocity the eigenvalue -1 < m_eps is out of reach: the loss stays near (1+m)^2
    ck.above(f"Momentum ResNet, v_0 = 0: loss stays away from 0 ({tag})",
             lambda: fits[("momentum", False)]()[0][-1], 0.5 * floor)
    ck.below(f"Momentum ResNet, v_0 = B x_0 learned: loss ({tag})", lambda: fits[("momentum", True)]()[0][-1], 1e-8)
    ck.above(f"second-order ODE, x'(0) = 0: loss stays away from 0 ({tag})",
             lambda: fits[("ode", False)]()[0][-1], 0.5 * floor)
    ck.below(f"second-order ODE, x'(0) = B x_0 learned: loss ({tag})", lambda: fits[("ode", True)]()[0][-1], 1e-8)

    def ode_agrees():
        # the trained continuous model through so.SecondOrderODE (dopri5) with v0 = B x0
        _, parts = fits[("ode", True)]()
        theta = parts["theta"].detach()
        Bm = parts["B"].weight.detach()
        ode = so.SecondOrderODE(lambda x: x @ theta.T, eps=EPS, method="dopri5", rtol=1e-10, atol=1e-12)
        X0 = torch.eye(2, dtype=DT)
        with torch.no_grad():
            X1 = ode(X0, v0=X0 @ Bm.T).T
        return float((X1 - torch.as_tensor(D)).abs().max())

    # dopri5 at rtol 1e-10 on O(10) entries, plus the fitted loss (< 1e-8, i.e. entries < 1e-4)
    ck.below("trained (theta, B) through so.SecondOrderODE(v0 = B x_0) = reflection, max abs error",
             ode_agrees, 1e-4)

    def closed_form():
        g = torch.Generator().manual_seed(seed + 1)
        theta = torch.randn(3, 3, generator=g, dtype=DT)
        B = torch.randn(3, 3, generator=g, dtype=DT)
        worst = 0.0
        for eps in (0.2, 1.0, 5.0):
            ode = so.SecondOrderODE(lambda x: x @ theta.T, eps=eps, method="dopri5", rtol=1e-11, atol=1e-13)
            X0 = torch.eye(3, dtype=DT)
            with torch.no_grad():
                X1 = ode(X0, v0=X0 @ B.T).T
            ref = torch.from_numpy(scipy.linalg.expm(np.block([[np.zeros((3, 3)), np.eye(3)],
                                                               [theta.numpy() / eps, -np.eye(3) / eps]])))
            ref = ref[:3, :3] + ref[:3, 3:] @ B
            worst = max(worst, float((X1 - ref).abs().max() / ref.abs().max()))
        return worst

    # dopri5 at rtol 1e-11 over t1 = 1 on O(1) solutions: ~1e-10
    ck.below("SecondOrderODE with v0 = B x_0 = block-exponential closed form (eps in {0.2, 1, 5})",
             closed_form, 1e-8)
    k = lazy(reach_measured)
    ck.below("velocity reach k(eps) = eps (1 - e^(-1/eps)) on SecondOrderODE, max rel error",
             lambda: max(abs(a - reach(e)) / reach(e) for a, e in zip(k(), REACH_EPS, strict=True)), 1e-8)
    # the reach vanishes like eps: first-order limit, nothing added
    ck.close("velocity reach vanishes as eps -> 0: k(0.01) / 0.01", lambda: (k()[0] / 0.01, 1.0), atol=1e-6)
    ck.measure("velocity reach k(eps), eps in " + ", ".join(map(str, REACH_EPS)),
               lambda: ", ".join(fmt(v, 3) for v in k()))
    return ck.claims
