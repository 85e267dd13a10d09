"""psi_eps on the real line (THEORY.md section 3).

Left: ``psi_eps(lam)``, the time-1 map of ``eps x'' + x' = lam x`` (``x(0) = 1``, ``x'(0) = 0``),
for several eps, with its minimum ``m_eps`` marked; ``eps = 0`` is ``exp``. Real eigenvalues of
``Psi_eps(theta)`` coming from real eigenvalues of ``theta`` lie in ``[m_eps, inf)``.
Right: ``m_eps`` against eps with the bounds ``-(1+a) e^{-a} < m_eps <= -e^{-a}``, ``a = 1/(2 eps)``.
"""

from __future__ import annotations

import numpy as np

from figures._style import COLORS, new_figure
from secondorder.linear import m_eps, psi

EPSS = [0.0, 0.1, 0.3, 1.0, 3.0]


def compute(quick: bool, seed: int) -> dict:
    lam = np.linspace(-40.0, 2.5, 2001 if quick else 8001)
    curves = [{"eps": e, "psi": psi(lam, e).tolist(), "m": m_eps(e)[0], "argmin": m_eps(e)[1]}
              for e in EPSS]
    eps_grid = np.geomspace(0.03, 100.0, 40 if quick else 200)
    ms = [m_eps(e)[0] for e in eps_grid]
    return {"lam": lam.tolist(), "curves": curves, "eps_grid": eps_grid.tolist(), "m": ms}


def plot(data):
    fig, axes = new_figure(ncols=2, width=4.6, height=3.5)
    ax = axes[0, 0]
    lam = np.array(data["lam"])
    cmap = ["#555555", "#17becf", "#2ca02c", "#d62728", "#9467bd"]
    for c, color in zip(data["curves"], cmap, strict=True):
        label = "eps = 0 (exp)" if c["eps"] == 0 else f"eps = {c['eps']:g}"
        ax.plot(lam, c["psi"], color=color, lw=1.3, label=label)
        if c["eps"] > 0:
            ax.plot([c["argmin"]], [c["m"]], "o", color=color, ms=5)
            ax.annotate(f"m = {c['m']:.3f}", (c["argmin"], c["m"]), textcoords="offset points",
                        xytext=(4, -11), fontsize=6.5, color=color)
    ax.axhline(0, color=COLORS["reference"], lw=0.6)
    ax.axhline(-1, color=COLORS["reference"], lw=0.6, ls=":")
    ax.set_ylim(-1.1, 3.0)
    ax.set_xlim(lam[0], lam[-1])
    ax.set_xlabel("lambda (eigenvalue of theta)")
    ax.set_ylabel("psi_eps(lambda)")
    ax.set_title("time-1 map of eps x'' + x' = lambda x")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[0, 1]
    e = np.array(data["eps_grid"])
    a = 1 / (2 * e)
    ax.fill_between(e, -(1 + a) * np.exp(-a), -np.exp(-a), color=COLORS["momentum"], alpha=0.15,
                    label="bounds -(1+a)e^-a, -e^-a")
    ax.semilogx(e, data["m"], color=COLORS["momentum"], lw=1.5, label="m_eps = min psi_eps")
    ax.axhline(-1, color=COLORS["reference"], lw=0.6, ls=":")
    ax.set_ylim(-1.05, 0.02)
    ax.set_xlabel("eps")
    ax.set_ylabel("m_eps")
    ax.set_title("smallest reachable simple real eigenvalue")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def numbers(data):
    out = {f"m_eps eps={c['eps']:g}": round(c["m"], 6) for c in data["curves"] if c["eps"] > 0}
    out.update({f"argmin eps={c['eps']:g}": round(c["argmin"], 4) for c in data["curves"] if c["eps"] > 0})
    return out
