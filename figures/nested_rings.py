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
    models = data["models"]
    fig, axes = new_figure(ncols=len(models) + 1, width=3.0, height=3.2)
    first = next(iter(models.values()))
    labels = np.asarray(first["labels"])
    ax = axes[0, 0]
    _scatter(ax, np.asarray(first["x"]), labels)
    ax.set_title("input", fontsize=9)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=7, loc="upper right", markerscale=2)
    for ax, (name, r) in zip(axes[0, 1:], models.items(), strict=True):
        z = np.asarray(r["z"])
        _scatter(ax, z, labels)
        (w1, w2), b = r["w"], r["b"]
        lo, hi = z.min(axis=0), z.max(axis=0)
        pad = 0.1 * (hi - lo) + 1e-9
        lo, hi = lo - pad, hi + pad
        if abs(w2) >= abs(w1):  # decision line w . z + b = 0
            xs = np.array([lo[0], hi[0]])
            ax.plot(xs, -(w1 * xs + b) / w2, color="k", lw=1)
        else:
            ys = np.array([lo[1], hi[1]])
            ax.plot(-(w2 * ys + b) / w1, ys, color="k", lw=1)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"{LABELS[name]}\ntest accuracy {r['accuracy']:.3f}", color=COLORS[name],
                     fontsize=9)
    fig.tight_layout()
    return fig


def numbers(data) -> dict:
    models = data["models"]
    return {
        "accuracy": {name: round(r["accuracy"], 4) for name, r in models.items()},
        "train_accuracy": {name: round(r["train_accuracy"], 4) for name, r in models.items()},
    }
