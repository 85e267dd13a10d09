"""Figure ``phase_space``: a Momentum ResNet seen in phase space ``(x, v)`` (docs/theory.md#phase-space).

One-dimensional state, the residual function ``f(x) = h F(x)`` with the hardening spring
``F(x) = -60 x^3``, ``N = 40`` layers, ``h = 1/N``, ``gamma = 0.9`` (so ``eps = h / (1 - gamma)
= 0.25``). Panels: (a) trajectories started at rest, ``(x_0, 0)``, in the phase plane, with a
small rectangle of starting states and its images after 10, 20 and 40 layers; (b) the area of that
square's image against the layer index, measured (shoelace formula on 796 boundary points) and
predicted (``gamma^n``: each layer's Jacobian determinant is ``gamma^d``, here ``d = 1``); (c) the
map ``x_0 -> x_N`` read off the position, which is not monotone, next to the first-order flow
``x' = F(x)`` (rk4, 200 steps), which is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from figures._style import COLORS, new_figure

DEPTH, GAMMA, STIFF = 40, 0.9, 60.0
SQUARE = (0.7, 0.0, 0.1, 1.5)  # centre x, centre x' = v/h, half width in x, half height in x'


class _Spring(nn.Module):
    """``f(x) = h F(x)`` with ``F(x) = -STIFF x^3``."""

    def __init__(self, h):
        super().__init__()
        self.h = h

    def forward(self, x):
        return self.h * (-STIFF * x**3)


def _square(cx, cv, s, r, k=200):
    t = torch.linspace(0, 1, k, dtype=torch.float64)[:-1]
    one = torch.ones_like(t)
    sides = [(cx - s + 2 * s * t, (cv - r) * one), ((cx + s) * one, cv - r + 2 * r * t),
             (cx + s - 2 * s * t, (cv + r) * one), ((cx - s) * one, cv + r - 2 * r * t)]
    return torch.cat([a for a, _ in sides]), torch.cat([b for _, b in sides])


def _area(x, v):
    return 0.5 * abs(float((x * np.roll(v, -1) - np.roll(x, -1) * v).sum()))


@torch.no_grad()
def compute(quick: bool, seed: int) -> dict:
    """Deterministic (no random numbers); ``quick`` and ``seed`` change nothing."""
    import secondorder as so

    h = 1.0 / DEPTH
    net = so.MomentumResNet([_Spring(h)] * DEPTH, gamma=GAMMA)
    x0 = torch.linspace(-1, 1, 401, dtype=torch.float64)[:, None]
    xs, vs = net.trajectory(x0, return_velocity=True)
    sx, sv = _square(*SQUARE)
    # the network's velocity is v = h x'; the phase plane shows u = v / h = x'
    X, V = net.trajectory(sx[:, None], v0=h * sv[:, None], return_velocity=True)
    X, U = X[..., 0].numpy(), (V[..., 0] / h).numpy()
    areas = [_area(X[n], U[n]) for n in range(DEPTH + 1)]
    node = so.NeuralODE(lambda x: -STIFF * x**3, method="rk4", options={"step_size": 1 / 200})
    x_flow = node(x0)[:, 0]
    xN = xs[-1, :, 0]
    dx = np.diff(xN.numpy())
    return {
        "x0": x0[:, 0].tolist(), "traj_x": xs[..., 0].T.tolist(), "traj_u": (vs[..., 0] / h).T.tolist(),
        "square_x": {n: X[n].tolist() for n in (0, 10, 20, DEPTH)},
        "square_u": {n: U[n].tolist() for n in (0, 10, 20, DEPTH)},
        "areas": areas, "xN": xN.tolist(), "x_flow": x_flow.tolist(),
        "turns": int((np.sign(dx[1:]) != np.sign(dx[:-1])).sum()),
        "flow_monotone": bool((np.diff(x_flow.numpy()) > 0).all()),
        "eps": h / (1 - GAMMA),
    }


def plot(data):
    import matplotlib.pyplot as plt

    fig, axes = new_figure(ncols=3, width=4.0, height=3.9, layout="constrained")
    cmap = plt.get_cmap("coolwarm")
    ax = axes[0, 0]
    x0 = np.array(data["x0"])
    tx, tu = np.array(data["traj_x"]), np.array(data["traj_u"])
    for i in range(0, len(x0), 25):
        ax.plot(tx[i], tu[i], color=cmap((x0[i] + 1) / 2), lw=1.0)
        ax.plot(tx[i, -1], tu[i, -1], "o", color=cmap((x0[i] + 1) / 2), ms=3)
    shades = ["#000000", "#444444", "#777777", "#aaaaaa"]
    for (n, xs), shade in zip(data["square_x"].items(), shades, strict=True):
        ax.fill(xs, data["square_u"][n], color=shade, alpha=0.6, lw=0,
                label=f"{n} layers")
    ax.set_xlabel("position $x$")
    ax.set_ylabel("velocity $x' = v/h$ (per unit time)")
    ax.set_title("(a) phase plane: trajectories from rest $(x_0, 0)$\n(colour: $x_0$; dots: layer $N$)",
                 fontsize=9)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, frameon=False,
              title="a rectangle of starting states (black) and its images after", title_fontsize=6.5)

    ax = axes[0, 1]
    n = np.arange(len(data["areas"]))
    a = np.array(data["areas"]) / data["areas"][0]
    ax.semilogy(n, a, "o", color=COLORS["momentum"], ms=3, label="measured area ratio")
    ax.semilogy(n, GAMMA**n, "-", color=COLORS["reference"], lw=1, label=f"$\\gamma^n$, $\\gamma$ = {GAMMA}")
    ax.set_xlabel("layer $n$")
    ax.set_ylabel("area of the rectangle's image / initial area")
    ax.set_title(f"(b) volume shrinks by $\\gamma^d$ per layer:\nafter {n[-1]} layers "
                 f"{a[-1]:.5f} vs $\\gamma^{{{n[-1]}}}$ = {GAMMA ** n[-1]:.5f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[0, 2]
    ax.plot(x0, data["x_flow"], color=COLORS["neural_ode"], lw=1.5, label="1st-order flow $x' = F(x)$: increasing")
    ax.plot(x0, data["xN"], color=COLORS["momentum"], lw=1.5,
            label=f"Momentum ResNet: {data['turns']} turning points")
    ax.set_xlabel("input $x_0$")
    ax.set_ylabel("output position $x_N$")
    ax.set_title("(c) projected to $x$, the map $x_0 \\to x_N$\nneed not be monotone", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"A Momentum ResNet in phase space: $f = hF$, $F(x) = -{STIFF:g}x^3$, $N$ = {DEPTH}, "
                 f"$\\gamma$ = {GAMMA} ($\\varepsilon$ = {data['eps']:g})", fontsize=10)
    return fig


def numbers(data) -> dict:
    return {"area_ratio_after_N": data["areas"][-1] / data["areas"][0], "gamma^N": GAMMA**DEPTH,
            "turning_points_of_x0_to_xN": data["turns"], "first_order_flow_monotone": data["flow_monotone"],
            "eps": data["eps"]}
