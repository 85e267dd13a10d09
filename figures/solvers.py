"""Error at t1 against NFE and wall time, per solver, for eps*x'' + x' = F(t, x), eps in {0.1, 1, 10}.

Rows: neural F (error vs NFE), neural F (error vs wall time), linear F with closed form (error vs
NFE). The numbers come from ``benchmarks/solvers.py`` (``compute``); scipy DOP853 at rtol 1e-13 is
the neural reference, and its NFE is marked.
"""

from __future__ import annotations

import numpy as np

from benchmarks.solvers import EPSS, summary
from benchmarks.solvers import compute as _compute
from figures._style import COLORS, new_figure

STYLE = {
    "euler": ("#1f77b4", "o"),
    "midpoint": ("#2ca02c", "s"),
    "rk4": ("#9467bd", "^"),
    "dopri5": (COLORS["second_order_ode"], "D"),
    "momentum": (COLORS["momentum"], "*"),
}


def compute(quick: bool, seed: int) -> dict:
    return _compute(quick, seed, repeats=1 if quick else 3)


def plot(data):
    fig, axes = new_figure(ncols=len(EPSS), nrows=3, width=3.6, height=2.8)
    rows = data["rows"]
    for j, eps in enumerate(EPSS):
        for i, (problem, xkey, xlabel) in enumerate([("neural", "nfe", "NFE (evaluations of $F$)"),
                                                      ("neural", "seconds", "wall time (s)"),
                                                      ("linear", "nfe", "NFE (evaluations of $F$)")]):
            ax = axes[i, j]
            for method, (color, marker) in STYLE.items():
                rs = [r for r in rows if r["problem"] == problem and r["eps"] == eps and r["method"] == method]
                if not rs:
                    continue
                label = ("Momentum ResNet discretize(ode, N): NFE = N" if method == "momentum"
                         else f"torchdiffeq {method}" + (" (adaptive, rtol 1e-3 .. 1e-10)" if method == "dopri5" else " (fixed step)"))
                ax.loglog([r[xkey] for r in rs], [max(r["error"], 1e-17) for r in rs], marker=marker,
                          color=color, ms=4, lw=1.2, label=label)
                if method == "momentum" and xkey == "nfe" and len(rs) > 1:
                    slope = np.polyfit(np.log([r["nfe"] for r in rs]), np.log([r["error"] for r in rs]), 1)[0]
                    ax.text(0.03, 0.03, f"Momentum ResNet:\nslope {slope:.2f} (order 1)", transform=ax.transAxes,
                            ha="left", va="bottom", fontsize=7, color=color,
                            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
            ref = [r for r in rows if r["problem"] == problem and r["eps"] == eps and r["method"].startswith("scipy")]
            if ref and problem == "neural":
                ax.axvline(ref[0][xkey], color=COLORS["reference"], ls=":", lw=1,
                           label="NFE of the reference (scipy DOP853, rtol 1e-13)")
            elif ref:  # linear: scipy's own error against the closed form
                ax.loglog([ref[0][xkey]], [max(ref[0]["error"], 1e-17)], "kx", ms=6,
                          label="scipy DOP853 rtol 1e-13: its error vs the closed form")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("relative error of $x(t_1)$")
            title = {"neural": "neural $F(t, x)$", "linear": "linear $F = Ax$ (closed form)"}[problem]
            ax.set_title(f"{title}, $\\varepsilon$ = {eps:g}", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    h2, l2 = axes[2, 0].get_legend_handles_labels()
    handles += [h for h, lab in zip(h2, l2, strict=True) if lab not in labels]
    labels += [lab for lab in l2 if lab not in labels]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Solvers for $\\varepsilon x'' + x' = F(t, x)$, $x'(0) = 0$, $t_1 = 1$: "
                 "error against cost (float64, one thread)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def numbers(data):
    return {k: v for k, v in summary(data).items()}
