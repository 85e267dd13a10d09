"""Nesting of the representable sets: the reachable real eigenvalues grow with eps
(docs/theory-checks.md, nesting).

Left: the threshold ``m_eps`` against eps: a simple real eigenvalue ``mu`` of ``Psi_eps(theta)``
(real ``theta``) is reachable iff ``mu >= m_eps`` (shaded: ``[m_eps, inf)``), with the criterion's
own threshold (bisection on :func:`secondorder.linear.is_representable`) as markers; ``eps = 0``
(Neural ODE) reaches only ``(0, inf)``.
Right: random 3x3 and 4x4 matrices (rows, sorted) against an eps ladder (columns): representable
(filled) or not. Every row is a staircase: once representable, representable at every larger eps.
"""

from __future__ import annotations

import numpy as np

from secondorder.linear import m_eps
from theory.nesting import EPS_LADDER, nesting_table, random_matrices, violations
from theory.representability import criterion_threshold


def compute(quick: bool, seed: int) -> dict:
    eps_grid = np.geomspace(0.01, 100.0, 60 if quick else 300)
    ms = [m_eps(e)[0] for e in eps_grid]
    marks = [0.05, 0.2, 1.0, 5.0]
    crit = [criterion_threshold(e, iters=40) for e in marks]
    n = 24 if quick else 60
    mats = random_matrices(n, 3, seed) + random_matrices(n // 2, 4, seed + 1)
    table = nesting_table(mats)
    first = [int(np.argmax(r)) if r.any() else len(EPS_LADDER) for r in table]
    order = np.argsort(first, kind="stable")
    return {"eps_grid": eps_grid.tolist(), "m": ms, "marks": marks, "crit": crit,
            "table": table[order].astype(int).tolist(), "ladder": list(EPS_LADDER),
            "violations": len(violations(table)), "n": len(mats)}


def plot(data):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.6, 3.8), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.2, 1])
    e, m = np.array(data["eps_grid"]), np.array(data["m"])
    ax.fill_between(e, m, 1.0, color="#2ca02c", alpha=0.18, lw=0, label=r"reachable $[m_\varepsilon, \infty)$")
    ax.plot(e, m, color="#2ca02c", lw=1.6, label=r"$m_\varepsilon = \min_\lambda \psi_\varepsilon(\lambda)$")
    ax.plot(data["marks"], data["crit"], "kx", ms=7, label="criterion's threshold (bisection)")
    ax.axhline(0, color="#555555", lw=0.8, ls="--", label=r"$\varepsilon = 0$ (Neural ODE): $(0, \infty)$")
    ax.axhline(-1, color="#999999", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(-1.05, 0.35)
    ax.set_xlabel(r"$\varepsilon$ (dimensionless, $t_1 = 1$)")
    ax.set_ylabel(r"smallest reachable simple real eigenvalue")
    ax.set_title(r"Reachable real eigenvalues grow with $\varepsilon$" + f"\n$m_1 = {m_eps(1.0)[0]:.4f}$, "
                 r"$m_\varepsilon \to -1$ as $\varepsilon \to \infty$", fontsize=10)
    ax.legend(fontsize=7.5, loc="lower left")
    T = np.array(data["table"])
    ax2.imshow(T, aspect="auto", cmap="Greens", vmin=-0.3, vmax=1.2, interpolation="nearest")
    ax2.set_xticks(range(len(data["ladder"])), [f"{x:g}" for x in data["ladder"]], fontsize=7)
    ax2.set_xlabel(r"$\varepsilon$ (ladder)")
    ax2.set_ylabel(f"random matrix (n = {data['n']}, sorted)")
    ax2.set_title(f"is_representable(D, $\\varepsilon$): filled = yes\n{data['violations']} violations "
                  "of nesting", fontsize=10)
    return fig


def numbers(data) -> dict:
    return {"violations": data["violations"], "matrices": data["n"],
            "representable at eps=0": int(np.array(data["table"])[:, 0].sum()),
            "representable at eps=20": int(np.array(data["table"])[:, -1].sum()),
            "m_eps eps=1": round(float(m_eps(1.0)[0]), 6)}
