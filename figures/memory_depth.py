"""Figure memory_depth: peak memory of one training step against depth (THEORY.md section 6).

Measured by :mod:`benchmarks.memory` (a fresh subprocess per point): stored activations grow
linearly with depth, checkpointing like its square root, the exact Momentum ResNet and RevNet stay
flat.
"""

from __future__ import annotations

import numpy as np

from figures._style import COLORS, new_figure

METHODS = {
    "resnet_autograd": ("ResNet, autograd", COLORS["resnet"], "o-"),
    "resnet_checkpoint": ("ResNet, checkpoint (sqrt segments)", COLORS["checkpoint"], "s-"),
    "momentum_autograd": ("Momentum ResNet, autograd", COLORS["second_order_ode"], "^--"),
    "momentum_exact": ("Momentum ResNet, exact", COLORS["momentum"], "D-"),
    "revnet_exact": ("RevNet, exact", COLORS["revnet"], "v-"),
    "official_momentumnet": ("momentumnet package, use_backprop=False", COLORS["reference"], "x:"),
}


def compute(quick: bool, seed: int) -> dict:
    from tqdm.auto import tqdm

    from benchmarks.memory import measure

    depths = [10, 100, 300] if quick else [10, 30, 100, 300, 1000]
    data = {"depths": depths, "peak_mib": {}}
    try:
        import momentumnet  # noqa: F401

        methods = list(METHODS)
    except ImportError:
        methods = [m for m in METHODS if m != "official_momentumnet"]
    jobs = [(m, n) for m in methods for n in depths]
    for m, n in tqdm(jobs, desc="memory_depth", leave=False):
        r = measure(m, n, repeats=1, timing=False)
        if "error" in r:
            raise RuntimeError(f"memory measurement {m} at depth {n} failed: {r['error']}")
        data["peak_mib"].setdefault(m, []).append(r["peak_bytes"] / 2**20)
    return data


def plot(data):
    fig, axes = new_figure(1, 1, width=5.0, height=3.6)
    ax = axes[0, 0]
    for m, (label, color, style) in METHODS.items():
        if m not in data["peak_mib"]:
            continue
        ax.plot(data["depths"], data["peak_mib"][m], style, color=color, label=label, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("peak memory of a training step (MiB)")
    ax.set_title("Memory vs depth (batch 512, width 64, float32, CPU)")
    ax.legend(fontsize=7)
    return fig


def numbers(data) -> dict:
    d = data["depths"]
    return {
        "depths": d,
        "peak_mib": {m: [round(v, 2) for v in vals] for m, vals in data["peak_mib"].items()},
        "growth_last_over_first": {m: round(float(vals[-1] / max(vals[0], 1e-9)), 3) for m, vals in data["peak_mib"].items()},
        "slope_loglog": {m: round(float(np.polyfit(np.log(d), np.log(np.maximum(vals, 1e-3)), 1)[0]), 3) for m, vals in data["peak_mib"].items()},
    }
