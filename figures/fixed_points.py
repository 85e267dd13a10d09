"""Learning to optimize: distance to the minimiser against depth for ResNet, Momentum ResNet, RevNet.

Top row: relative test error ``||x_N - x*|| / ||x*||`` at the trained depth ``N`` for each depth
trained. Bottom row: the models trained at ``N = curve_depth`` iterated past that depth (weight
tied): the momentum net keeps converging, the RevNet (volume preserving) cannot. Numbers from
``theory.fixed_points.learning_to_optimize`` (docs/theory.md#fixed-points).
"""

from __future__ import annotations

import numpy as np

from figures._style import COLORS, new_figure
from theory.fixed_points import MODELS, learning_to_optimize

LABELS = {"resnet": "ResNet", "momentum": "Momentum ResNet", "revnet": "RevNet"}
TITLES = {"least_squares": "least squares", "logistic": "logistic regression"}


def compute(quick: bool, seed: int) -> dict:
    res = learning_to_optimize(quick, seed)
    cfg = res["config"]
    return {
        "config": cfg,
        "depths": cfg["depths"],
        "trained": {p: {k: [t[k][n]["test"] for n in cfg["depths"]] for k in MODELS}
                    for p, t in res["table"].items()},
        "curves": res["curves"],
        "gamma": res["gamma"],
    }


def plot(data):
    fig, axes = new_figure(ncols=len(data["trained"]), nrows=2, width=4.8, height=3.6)
    n_curve = data["config"]["curve_depth"]
    for col, problem in enumerate(data["trained"]):
        ax = axes[0][col]
        for kind in MODELS:
            ax.plot(data["depths"], data["trained"][problem][kind], "o-", color=COLORS[kind],
                    label=LABELS[kind])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("trained depth $N$ (layers)")
        ax.set_ylabel(r"test $\|x_N - x^*\| / \|x^*\|$")
        ax.set_title(f"{TITLES[problem]}: error at the trained depth")
        ax.legend(fontsize=7, loc="lower left")
        ax = axes[1][col]
        for kind in MODELS:
            errs = np.maximum(np.asarray(data["curves"][problem][kind]), 1e-300)
            ax.plot(np.arange(len(errs)), errs, color=COLORS[kind],
                    label=f"{LABELS[kind]}: {errs[-1]:.1e} after {len(errs) - 1}")
        ax.axvline(n_curve, color=COLORS["reference"], ls="--", lw=1, label=f"trained depth {n_curve}")
        ax.set_yscale("log")
        ax.set_xlabel("iterations $k$ of the trained layer")
        ax.set_ylabel(r"test $\|x_k - x^*\| / \|x^*\|$")
        ax.set_title(f"{TITLES[problem]}: iterating past $N$ = {n_curve}")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.suptitle("Learning to optimize: weight-tied ResNet, Momentum ResNet and RevNet trained to output "
                 f"the minimiser (test error on {data['config']['n_test']} held-out problems)", fontsize=10)
    fig.tight_layout()
    return fig


def numbers(data) -> dict:
    n = data["config"]["curve_depth"]
    out = {}
    for problem, curves in data["curves"].items():
        for kind, errs in curves.items():
            out[f"{problem}/{kind}/error_at_{n}"] = errs[n]
            out[f"{problem}/{kind}/error_at_{len(errs) - 1}"] = errs[-1]
        out[f"{problem}/momentum/gamma_at_{n}"] = data["gamma"][problem][n]
    return out
