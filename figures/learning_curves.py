"""Figure learning_curves: MNIST-1D training and test accuracy per epoch, ResNet vs Momentum ResNet.

The runs of ``examples/mnist1d_momentum.py`` (experiment 1) at one depth: the same initial
weights, optimiser (SGD, Nesterov momentum 0.9, cosine schedule), batch order and number of
epochs; the Momentum ResNet (gamma 0.9) trains with the exact backward. Training accuracy is the
running accuracy over each epoch's batches (train mode), test accuracy is measured after each
epoch; lines are the mean over seeds, bands the min-max range.
"""

from __future__ import annotations

import numpy as np

from figures._style import COLORS, new_figure

MODELS = {"resnet": ("ResNet", COLORS["resnet"]), "momentum_0.9": (r"Momentum ResNet $\gamma=0.9$ (exact)", COLORS["momentum"])}


def compute(quick: bool, seed: int, cache="default") -> dict:
    from examples import mnist1d_momentum as ex

    cfg = dict(ex.QUICK if quick else ex.FULL)
    res = ex.accuracy_experiment(cfg, seed, ex.DEFAULT_CACHE if cache == "default" else cache, progress=True,
                                 cached_only=ex.figures_cached_only())
    return {**ex.curves(res, cfg["curve_depth"], names=tuple(MODELS)), "width": cfg["width"]}


def plot(data):
    fig, axes = new_figure(1, 1, width=6.0, height=4.0)
    ax = axes[0, 0]
    for name, (label, color) in MODELS.items():
        m = data["models"][name]
        ep = np.arange(1, len(m["test_acc"]["mean"]) + 1)
        for what, style, tag in (("train_acc", "--", "train"), ("test_acc", "-", "test")):
            ax.plot(ep, 100 * np.array(m[what]["mean"]), style, color=color, marker="o", ms=3, label=f"{label}, {tag}")
            ax.fill_between(ep, 100 * np.array(m[what]["min"]), 100 * np.array(m[what]["max"]), color=color, alpha=0.15, lw=0)
    final = {n: 100 * data["models"][n]["test_acc"]["mean"][-1] for n in MODELS}
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"MNIST-1D learning curves, {data['depth']} blocks, width {data['width']}, "
                 f"{len(data['seeds'])} seed(s)\nfinal test: ResNet {final['resnet']:.1f}%, "
                 rf"Momentum $\gamma=0.9$ {final['momentum_0.9']:.1f}%", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", title="lines: mean over seeds, bands: min-max", title_fontsize=7)
    return fig


def numbers(data) -> dict:
    out = {"depth": data["depth"], "seeds": data["seeds"], "unit": "accuracy, percent (mean over seeds)"}
    for name in MODELS:
        m = data["models"][name]
        out[name] = {"train_acc": [round(100 * v, 2) for v in m["train_acc"]["mean"]],
                     "test_acc": [round(100 * v, 2) for v in m["test_acc"]["mean"]]}
    return out
