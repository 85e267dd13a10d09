"""Figure ``dynamics_1d``: fitting ``x -> -x**3`` in 1-D; trajectories cross only for the
second-order models.

Four models over one shared ``Linear(1, 16)-Tanh-Linear(16, 1)`` (15 layers, ``gamma = 0.99``,
second-order ODE with ``eps = T1 / (15 (1 - 0.99)) = 20/3``; see ``theory/expressivity.py``).
Panels: layer-by-layer trajectories (depth on the vertical axis; the ODEs at times ``n h``), then
the learned maps against the target. Every first-order model stays above the isotonic bound (the
error of the best nondecreasing map on the same sample).
"""

from __future__ import annotations

import numpy as np
import torch

from figures._style import COLORS, new_figure
from theory.expressivity import DEPTH, EPS, GAMMA, LABELS, MODELS, fit_cubic


def compute(quick: bool, seed: int) -> dict:
    torch.set_num_threads(1)  # tiny models: more threads only add contention
    models = {name: fit_cubic(name, quick, seed) for name in MODELS}
    return {"models": models, "bound": models[MODELS[0]]["bound"], "depth": DEPTH, "gamma": GAMMA,
            "eps": EPS, "quick": quick}


def plot(data):
    import matplotlib.pyplot as plt

    models = data["models"]
    fig, axes = new_figure(ncols=len(models) + 1, width=3.2, height=4.0, layout="constrained")
    cmap = plt.get_cmap("coolwarm")
    for ax, (name, r) in zip(axes[0], models.items(), strict=False):
        traj = np.asarray(r["traj_plot"])  # (depth + 1, n_plot)
        x0 = np.asarray(r["x_plot"])
        layers = np.arange(traj.shape[0])
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i], layers, color=cmap((x0[i] + 1) / 2), lw=1.0)
        ax.set_title(f"{LABELS[name]}: test MSE {r['mse']:.4f}\n{r['crossings']} order inversions",
                     color=COLORS[name], fontsize=9)
        ax.set_xlabel("state $x$ (dimensionless)")
        ax.set_ylim(0, traj.shape[0] - 1)
        ax.set_yticks(range(0, traj.shape[0], 3))
    axes[0, 0].set_ylabel("layer $n$  (ODEs: time $t = n h$)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-1, 1))
    cbar = fig.colorbar(sm, ax=list(axes[0, :-1]), orientation="horizontal", fraction=0.05, aspect=60)
    cbar.set_label("colour: starting point $x_0$ of the trajectory")
    ax = axes[0, -1]
    first = next(iter(models.values()))
    xs = np.asarray(first["x_eval"])
    ax.plot(xs, -xs**3, color=COLORS["reference"], lw=2.5, alpha=0.5, label="target $-x^3$")
    for name, r in models.items():
        ls = "--" if name in ("neural_ode", "second_order_ode") else "-"
        ax.plot(xs, r["pred_eval"], ls, color=COLORS[name], lw=1.2, label=LABELS[name])
    ax.set_title(f"learned map $x_0 \\to x_N$ vs target\nmonotone-map bound on the MSE: {data['bound']:.4f}",
                 fontsize=9)
    ax.set_xlabel("input $x_0$")
    ax.set_ylabel("output $x_N$")
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Crossing trajectories: fitting $x \\to -x^3$ on $[-1, 1]$, depth {data['depth']}, "
                 f"$\\gamma$ = {data['gamma']}, $\\varepsilon$ = {data['eps']:.3g}\n"
                 "order inversions = pairs of test trajectories that swap order, summed over layers; "
                 "first-order flows have none", fontsize=10)
    return fig


def numbers(data) -> dict:
    models = data["models"]
    return {
        "mse": {name: round(r["mse"], 6) for name, r in models.items()},
        "isotonic_bound": round(data["bound"], 6),
        "crossings": {name: r["crossings"] for name, r in models.items()},
    }
