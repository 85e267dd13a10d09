"""Which eigenvalues Psi_eps(theta) can have, for real 2x2 theta (docs/theory.md#reachable-linear-maps).

Each panel scatters the eigenvalues of ``Psi_eps(theta)`` for many random real 2x2 ``theta``
(half with entries ``N(0, s^2)`` plus a random multiple of ``I`` reaching past the trough of
``psi_eps``, half near ``x I + y J``, ``J`` the rotation generator).
Complex eigenvalues fill the plane (they come from complex pairs of ``theta``); simple real
eigenvalues fill ``[m_eps, inf)`` only (``(0, inf)`` for ``eps = 0``); real eigenvalues below
``m_eps`` are reachable only as repeated pairs (e.g. ``-I``), a set of measure zero that random
sampling never hits. A reflection's eigenvalue ``-1`` is outside for every eps; ``c = 0.99 m_eps``
(the scaled reflection of ``represent(D, eps, scale="auto")``) is inside.
"""

from __future__ import annotations

import numpy as np
import torch

from figures._style import COLORS, new_figure
from secondorder.linear import Psi, m_eps

EPSS = [0.0, 0.1, 1.0]


def _eigs(P):
    tr = P[:, 0, 0] + P[:, 1, 1]
    det = P[:, 0, 0] * P[:, 1, 1] - P[:, 0, 1] * P[:, 1, 0]
    disc = (tr * tr / 4 - det).astype(complex)
    r = np.sqrt(disc)
    return np.stack([tr / 2 - r, tr / 2 + r], 1), disc.real > 0


def compute(quick: bool, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = 6000 if quick else 40000
    panels = []
    for eps in EPSS:
        m, lam_star = m_eps(eps)
        low = 1.6 * lam_star if eps > 0 else -5.0
        s = 0.4 * abs(low)
        # half generic theta, half near-rotations x I + y J (complex pairs spread over the plane)
        k = n // 2
        generic = rng.standard_normal((k, 2, 2)) * s + rng.uniform(low, 1.5, (k, 1, 1)) * np.eye(2)
        x = rng.uniform(low, 1.0, (n - k, 1, 1))
        y = rng.uniform(-max(np.pi, 0.6 * abs(low)), max(np.pi, 0.6 * abs(low)), (n - k, 1, 1))
        rot = x * np.eye(2) + y * np.array([[0.0, 1.0], [-1.0, 0.0]])
        rot = rot + 0.05 * s * rng.standard_normal((n - k, 2, 2))
        theta = torch.as_tensor(np.concatenate([generic, rot]))
        w, real = _eigs(Psi(theta, eps).numpy())
        simple_real = w[real].real.ravel()
        cplx = w[~real].ravel()
        panels.append({"eps": eps, "m": m, "real": simple_real.tolist(),
                       "complex_re": cplx.real.tolist(), "complex_im": cplx.imag.tolist(),
                       "min_real": float(simple_real.min())})
    return {"panels": panels, "n": n}


def plot(data):
    from matplotlib.lines import Line2D

    fig, axes = new_figure(ncols=len(data["panels"]), width=3.7, height=3.6)
    c_cplx, c_ok, c_no = "#6a8caf", COLORS["revnet"], COLORS["momentum"]
    for ax, p in zip(axes[0], data["panels"], strict=True):
        keep = (np.abs(p["complex_re"]) < 3) & (np.abs(p["complex_im"]) < 2)
        ax.scatter(np.array(p["complex_re"])[keep], np.array(p["complex_im"])[keep], s=1.5,
                   color=c_cplx, alpha=0.3, lw=0, rasterized=True, zorder=1)
        r = np.array(p["real"])
        r = r[np.abs(r) < 3]
        m = p["m"]
        # the real axis on top of the complex cloud: reachable [m, inf) green, unreachable red
        ax.plot([-3, m], [0, 0], color=c_no, lw=4, solid_capstyle="butt", zorder=3)
        ax.plot([m, 3], [0, 0], color=c_ok, lw=4, alpha=0.35, solid_capstyle="butt", zorder=3)
        ax.scatter(r, np.zeros_like(r), s=6, color=c_ok, lw=0, zorder=4)
        ax.axvline(m, color=c_no, lw=0.8, ls="--", zorder=2)
        ax.plot([-1], [0], "kx", ms=8, mew=2, zorder=5)
        if p["eps"] > 0:
            ax.plot([0.99 * m], [0], "k+", ms=10, mew=2, zorder=5)
        ax.annotate(f"$m_\\varepsilon$ = {m:.4g}", (m, 0), xytext=(m + 0.05, 1.35), fontsize=8,
                    color=c_no, zorder=6)
        if p["eps"] == 0:
            title = "$\\varepsilon = 0$ (ResNet / Neural ODE limit)"
        else:
            title = f"$\\varepsilon$ = {p['eps']:g} (Momentum ResNet / 2nd-order ODE)"
        ax.set_title(title, fontsize=9)
        ax.set_xlim(-1.6, 2.6)
        ax.set_ylim(-1.6, 1.6)
        ax.set_xlabel("Re $\\mu$ (dimensionless)")
        ax.set_ylabel("Im $\\mu$")
    handles = [
        Line2D([], [], ls="", marker="o", ms=5, color=c_cplx, label="complex eigenvalues (sampled)"),
        Line2D([], [], ls="", marker="o", ms=5, color=c_ok, label="simple real eigenvalues (sampled)"),
        Line2D([], [], color=c_ok, lw=4, alpha=0.35, label="simple real: reachable, $\\mu \\geq m_\\varepsilon$"),
        Line2D([], [], color=c_no, lw=4, label="simple real: unreachable, $\\mu < m_\\varepsilon$"),
        Line2D([], [], ls="", marker="x", ms=8, mew=2, color="k", label="$-1$: a reflection (unreachable)"),
        Line2D([], [], ls="", marker="+", ms=10, mew=2, color="k",
               label="$0.99\\,m_\\varepsilon$: a scaled reflection (reachable)"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"Which eigenvalues $\\mu$ can $\\Psi_\\varepsilon(\\theta)$ have? "
                 f"{data['n']} random real 2$\\times$2 $\\theta$ per panel", fontsize=11)
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return fig


def numbers(data):
    out = {}
    for p in data["panels"]:
        out[f"m_eps eps={p['eps']:g}"] = round(p["m"], 6)
        out[f"min sampled simple real eigenvalue eps={p['eps']:g}"] = round(p["min_real"], 6)
    return out
