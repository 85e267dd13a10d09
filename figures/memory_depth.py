"""Figure memory_depth: peak memory of one training step against depth (docs/theory.md#memory).

Measured by ``benchmarks/memory.py`` (a fresh subprocess per point): stored activations grow
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


def _slope(depths, vals):
    return float(np.polyfit(np.log(depths), np.log(np.maximum(vals, 1e-3)), 1)[0])


def plot(data):
    from matplotlib.ticker import LogLocator, ScalarFormatter

    fig, axes = new_figure(1, 1, width=6.4, height=4.2)
    ax = axes[0, 0]
    d = data["depths"]
    for m, (label, color, style) in METHODS.items():
        if m not in data["peak_mib"]:
            continue
        vals = data["peak_mib"][m]
        ax.plot(d, vals, style, color=color, ms=4,
                label=f"{label}: slope {round(_slope(d, vals), 2) + 0.0:.2f}, {vals[-1]:.3g} MiB at {d[-1]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(plt_null())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xticks(d)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("peak memory of one training step (MiB)")
    ax.set_title("Peak memory against depth: batch 512, width 64, float32, CPU\n"
                 "(slope of log memory against log depth: 1 = linear, 0.5 = square root, 0 = flat)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def plt_null():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def numbers(data) -> dict:
    d = data["depths"]
    return {
        "depths": d,
        "peak_mib": {m: [round(v, 2) for v in vals] for m, vals in data["peak_mib"].items()},
        "growth_last_over_first": {m: round(float(vals[-1] / max(vals[0], 1e-9)), 3) for m, vals in data["peak_mib"].items()},
        "slope_loglog": {m: round(_slope(d, vals), 3) for m, vals in data["peak_mib"].items()},
    }
