"""Learnable damping: first-order, fixed-eps and learnable per-feature eps ODEs, adjoint vs exact.

The task: a family of ``d`` damped oscillators ``x_i'' + c_i x_i' + k_i x_i = 0`` (one per
feature, each with its own damping ``c_i`` and stiffness ``k_i``), observed at ``K`` times on
``[0, T]`` from random starts ``x(0)`` at rest. Divided by ``c_i`` this is ``eps_i x_i'' + x_i' =
F_i(x)`` with ``eps_i = 1/c_i`` and ``F_i(x) = -(k_i/c_i) x_i``: the second-order family with a
*per-feature* ``eps``, which is what a heavy-ball neural ODE (Xia et al., NeurIPS 2021:
``x'' + gamma x' = f(x)`` with learnable damping) learns. Three models share the same MLP field
``F`` (same initial weights):

- ``node``: the first-order neural ODE ``x' = F(x)`` (``so.NeuralODE``): a scalar autonomous
  first-order ODE per feature cannot oscillate, so it can only fit the decay;
- ``fixed``: ``eps x'' + x' = F(x)`` with one fixed ``eps`` (every feature damped alike);
- ``learned``: the same with a learnable per-feature ``eps`` (an ``nn.Parameter`` of shape ``(d,)``).

Each is trained with two gradients:

- ``adjoint``: ``SecondOrderODE(..., adjoint=True)`` (torchdiffeq ``dopri5``, constant memory,
  backward solve in reverse time);
- ``exact``: ``so.discretize(ode, depth, backward="exact")`` per observation interval (memory
  free, bit-exact reconstruction; a learnable ``eps`` is tied to the network's gamma, so ``eps``
  gets the exact gradient). The first-order model has ``gamma = 0``, which cannot be inverted: its
  discrete run uses ``backward="autograd"`` (labelled ``discrete-autograd``).

Recorded per step: the training loss, the field evaluations (NFE, forward + backward), the
training wall time and a learned ``eps``; every ``--grad-every`` steps the gradient error (relative, over the whole
gradient): the adjoint's against direct backprop through the same dopri5 solve (the exact
gradient of the loss it computed) and against the exact discretization's gradient at the same
parameters (this one also holds the O(h) difference between the two forward models); the exact
backward's against ``backward="autograd"`` of the same network. A learned ``eps`` is clamped to
``>= 1.5 h`` after every step in both runs (the discretization needs ``eps > h``).

    python examples/hbnode_comparison.py --quick      # ~1 minute
    python examples/hbnode_comparison.py              # the numbers in BENCHMARKS.md (~6 minutes, 1 core)

Writes ``out/hbnode_comparison.json`` (``--out``). ``--scheme`` is passed to ``so.discretize`` as
``scheme=`` when given (for time-stepping schemes other than the default).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(_ROOT))

import secondorder as so  # noqa: E402
from scripts.shared import seed_everything, write_json  # noqa: E402

D = torch.float64
MODELS = ("node", "fixed", "learned")
GRADIENTS = ("adjoint", "exact")

#: the oscillators: damping c_i and stiffness k_i; eps_i = 1/c_i = (2, 1, 0.5, 0.25)
DAMPING = (0.5, 1.0, 2.0, 4.0)
STIFFNESS = (4.0, 6.0, 8.0, 12.0)

FULL = dict(steps=300, n_train=32, n_test=64, T=3.0, K=15, depth=8, hidden=32, lr=1e-2, grad_every=10,
            rtol=1e-5, atol=1e-7, eps0=1.0)
QUICK = dict(FULL, steps=16, n_train=16, n_test=16, K=6, depth=6, hidden=16, grad_every=5)


def oscillator(c, k, x0, t):
    """Closed form of ``x'' + c x' + k x = 0``, ``x(0) = x0``, ``x'(0) = 0`` at times ``t``
    (distinct roots of ``r^2 + c r + k``)."""
    disc = np.sqrt(complex(c * c - 4 * k))
    r1, r2 = (-c + disc) / 2, (-c - disc) / 2
    c2 = -r1 * x0 / (r2 - r1)
    c1 = x0 - c2
    return (c1[None] * np.exp(r1 * t[:, None]) + c2[None] * np.exp(r2 * t[:, None])).real


def make_data(n, T, K, rng):
    """``x0`` (n, d) and the observations ``ys`` (K + 1, n, d) at ``ts = linspace(0, T, K + 1)``."""
    d = len(DAMPING)
    x0 = rng.normal(size=(n, d))
    ts = np.linspace(0.0, T, K + 1)
    ys = np.stack([oscillator(DAMPING[i], STIFFNESS[i], x0[:, i], ts) for i in range(d)], axis=-1)
    return torch.tensor(x0, dtype=D), torch.tensor(ts, dtype=D), torch.tensor(ys, dtype=D)


class MLP(nn.Module):
    """The field ``F(x)``: Linear - tanh - Linear."""

    def __init__(self, d, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d)).double()

    def forward(self, x):
        return self.net(x)


class Model:
    """One (model, gradient) configuration: its parameters, a loss, and how many field evaluations
    the last loss and backward took."""

    def __init__(self, kind, gradient, cfg, seed, scheme=None):
        self.kind, self.gradient, self.cfg, self.scheme = kind, gradient, cfg, scheme
        d = len(DAMPING)
        torch.manual_seed(seed)
        self.F = MLP(d, cfg["hidden"])  # same initial weights in every configuration
        if kind == "node":
            self.eps = 0.0
        elif kind == "fixed":
            self.eps = float(cfg["eps0"])
        else:
            self.eps = nn.Parameter(torch.full((d,), float(cfg["eps0"]), dtype=D))
        self.dt = cfg["T"] / cfg["K"]
        self.h = self.dt / cfg["depth"]

    def parameters(self):
        return list(self.F.parameters()) + ([self.eps] if isinstance(self.eps, nn.Parameter) else [])

    # -- the two forward models ---------------------------------------------------------------
    def _ode(self, adjoint, t1):
        kw = dict(t1=t1, method="dopri5", rtol=self.cfg["rtol"], atol=self.cfg["atol"], adjoint=adjoint)
        if self.kind == "node":
            return so.NeuralODE(self.F, **kw)
        return so.SecondOrderODE(self.F, eps=self.eps, **kw)

    def _segment(self, backward):
        ode = self._ode(False, self.dt)
        if self.kind == "node":
            backward = "autograd"  # gamma = 0: no inverse
        kw = {} if self.scheme is None else {"scheme": self.scheme}
        return so.discretize(ode, self.cfg["depth"], backward=backward, **kw)

    def predict(self, x0, ts, how):
        """Predicted states at ``ts`` (K + 1, n, d); ``how`` is "adjoint", "direct" (backprop
        through the same dopri5 solve), "exact" or "autograd" (the discretization). Returns the
        prediction and the field evaluations of the forward pass."""
        if how in ("adjoint", "direct"):
            ode = self._ode(how == "adjoint", float(ts[-1]))
            self._last_ode = ode
            xs, _ = ode.trajectory(x0, ts) if self.kind == "node" else ode.trajectory(x0, ts, v0=torch.zeros_like(x0))
            return xs, ode.nfe
        net = self._segment(how)
        x, v = x0, torch.zeros_like(x0)
        out = [x]
        for _ in range(len(ts) - 1):
            x, v = net(x, v0=v, return_velocity=True)
            out.append(x)
        self._last_ode = None
        return torch.stack(out), self.cfg["depth"] * (len(ts) - 1)

    def backward_nfe(self, how, forward_nfe):
        if how in ("adjoint", "direct"):
            return self._last_ode.nfe_backward
        return forward_nfe if (how == "exact" and self.kind != "node") else 0

    def loss_and_grads(self, x0, ts, ys, how):
        pred, nfe = self.predict(x0, ts, how)
        loss = (pred[1:] - ys[1:]).pow(2).mean()
        grads = torch.autograd.grad(loss, self.parameters())
        return float(loss.detach()), grads, nfe + self.backward_nfe(how, nfe)


def rel_error(g, ref):
    num = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(g, ref, strict=True)))
    den = math.sqrt(sum(float(b.pow(2).sum()) for b in ref))
    return num / den if den > 0 else float("nan")


def train(kind, gradient, cfg, data, seed, scheme=None, progress=True):
    """Train one configuration; returns its record (curves, gradient errors, final values)."""
    x0, ts, ys, x0_test, ys_test = data
    m = Model(kind, gradient, cfg, seed, scheme)
    opt = torch.optim.Adam(m.parameters(), lr=cfg["lr"])
    how = "adjoint" if gradient == "adjoint" else "exact"
    rec = {"model": kind, "gradient": gradient if not (kind == "node" and gradient == "exact") else "discrete-autograd",
           "loss": [], "nfe": [], "time_s": [], "grad_err": [], "eps_history": []}
    nfe_total, wall = 0, 0.0
    bar = range(cfg["steps"])
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc=f"{kind}/{gradient}", leave=False)
    for step in bar:
        t0 = time.perf_counter()
        loss, grads, nfe = m.loss_and_grads(x0, ts, ys, how)
        wall += time.perf_counter() - t0
        if step % cfg["grad_every"] == 0 or step == cfg["steps"] - 1:
            entry = {"step": step}
            if gradient == "adjoint":
                entry["vs_direct"] = rel_error(grads, m.loss_and_grads(x0, ts, ys, "direct")[1])
                ref_disc = "exact" if kind != "node" else "autograd"
                entry["vs_discretization"] = rel_error(grads, m.loss_and_grads(x0, ts, ys, ref_disc)[1])
            else:
                entry["vs_autograd"] = rel_error(grads, m.loss_and_grads(x0, ts, ys, "autograd")[1])
            rec["grad_err"].append(entry)
        t0 = time.perf_counter()
        for p, g in zip(m.parameters(), grads, strict=True):
            p.grad = g
        opt.step()
        if isinstance(m.eps, nn.Parameter):
            with torch.no_grad():
                m.eps.clamp_(min=1.5 * m.h)
        wall += time.perf_counter() - t0
        nfe_total += nfe
        rec["loss"].append(loss)
        rec["nfe"].append(nfe_total)
        rec["time_s"].append(wall)
        if isinstance(m.eps, nn.Parameter):
            rec["eps_history"].append(m.eps.detach().tolist())  # after the step
        if progress:
            bar.set_postfix(loss=f"{loss:.3g}")
    with torch.no_grad():
        pred, _ = m.predict(x0_test, ts, "exact" if gradient == "exact" else "direct")
        rec["test_loss"] = float((pred[1:] - ys_test[1:]).pow(2).mean())
    rec["eps"] = (m.eps.detach().tolist() if isinstance(m.eps, nn.Parameter) else m.eps)
    rec["final_loss"] = rec["loss"][-1]
    return rec


def run(cfg, seed=0, models=MODELS, gradients=GRADIENTS, scheme=None, progress=True):
    """Every (model, gradient) configuration on one data set; returns the JSON-able result."""
    rng = seed_everything(seed)
    x0, ts, ys = make_data(cfg["n_train"], cfg["T"], cfg["K"], rng)
    x0_test, _, ys_test = make_data(cfg["n_test"], cfg["T"], cfg["K"], rng)
    data = (x0, ts, ys, x0_test, ys_test)
    runs = [train(k, g, cfg, data, seed, scheme, progress) for k in models for g in gradients]
    return {"config": cfg, "seed": seed, "scheme": scheme, "true_eps": [1 / c for c in DAMPING],
            "damping": list(DAMPING), "stiffness": list(STIFFNESS), "runs": runs}


def _median(xs):
    xs = [x for x in xs if x == x]
    return float(np.median(xs)) if xs else float("nan")


def table(result):
    """A markdown table of the runs."""
    lines = ["| model | gradient | final train loss | test loss | NFE (total) | time (s) | final eps | "
             "grad. error (median) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if r["gradient"] == "adjoint":
            err = (f"{_median([e['vs_direct'] for e in r['grad_err']]):.1e} vs direct, "
                   f"{_median([e['vs_discretization'] for e in r['grad_err']]):.1e} vs discretization")
        else:
            err = f"{_median([e['vs_autograd'] for e in r['grad_err']]):.1e} vs autograd"
        eps = r["eps"]
        eps = "(" + ", ".join(f"{e:.2f}" for e in eps) + ")" if isinstance(eps, list) else f"{eps:g}"
        lines.append(f"| {r['model']} | {r['gradient']} | {r['final_loss']:.2e} | {r['test_loss']:.2e} | "
                     f"{r['nfe'][-1]} | {r['time_s'][-1]:.1f} | {eps} | {err} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring for details.")
    p.add_argument("--quick", action="store_true", help="a ~1 minute run: 16 steps, smaller data and network")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the initial weights (default 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 300, --quick 16)")
    p.add_argument("--scheme", default=None, help="passed to so.discretize as scheme= (default: its default)")
    p.add_argument("--out", default="out/hbnode_comparison.json", help="JSON output path")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = dict(QUICK if args.quick else FULL)
    if args.steps is not None:
        cfg["steps"] = args.steps
    result = run(cfg, args.seed, scheme=args.scheme, progress=not args.no_progress)
    print(f"true eps = 1/c = {tuple(round(e, 3) for e in result['true_eps'])}")
    print(table(result))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
