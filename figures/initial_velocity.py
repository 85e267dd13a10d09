"""What a learned initial velocity adds (docs/theory-checks.md, learned initial velocity).

Left: training loss on the unscaled reflection ``diag(-1, 1)`` (eps = 1) of the weight-tied
Momentum ResNet (depth 16, ``gamma = 1 - h/eps``) and of the second-order ODE's exact map, with
``v_0 = 0`` and with a learned ``v_0 = B x_0``; without a velocity both stall near
``(1 + m_eps)^2`` (the eigenvalue -1 is below ``m_eps``), with one both reach ~0.
Right: the velocity's reach ``k(eps) = d x(1) / d v_0 = eps (1 - e^{-1/eps})`` (closed form) and
measured on ``SecondOrderODE``: it vanishes like eps in the first-order limit.
"""

from __future__ import annotations

import numpy as np

from secondorder.linear import m_eps
from theory.initial_velocity import EPS, REACH_EPS, fit_linear, reach, reach_measured


def compute(quick: bool, seed: int) -> dict:
    D = np.diag([-1.0, 1.0])
    curves = {f"{k}|{v}": fit_linear(k, D, v, seed)[0] for k in ("momentum", "ode") for v in (False, True)}
    eps = np.geomspace(1e-3, 100, 200)
    return {"curves": curves, "floor": (1 + m_eps(EPS)[0]) ** 2, "eps": eps.tolist(),
            "k": [reach(e) for e in eps], "eps_measured": list(REACH_EPS), "k_measured": reach_measured()}


def plot(data):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 4.4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    styles = {"momentum|False": ("#1f77b4", "-", r"Momentum ResNet, $v_0 = 0$"),
              "momentum|True": ("#1f77b4", "--", r"Momentum ResNet, $v_0 = B x_0$"),
              "ode|False": ("#d62728", "-", r"2nd-order ODE, $x'(0) = 0$"),
              "ode|True": ("#d62728", "--", r"2nd-order ODE, $x'(0) = B x_0$")}
    for key, (c, ls, label) in styles.items():
        y = np.maximum(np.array(data["curves"][key]), 1e-30)
        ax.plot(np.arange(len(y)), y, color=c, ls=ls, lw=1.4, label=f"{label}: final {y[-1]:.1e}")
    ax.axhline(data["floor"], color="#555555", lw=0.8, ls=":", label=rf"$(1 + m_1)^2 = {data['floor']:.3f}$")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel(r"loss $\|A - \mathrm{diag}(-1, 1)\|_F^2$")
    ax.set_title(r"Unscaled reflection, $\varepsilon = 1$: a learned $v_0$ reaches it", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)
    ax2.plot(data["eps"], data["k"], color="#2ca02c", lw=1.6, label=r"$k(\varepsilon) = \varepsilon(1 - e^{-1/\varepsilon})$")
    ax2.plot(data["eps_measured"], data["k_measured"], "ko", ms=4, label="SecondOrderODE (dopri5)")
    ax2.plot(data["eps"], data["eps"], color="#999999", lw=0.8, ls=":", label=r"$k = \varepsilon$")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_ylim(1e-3, 2)
    ax2.set_xlabel(r"$\varepsilon$")
    ax2.set_ylabel(r"reach $\partial x(1) / \partial v_0$ (at $F = 0$)")
    ax2.set_title(r"The velocity's reach vanishes as $\varepsilon \to 0$" + f"\n$k(1) = {reach(1.0):.3f}$", fontsize=10)
    ax2.legend(fontsize=7.5, loc="lower right")
    return fig


def numbers(data) -> dict:
    return {k.replace("|", " v0=") + " final loss": float(v[-1]) for k, v in data["curves"].items()} | {
        "floor (1+m_1)^2": round(float(data["floor"]), 6), "k(1)": round(reach(1.0), 6)}
