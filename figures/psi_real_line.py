"""psi_eps on the real line (docs/theory.md#psi-on-the-real-line).

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
    fig, axes = new_figure(ncols=2, width=4.8, height=3.7)
    ax = axes[0, 0]
    lam = np.array(data["lam"])
    cmap = ["#555555", "#17becf", "#2ca02c", "#d62728", "#9467bd"]
    styles = ["-", "--", "-", "-", "-"]
    for c, color, ls in zip(data["curves"], cmap, styles, strict=True):
        if c["eps"] == 0:
            label = "$\\varepsilon = 0$: $e^\\lambda$"
        else:
            label = f"$\\varepsilon$ = {c['eps']:g}: $m_\\varepsilon$ = {c['m']:.3f}"
        lw = 2.4 if c["eps"] == 0 else 1.3
        ax.plot(lam, c["psi"], ls, color=color, lw=lw, label=label, alpha=0.8 if c["eps"] == 0 else 1)
        if c["eps"] > 0:
            ax.plot([c["argmin"]], [c["m"]], "o", color=color, ms=5, zorder=5)
    ax.axhline(0, color=COLORS["reference"], lw=0.6)
    ax.axhline(-1, color=COLORS["reference"], lw=0.8, ls=":")
    ax.text(-22, -1.03, "$-1$: a reflection's eigenvalue", fontsize=7, va="top", color=COLORS["reference"])
    ax.set_ylim(-1.25, 3.0)
    # eps = 0.1 hugs e^lambda (the gap is O(eps)): a zoom shows them apart
    ins = ax.inset_axes([0.43, 0.47, 0.3, 0.28])
    for c, color, ls in zip(data["curves"][:2], cmap[:2], styles[:2], strict=True):
        ins.plot(lam, c["psi"], ls, color=color, lw=2.0 if c["eps"] == 0 else 1.3)
    ins.axhline(0, color=COLORS["reference"], lw=0.6)
    ins.set_xlim(-7, -1)
    ins.set_ylim(-0.02, 0.06)
    ins.tick_params(labelsize=6)
    ins.set_title("zoom: $\\varepsilon$ = 0 vs 0.1", fontsize=7)
    ax.set_xlim(lam[0], lam[-1])
    ax.set_xlabel("$\\lambda$, eigenvalue of $\\theta$ (1/time)")
    ax.set_ylabel("$\\psi_\\varepsilon(\\lambda)$, eigenvalue of the time-1 map")
    ax.set_title("$\\psi_\\varepsilon$: time-1 map of $\\varepsilon x'' + x' = \\lambda x$, $x'(0) = 0$", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", title="dots: minima $m_\\varepsilon$", title_fontsize=7)

    ax = axes[0, 1]
    e = np.array(data["eps_grid"])
    a = 1 / (2 * e)
    ax.fill_between(e, -(1 + a) * np.exp(-a), -np.exp(-a), color=COLORS["momentum"], alpha=0.15,
                    label="bounds $-(1+a)e^{-a} < m_\\varepsilon \\leq -e^{-a}$, $a = 1/(2\\varepsilon)$")
    ax.semilogx(e, data["m"], color=COLORS["momentum"], lw=1.5, label="$m_\\varepsilon = \\min_\\lambda \\psi_\\varepsilon(\\lambda)$")
    one = [c for c in data["curves"] if c["eps"] == 1.0]
    if one:
        ax.plot([1.0], [one[0]["m"]], "o", color=COLORS["momentum"], ms=5)
        ax.annotate(f"$m_1$ = {one[0]['m']:.6f}", (1.0, one[0]["m"]), xytext=(8, 6),
                    textcoords="offset points", fontsize=8)
    ax.axhline(-1, color=COLORS["reference"], lw=0.8, ls=":")
    ax.set_ylim(-1.05, 0.02)
    ax.set_xlabel("$\\varepsilon$ (mass, time units)")
    ax.set_ylabel("$m_\\varepsilon$")
    ax.set_title("most negative reachable simple real eigenvalue: always $> -1$", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Linear maps reachable by a second-order ODE: $\\psi_\\varepsilon$ on the real line",
                 fontsize=11)
    fig.tight_layout()
    return fig


def numbers(data):
    out = {f"m_eps eps={c['eps']:g}": round(c["m"], 6) for c in data["curves"] if c["eps"] > 0}
    out.update({f"argmin eps={c['eps']:g}": round(c["argmin"], 4) for c in data["curves"] if c["eps"] > 0})
    return out
