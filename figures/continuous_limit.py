"""A Momentum ResNet converges to its second-order ODE at order 1 (docs/theory.md#discrete-and-continuous).

Left: relative error at t1 of ``discretize(ode, N)`` against the dopri5 solution (rtol 1e-12), for
``x_N`` and for ``v_N/h -> x'(t1)``, eps in {0.1, 1, 10}, with the slope fitted over N = 32..4096 (quick: 32..1024).
Middle: ``gamma`` fixed at 0.5 while N grows: the network approaches the *first-order* ODE and
stays away from the second-order ODE with eps = eps_from_gamma(0.5, 32). Right: the gap between
the second-order and first-order solutions as eps -> 0 (slope +1).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from figures._style import COLORS, new_figure
from scripts.problems import D, TimeMLP
from theory.continuous_limit import NS, NS_QUICK, ZERO_EPSS, convergence, eps_to_zero, fixed_gamma

EPSS = [0.1, 1.0, 10.0]


def compute(quick: bool, seed: int) -> dict:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    F = TimeMLP(seed=seed)
    x0 = torch.randn(16, 2, generator=g, dtype=D)
    u0 = 0.5 * torch.randn(16, 2, generator=g, dtype=D)
    Ns = NS_QUICK if quick else NS  # the theory script's fit bands
    return {"convergence": [convergence(F, eps, x0, u0, Ns=Ns) for eps in EPSS],
            "fixed_gamma": fixed_gamma(F, x0, 0.5, Ns=Ns),
            "eps_to_zero": eps_to_zero(F, x0, ZERO_EPSS)}


def plot(data):
    fig, axes = new_figure(ncols=3, width=4.1, height=4.4)
    ax = axes[0, 0]
    colors = ["#d62728", "#ff7f0e", "#8c564b"]
    for c, color in zip(data["convergence"], colors, strict=True):
        ax.loglog(c["N"], c["err_x"], "o-", color=color, ms=3,
                  label=f"$x_N$, $\\varepsilon$ = {c['eps']:g}: slope {c['slope_x']:.3f}")
        ax.loglog(c["N"], c["err_v"], "s--", color=color, ms=3, alpha=0.7,
                  label=f"$v_N/h$, $\\varepsilon$ = {c['eps']:g}: slope {c['slope_v']:.3f}")
    N = np.array(data["convergence"][0]["N"], float)
    ax.loglog(N, 2.0 / N, ":", color=COLORS["reference"], label="reference slope $-1$")
    ax.set_xlabel("depth $N$ (layers; step $h = 1/N$)")
    ax.set_ylabel("relative error at $t_1 = 1$")
    ax.set_title("(a) Momentum ResNet $\\to$ 2nd-order ODE:\norder 1 in the depth", fontsize=9)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.36), ncol=2, frameon=False)

    ax = axes[0, 1]
    fg = data["fixed_gamma"]
    n0 = fg["N"][0]
    ax.loglog(fg["N"], fg["to_first"], "o-", color=COLORS["neural_ode"], ms=3,
              label=f"to the 1st-order ODE $x' = F$: slope {fg['slope_first']:.3f}")
    ax.loglog(fg["N"], fg["to_second"], "s-", color=COLORS["second_order_ode"], ms=3,
              label=f"to the 2nd-order ODE with $\\varepsilon$ = {fg['eps0']:g}")
    ax.set_xlabel("depth $N$ (layers)")
    ax.set_ylabel("relative distance at $t_1 = 1$")
    ax.set_title(f"(b) $\\gamma$ = {fg['gamma']:g} held fixed, $N \\to \\infty$:\nthe limit is first order",
                 fontsize=9)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.36), frameon=False,
              title=f"$\\varepsilon$ = {fg['eps0']:g} = $1/(N_0(1-\\gamma))$: the network's own $\\varepsilon$ at $N_0$ = {n0}",
              title_fontsize=6.5)

    ax = axes[0, 2]
    z = data["eps_to_zero"]
    ax.loglog(z["eps"], z["err"], "o-", color=COLORS["momentum"], ms=3,
              label=f"$\\|x_\\varepsilon(1) - x_0(1)\\| / \\|x_0(1)\\|$: slope {z['slope']:.3f}")
    e = np.array(z["eps"])
    ax.loglog(e, z["err"][0] * e / e[0], ":", color=COLORS["reference"], label="reference slope $+1$")
    ax.set_xticks(z["eps"])
    ax.set_xticklabels([f"{v:g}" for v in z["eps"]])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("$\\varepsilon$ (mass, time units)")
    ax.set_ylabel("relative gap to $x' = F$ at $t = 1$")
    ax.set_title("(c) $\\varepsilon \\to 0$: the 2nd-order ODE\ntends to the 1st-order one, gap $O(\\varepsilon)$",
                 fontsize=9)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.36), frameon=False)
    fig.suptitle("Continuous limit of the Momentum ResNet: $f_n = hF$, $\\gamma = 1 - h/\\varepsilon$, "
                 "$\\varepsilon x'' + x' = F(t, x)$", fontsize=11)
    fig.tight_layout()
    return fig


def numbers(data):
    out = {}
    for c in data["convergence"]:
        out[f"slope_x eps={c['eps']:g}"] = round(c["slope_x"], 4)
        out[f"slope_v eps={c['eps']:g}"] = round(c["slope_v"], 4)
        out[f"err_x N={c['N'][-1]} eps={c['eps']:g}"] = c["err_x"][-1]
    out["fixed_gamma=0.5 slope to first order"] = round(data["fixed_gamma"]["slope_first"], 4)
    out["eps->0 slope"] = round(data["eps_to_zero"]["slope"], 4)
    return out
