"""Figure momentum_influence: MNIST-1D test accuracy against the momentum gamma, per depth.

Trained by ``examples/mnist1d_momentum.py`` (experiment 1; a finished run of the script is reused
through its cache in ``out/mnist1d/cache``): 1-D convolutional ResNets (gamma = 0), Momentum
ResNets converted from the same initial weights (exact backward) and RevNets with the same
parameter count, mean and sample std over seeds, beside the published MNIST-1D baselines
(Greydanus & Kobak, arXiv:2011.14439).
"""

from __future__ import annotations

import numpy as np

from figures._style import COLORS, new_figure

DEPTH_COLORS = ["#9ecae1", "#4292c6", "#08306b", "#000000"]


def compute(quick: bool, seed: int, cache="default") -> dict:
    from examples import mnist1d_momentum as ex

    cfg = dict(ex.QUICK if quick else ex.FULL)
    res = ex.accuracy_experiment(cfg, seed, ex.DEFAULT_CACHE if cache == "default" else cache, progress=True,
                                 cached_only=ex.figures_cached_only())
    return {"gammas": list(ex.GAMMAS), "accuracy": res["accuracy"], "params": res["params"],
            "seeds": res["seeds_by_depth"],
            "epochs": cfg["epochs"], "width": cfg["width"], "published": ex.PUBLISHED}


def plot(data):
    fig, axes = new_figure(1, 1, width=6.4, height=4.2)
    ax = axes[0, 0]
    gammas = data["gammas"]
    pos = np.arange(len(gammas))
    depths = list(data["accuracy"])
    for i, d in enumerate(depths):
        a = data["accuracy"][d]
        color = DEPTH_COLORS[i % len(DEPTH_COLORS)]
        mean = [100 * a["momentum"][str(g)]["mean"] for g in gammas]
        std = [100 * a["momentum"][str(g)]["std"] for g in gammas]
        ax.errorbar(pos + 0.04 * (i - 1), mean, yerr=std, fmt="o-", color=color, capsize=3, ms=4,
                    label=f"{d} blocks ({data['params'][d]['resnet']:,} params, {len(data['seeds'][d])} seeds)")
        rv = a["revnet"]
        ax.errorbar([len(gammas) + 0.04 * (i - 1)], [100 * rv["mean"]], yerr=[100 * rv["std"]], fmt="s",
                    color=color, capsize=3, ms=5)
    for name, style in (("CNN", ":"), ("GRU", "--")):
        v = 100 * data["published"][name]
        ax.axhline(v, color=COLORS["reference"], ls=style, lw=1)
        ax.text(-0.45, v + 0.3, f"published {name} {v:.0f}%", fontsize=7, color=COLORS["reference"], va="bottom")
    ax.set_xticks(list(pos) + [len(gammas)])
    ax.set_xticklabels([r"$\gamma=0$" + "\n(ResNet)"] + [rf"$\gamma={g}$" for g in gammas[1:]] + ["RevNet"])
    ax.set_xlim(-0.5, len(gammas) + 0.5)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel(r"momentum $\gamma$ (Momentum ResNet, exact backward; squares: RevNet)")
    deepest = depths[-1]
    a = data["accuracy"][deepest]
    gap = 100 * (a["momentum"]["0.9"]["mean"] - a["resnet"]["mean"])
    ax.set_title(f"MNIST-1D: test accuracy vs momentum, width {data['width']}, {data['epochs']} epochs\n"
                 rf"{deepest} blocks: $\gamma=0.9$ minus ResNet = {gap:+.1f} points", fontsize=9)
    lo = min(100 * a["momentum"][str(g)]["mean"] - 100 * a["momentum"][str(g)]["std"]
             for a in data["accuracy"].values() for g in gammas)
    ax.set_ylim(max(0, min(lo, 100 * data["published"]["GRU"]) - 3), 100)
    ax.legend(fontsize=7, loc="lower left", title="depth", title_fontsize=7)
    return fig


def numbers(data) -> dict:
    r = lambda s: round(100 * s["mean"], 2)  # noqa: E731
    sd = lambda s: round(100 * s["std"], 2)  # noqa: E731
    by_depth = {}
    for d, a in data["accuracy"].items():
        by_depth[d] = {
            "accuracy": {"resnet": r(a["resnet"]), "momentum": {g: r(s) for g, s in a["momentum"].items()},
                         "revnet": r(a["revnet"])},
            "std": {"resnet": sd(a["resnet"]), "momentum": {g: sd(s) for g, s in a["momentum"].items()},
                    "revnet": sd(a["revnet"])},
            "params": data["params"][d],
        }
    return {"unit": "test accuracy, percent (mean and sample std over seeds)", "seeds": data["seeds"],
            "epochs": data["epochs"], "width": data["width"], "by_depth": by_depth,
            "published_percent": {k: round(100 * v) for k, v in data["published"].items()}}
