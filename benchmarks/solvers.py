"""Solvers: error at t1 against NFE and wall time for eps*x'' + x' = F(t, x), eps in {0.1, 1, 10}.

Methods: torchdiffeq ``euler``, ``midpoint``, ``rk4`` (fixed steps h = 1/8 .. 1/1024), ``dopri5``
(rtol 1e-3 .. 1e-10, atol = rtol/100), the discrete Momentum ResNet ``discretize(ode, N)``
(one evaluation of F per layer, NFE = N) and scipy ``solve_ivp`` (DOP853) at rtol 1e-13, atol
1e-14. Problems, both float64: a neural ``F(t, x)`` (a time-dependent MLP, d = 4, width 64,
batch 64), whose reference is scipy's DOP853 solution, and a linear ``F(x) = A x`` (d = 4), whose
reference is the closed form ``expm`` of the first-order system (scipy's error against it is
reported to validate the neural reference). The error is ``|x(t1) - x_ref| / |x_ref|``; NFE counts
evaluations of ``F`` (for scipy, ``nfev``). Wall times: best of ``--repeats`` runs, one thread.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import scipy.integrate
import torch

import secondorder as so
from theory.continuous_limit import D, Linear, TimeMLP, linear_exact, linear_matrix, rel

EPSS = [0.1, 1.0, 10.0]
T1 = 1.0
REF_TOL = dict(rtol=1e-13, atol=1e-14)


def scipy_solve(F, eps, x0, rtol, atol, takes_time):
    """``x(t1)`` by ``solve_ivp(method="DOP853")`` on the flattened first-order system."""
    shape = x0.shape
    n = x0.numel()

    def rhs(t, y):
        yt = torch.from_numpy(y)
        tt = torch.tensor(t, dtype=D)
        with torch.no_grad():
            if eps == 0:
                x = yt.reshape(shape)
                return (F(tt, x) if takes_time else F(x)).reshape(-1).numpy()
            x, u = yt[:n].reshape(shape), yt[n:].reshape(shape)
            fx = F(tt, x) if takes_time else F(x)
            return torch.cat([u.reshape(-1), ((fx - u) / eps).reshape(-1)]).numpy()

    y0 = x0.reshape(-1).numpy() if eps == 0 else np.concatenate([x0.reshape(-1).numpy(), np.zeros(n)])
    t0 = time.perf_counter()
    sol = scipy.integrate.solve_ivp(rhs, (0.0, T1), y0, method="DOP853", rtol=rtol, atol=atol)
    dt = time.perf_counter() - t0
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return torch.from_numpy(sol.y[:n, -1].reshape(shape)), sol.nfev, dt


def _timed(fn, repeats):
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def settings(quick):
    steps = [8, 32, 128, 512] if quick else [8, 16, 32, 64, 128, 256, 512, 1024]
    rtols = [1e-3, 1e-5, 1e-7, 1e-9] if quick else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    depths = [8, 32, 128, 512, 2048] if quick else [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    return steps, rtols, depths


def run_problem(name, F, x0, eps, ref, quick, repeats):
    """All methods on one problem; returns a list of rows."""
    steps, rtols, depths = settings(quick)
    rows = []

    def add(method, setting, nfe, seconds, x):
        err = rel(x, ref)
        rows.append({"problem": name, "eps": eps, "method": method, "setting": setting, "nfe": int(nfe),
                     "seconds": seconds, "error": err if math.isfinite(err) else float("inf")})

    for method in ("euler", "midpoint", "rk4"):
        for n in steps:
            ode = so.SecondOrderODE(F, eps=eps, t1=T1, method=method, options={"step_size": T1 / n})
            x, dt = _timed(lambda ode=ode: ode(x0), repeats)
            add(method, f"h=1/{n}", ode.nfe, dt, x)
    for rtol in rtols:
        ode = so.SecondOrderODE(F, eps=eps, t1=T1, method="dopri5", rtol=rtol, atol=rtol / 100)
        x, dt = _timed(lambda ode=ode: ode(x0), repeats)
        add("dopri5", f"rtol={rtol:.0e}", ode.nfe, dt, x)
    ode = so.SecondOrderODE(F, eps=eps, t1=T1)
    for N in depths:
        if N < so.min_depth(eps, T1):
            continue
        net = so.discretize(ode, N)
        x, dt = _timed(lambda net=net: net(x0), repeats)
        add("momentum", f"N={N}", N, dt, x)
    return rows


def compute(quick: bool, seed: int, repeats: int = 1) -> dict:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    d = 4
    F_nn = TimeMLP(d=d, width=64, seed=seed)
    x_nn = torch.randn(64, d, generator=g, dtype=D)
    A = linear_matrix(d, seed=seed)
    F_lin = Linear(A)
    x_lin = torch.randn(64, d, generator=g, dtype=D)
    rows, refs = [], []
    for eps in EPSS:
        ref_nn, nfev, dt = scipy_solve(F_nn, eps, x_nn, takes_time=True, **REF_TOL)
        rows.append({"problem": "neural", "eps": eps, "method": "scipy DOP853 (reference)",
                     "setting": "rtol=1e-13", "nfe": int(nfev), "seconds": dt, "error": 0.0})
        rows += run_problem("neural", F_nn, x_nn, eps, ref_nn, quick, repeats)
        exact = linear_exact(A, eps, x_lin, torch.zeros_like(x_lin), T1)[0]
        ref_lin, nfev, dt = scipy_solve(F_lin, eps, x_lin, takes_time=False, **REF_TOL)
        rows.append({"problem": "linear", "eps": eps, "method": "scipy DOP853",
                     "setting": "rtol=1e-13", "nfe": int(nfev), "seconds": dt,
                     "error": rel(ref_lin, exact)})
        rows += run_problem("linear", F_lin, x_lin, eps, exact, quick, repeats)
        tight = so.SecondOrderODE(F_nn, eps=eps, method="dopri5", rtol=1e-12, atol=1e-14)
        with torch.no_grad():
            refs.append({"eps": eps, "scipy_vs_closed_form_linear": rel(ref_lin, exact),
                         "dopri5_1e-12_vs_scipy_neural": rel(tight(x_nn), ref_nn)})
    return {"quick": quick, "seed": seed, "rows": rows, "reference_checks": refs}


def summary(data, targets=(1e-3, 1e-6)):
    """Smallest NFE with which each method reaches a relative error <= target (neural F), per eps
    (None: not reached in the tested range)."""
    out = {}
    for target in targets:
        for eps in EPSS:
            for method in ("euler", "midpoint", "rk4", "dopri5", "momentum"):
                ok = [r["nfe"] for r in data["rows"] if r["problem"] == "neural" and r["eps"] == eps
                      and r["method"] == method and r["error"] <= target]
                out[f"err<={target:.0e} eps={eps:g} {method}"] = min(ok) if ok else None
    return out


def print_table(data):
    print(f"{'problem':<8} {'eps':>5} {'method':<26} {'setting':<12} {'NFE':>7} {'seconds':>9} {'rel. error':>10}")
    for r in data["rows"]:
        print(f"{r['problem']:<8} {r['eps']:>5g} {r['method']:<26} {r['setting']:<12} {r['nfe']:>7d} "
              f"{r['seconds']:>9.4f} {r['error']:>10.2e}")
    print("\nreference checks:")
    for c in data["reference_checks"]:
        print(f"  eps={c['eps']:g}: scipy DOP853 vs closed form (linear) {c['scipy_vs_closed_form_linear']:.1e}; "
              f"dopri5 rtol 1e-12 vs scipy (neural) {c['dopri5_1e-12_vs_scipy_neural']:.1e}")
    print("\nsmallest NFE reaching a relative error target (neural F):")
    for k, v in summary(data).items():
        print(f"  {k:<32} {v if v is not None else '> tested range'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="secondorder bench solvers", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer step sizes, tolerances and depths")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats, best kept (default 3)")
    p.add_argument("--out", default="solvers.json", help="JSON output (default solvers.json)")
    args = p.parse_args(argv)
    from scripts.shared import write_json

    data = compute(args.quick, args.seed, repeats=args.repeats)
    data["summary"] = summary(data)
    print_table(data)
    write_json(args.out, data)
    return 0
