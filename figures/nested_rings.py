"""Figure ``nested_rings``: two nested rings through each model, then a linear classifier.

Inner ring (class 0) and outer ring (class 1) in the plane; each model (15 layers over one shared
``Linear(2, 16)-Tanh-Linear(16, 2)``, ``gamma = 0.99``, ``eps = 20/3``) is trained jointly with a
``Linear(2, 1)`` classifier. Panels: the input, then each model's transformed test points with the
classifier's decision line. No first-order flow makes the rings linearly separable, but on a finite
sample it can squeeze an arc of the outer ring, so the first-order accuracies are a soft result.
"""

from __future__ import annotations

import numpy as np
import torch

from figures._style import COLORS, new_figure
from theory.expressivity import LABELS, MODELS, fit_rings

CLASS_COLORS = ("#3b4cc0", "#d9822b")  # inner ring (0), outer ring (1)


def compute(quick: bool, seed: int) -> dict:
    torch.set_num_threads(1)  # tiny models: more threads only add contention
    return {"models": {name: fit_rings(name, quick, seed) for name in MODELS}, "quick": quick}


def _scatter(ax, pts, labels):
    for c in (1, 0):
        sel = labels == c
        ax.scatter(pts[sel, 0], pts[sel, 1], s=4, color=CLASS_COLORS[c], alpha=0.7,
                   label=("inner ring", "outer ring")[c], rasterized=True)


def plot(data):
    from matplotlib.lines import Line2D

    models = data["models"]
    fig, axes = new_figure(ncols=len(models) + 1, width=3.1, height=3.6, layout="constrained")
    first = next(iter(models.values()))
    labels = np.asarray(first["labels"])
    ax = axes[0, 0]
    _scatter(ax, np.asarray(first["x"]), labels)
    ax.set_title("input: the test points\n(inner ring vs outer ring)", fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("$x_1$ (input coordinate)")
    ax.set_ylabel("$x_2$")
    for ax, (name, r) in zip(axes[0, 1:], models.items(), strict=True):
        z = np.asarray(r["z"])
        _scatter(ax, z, labels)
        (w1, w2), b = r["w"], r["b"]
        lo, hi = z.min(axis=0), z.max(axis=0)
        pad = 0.1 * (hi - lo) + 1e-9
        lo, hi = lo - pad, hi + pad
        if abs(w2) >= abs(w1):  # decision line w . z + b = 0
            xs = np.array([lo[0], hi[0]])
            ax.plot(xs, -(w1 * xs + b) / w2, color="k", lw=1.2)
        else:
            ys = np.array([lo[1], hi[1]])
            ax.plot(-(w2 * ys + b) / w1, ys, color="k", lw=1.2)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"{LABELS[name]}\ntest accuracy {r['accuracy']:.3f}", color=COLORS[name],
                     fontsize=9)
        ax.set_xlabel("$z_1$ (model output)")
        ax.set_ylabel("$z_2$")
    handles = [
        Line2D([], [], ls="", marker="o", ms=5, color=CLASS_COLORS[0], label="inner ring (class 0), test point"),
        Line2D([], [], ls="", marker="o", ms=5, color=CLASS_COLORS[1], label="outer ring (class 1), test point"),
        Line2D([], [], color="k", lw=1.2, label="linear classifier's decision line $w \\cdot z + b = 0$"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Nested rings: each model (15 layers over one shared $\\mathrm{Linear}(2,16)$-tanh-"
                 "$\\mathrm{Linear}(16,2)$) maps the test points, then one linear classifier separates them",
                 fontsize=10)
    return fig


def numbers(data) -> dict:
    models = data["models"]
    return {
        "accuracy": {name: round(r["accuracy"], 4) for name, r in models.items()},
        "train_accuracy": {name: round(r["train_accuracy"], 4) for name, r in models.items()},
    }
