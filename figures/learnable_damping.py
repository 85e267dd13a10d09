"""Figure learnable_damping: fitting damped oscillators with first-order, fixed-eps and learnable
per-feature eps ODEs, each trained through the adjoint and through the exact discretization.

The runs of ``examples/hbnode_comparison.py`` (same data, same initial MLP field, Adam): training
loss against the field evaluations (forward + backward) and against training wall time, and the
learned ``eps`` per feature against the step, with the data's ``eps_i = 1/c_i`` dashed. Reuses
``out/hbnode_comparison.json`` when it holds a run of the same settings and seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from figures._style import COLORS, new_figure

STYLE = {"node": ("first-order NODE", COLORS["neural_ode"]),
         "fixed": (r"second order, fixed $\varepsilon=1$", COLORS["resnet"]),
         "learned": (r"second order, learned per-feature $\varepsilon$", COLORS["momentum"])}
FEATURE = ("#2b8cbe", "#e6550d", "#31a354", "#756bb1", "#636363")  # one colour per feature
LINE = {"adjoint": "-", "exact": "--", "discrete-autograd": "--"}
CACHE = Path(__file__).resolve().parent.parent / "out" / "hbnode_comparison.json"


def compute(quick: bool, seed: int) -> dict:
    from examples import hbnode_comparison as hb

    cfg = dict(hb.QUICK if quick else hb.FULL)
    if CACHE.exists():
        cached = json.loads(CACHE.read_text())
        if cached.get("config") == cfg and cached.get("seed") == seed and cached.get("scheme") is None:
            return cached
    return hb.run(cfg, seed, progress=True)


def plot(data):
    fig, axes = new_figure(3, 1, width=4.3, height=3.6)
    for r in data["runs"]:
        label, color = STYLE[r["model"]]
        style = LINE[r["gradient"]]
        name = f"{label}, {r['gradient']}"
        axes[0, 0].plot(r["nfe"], r["loss"], style, color=color, lw=1.2, label=name)
        axes[0, 1].plot(r["time_s"], r["loss"], style, color=color, lw=1.2, label=name)
        if r["model"] == "learned":
            eps = np.array(r["eps_history"])
            steps = np.arange(1, len(eps) + 1)
            for i in range(eps.shape[1]):
                axes[0, 2].plot(steps, eps[:, i], style, color=FEATURE[i % len(FEATURE)], lw=1.2)
    for i, e in enumerate(data["true_eps"]):
        color = FEATURE[i % len(FEATURE)]
        axes[0, 2].axhline(e, color=color, ls=":", lw=1.0)
        axes[0, 2].annotate(rf"$1/c_{i + 1} = {e:g}$", (0.98, e), xycoords=("axes fraction", "data"),
                            ha="right", va="bottom", fontsize=7, color=color)
    for ax, xl in ((axes[0, 0], "field evaluations (forward + backward, cumulative)"),
                   (axes[0, 1], "training wall time (s, 1 CPU thread)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("training loss (MSE)")
    axes[0, 0].set_title("loss vs NFE")
    axes[0, 1].set_title("loss vs wall time")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=3, fontsize=7.5, bbox_to_anchor=(0.5, -0.01),
               title="solid: adjoint (dopri5); dashed: discretized (exact backward; autograd for the first-order model)",
               title_fontsize=7.5)
    ax = axes[0, 2]
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(r"learned $\varepsilon_i$")
    ax.set_title(r"learned $\varepsilon_i$ per feature (dotted: the data's $1/c_i$)" "\nsolid: adjoint; dashed: exact")
    cfg = data["config"]
    fig.suptitle(f"Damped oscillators $x_i'' + c_i x_i' + k_i x_i = 0$, {len(data['true_eps'])} features, "
                 f"{cfg['steps']} Adam steps, seed {data['seed']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def numbers(data) -> dict:
    out = {"true_eps": data["true_eps"], "steps": data["config"]["steps"]}
    for r in data["runs"]:
        key = f"{r['model']}/{r['gradient']}"
        out[key] = {"final_loss": r["final_loss"], "test_loss": r["test_loss"], "nfe": r["nfe"][-1],
                    "time_s": round(r["time_s"][-1], 2), "eps": r["eps"]}
    return out
