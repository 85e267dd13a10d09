"""Error at t1 against NFE and wall time, per solver, for eps*x'' + x' = F(t, x), eps in {0.1, 1, 10}.

Rows: neural F (error vs NFE), neural F (error vs wall time), linear F with closed form (error vs
NFE), the gradient over F's parameters (error vs forward + backward NFE, and vs wall time), and the
peak memory of one forward + backward at two sizes per method (eps = 1). The numbers come from
``benchmarks/solvers.py`` (``compute``); scipy DOP853 at rtol 1e-13 is the neural reference, and
its NFE is marked. Quick mode: gradients for eps = 1 only, no memory row (child processes).
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter

from benchmarks.solvers import EPSS, GRAD_METHODS, summary
from benchmarks.solvers import compute as _compute
from figures._style import COLORS, new_figure

STYLE = {
    "euler": ("#1f77b4", "o"),
    "midpoint": ("#2ca02c", "s"),
    "rk4": ("#9467bd", "^"),
    "dopri5": (COLORS["second_order_ode"], "D"),
    "momentum": (COLORS["momentum"], "*"),
    "strang": ("#8c564b", "P"),
    "alf": ("#e377c2", "X"),
}
LABELS = {
    "momentum": "Momentum ResNet discretize(ode, N): NFE = N",
    "strang": "Strang splitting discretize(ode, N, scheme='strang'): NFE = N",
    "alf": "asynchronous leapfrog (MALI's ALF): NFE = N + 1",
}
SHORT = {"strang-exact": "Strang\nexact", "momentum-exact": "Momentum ResNet\nscheme, exact",
         "mali": "MALI\n(ALF)", "rk4-direct": "rk4\nbackprop", "rk4-adjoint": "rk4\nadjoint",
         "dopri5-direct": "dopri5\nbackprop", "dopri5-adjoint": "dopri5\nadjoint"}
# gradient methods: (forward style key, line style, label)
GRAD_STYLE = {
    "strang-exact": ("strang", "-", "Strang splitting, backward='exact'"),
    "momentum-exact": ("momentum", "-", "Momentum ResNet scheme, backward='exact'"),
    "mali": ("alf", "-", "MALI (ALF, float reconstruction)"),
    "rk4-direct": ("rk4", "-", "rk4, backprop through the solver"),
    "rk4-adjoint": ("rk4", "--", "rk4, adjoint"),
    "dopri5-direct": ("dopri5", "-", "dopri5, backprop through the solver"),
    "dopri5-adjoint": ("dopri5", "--", "dopri5, adjoint"),
}


def compute(quick: bool, seed: int) -> dict:
    return _compute(quick, seed, repeats=1 if quick else 3, gradients=[1.0] if quick else True,
                    memory=not quick)


def _slope_note(ax, rs, name, color, y):
    if len(rs) > 1:
        slope = np.polyfit(np.log([r["nfe"] for r in rs]), np.log([r["error"] for r in rs]), 1)[0]
        ax.text(0.03, y, f"{name}: slope {slope:.2f}", transform=ax.transAxes, ha="left", va="bottom",
                fontsize=7, color=color, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def _forward_rows(axes, rows):
    for j, eps in enumerate(EPSS):
        for i, (problem, xkey, xlabel) in enumerate([("neural", "nfe", "NFE (evaluations of $F$)"),
                                                      ("neural", "seconds", "wall time (s)"),
                                                      ("linear", "nfe", "NFE (evaluations of $F$)")]):
            ax = axes[i, j]
            for method, (color, marker) in STYLE.items():
                rs = [r for r in rows if r["problem"] == problem and r["eps"] == eps and r["method"] == method]
                if not rs:
                    continue
                label = LABELS.get(method) or (f"torchdiffeq {method}" + (
                    " (adaptive, rtol 1e-3 .. 1e-10)" if method == "dopri5" else " (fixed step)"))
                ax.loglog([r[xkey] for r in rs], [max(r["error"], 1e-17) for r in rs], marker=marker,
                          color=color, ms=4, lw=1.2, label=label)
                if xkey == "nfe" and method in ("momentum", "strang"):
                    _slope_note(ax, rs, "Momentum ResNet" if method == "momentum" else "Strang",
                                color, 0.03 if method == "momentum" else 0.13)
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


def _gradient_rows(axes, data):
    grows = data.get("gradient_rows", [])
    for j, eps in enumerate(EPSS):
        for i, (xkey, xlabel) in ((3, ("nfe", "NFE, forward + backward")), (4, ("seconds", "wall time, forward + backward (s)"))):
            ax = axes[i, j]
            rs_eps = [r for r in grows if r["eps"] == eps]
            if not rs_eps:
                ax.text(0.5, 0.5, "gradients for this $\\varepsilon$:\nrun without --quick", ha="center",
                        va="center", transform=ax.transAxes, fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
            for method in GRAD_METHODS:
                rs = [r for r in rs_eps if r["method"] == method]
                if not rs:
                    continue
                key, ls, label = GRAD_STYLE[method]
                color, marker = STYLE[key]
                xs = [r["nfe"] + r["nfe_backward"] if xkey == "nfe" else r["seconds"] for r in rs]
                ax.loglog(xs, [max(r["error"], 1e-17) for r in rs], marker=marker, ls=ls, color=color,
                          ms=4, lw=1.2, label=f"gradient: {label}")
            if rs_eps:
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel(xlabel)
                ax.set_ylabel("rel. error of $\\partial L / \\partial \\theta$")
            ax.set_title(f"gradient of $L = \\sum w \\cdot x(t_1)$, $\\varepsilon$ = {eps:g}", fontsize=9)


def _memory_row(fig, axes, data):
    gs = axes[5, 0].get_gridspec()
    for ax in axes[5, :]:
        ax.remove()
    ax = fig.add_subplot(gs[5, :])
    mrows = data.get("memory_rows", [])
    if not mrows:
        ax.text(0.5, 0.5, "peak memory: measured without --quick (child processes)", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    xs = np.arange(len(GRAD_METHODS))
    for k in range(2):
        vals, labels = [], []
        for method in GRAD_METHODS:
            rs = [r for r in mrows if r["method"] == method]
            vals.append(max(rs[k]["peak_mib"], 1e-2) if len(rs) > k else np.nan)
            labels.append(f"{rs[k]['nfe'] + rs[k]['nfe_backward']}" if len(rs) > k else "")
        bars = ax.bar(xs + (k - 0.5) * 0.38, vals, width=0.36,
                      color=[STYLE[GRAD_STYLE[m][0]][0] for m in GRAD_METHODS],
                      alpha=0.45 if k == 0 else 0.95, edgecolor="black", lw=0.5,
                      label="smaller size" if k == 0 else "larger size")
        for b, lab in zip(bars, labels, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() * 1.15, lab, ha="center", va="bottom", fontsize=6)
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([SHORT[m] for m in GRAD_METHODS], fontsize=7)
    ax.set_ylabel("peak memory above the input (MiB)")
    ax.set_ylim(top=ax.get_ylim()[1] * 4)
    ax.set_title("peak memory of one forward + backward, $\\varepsilon$ = 1 (child process RSS; two sizes per "
                 "method, NFE forward + backward above each bar)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")


def plot(data):
    fig, axes = new_figure(ncols=len(EPSS), nrows=6, width=3.8, height=2.9)
    _forward_rows(axes, data["rows"])
    _gradient_rows(axes, data)
    handles, labels = [], []
    for ax in (axes[0, 0], axes[2, 0], axes[3, 1]):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    _memory_row(fig, axes, data)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Solvers for $\\varepsilon x'' + x' = F(t, x)$, $x'(0) = 0$, $t_1 = 1$: "
                 "error, gradient error and memory against cost (float64, one thread)", fontsize=11)
    fig.tight_layout(rect=(0, 0.075, 1, 0.985))
    return fig


def numbers(data):
    out = dict(summary(data))
    for c in data.get("gradient_checks", []):
        out[f"richardson strang vs reference gradient eps={c['eps']:g}"] = c["richardson_strang_vs_reference"]
    for r in data.get("memory_rows", []):
        out[f"peak MiB {r['method']} {r['setting']}"] = r["peak_mib"]
    return out
