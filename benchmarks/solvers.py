"""Solvers: error at t1 against NFE and wall time for eps*x'' + x' = F(t, x), eps in {0.1, 1, 10}.

Methods: torchdiffeq ``euler``, ``midpoint``, ``rk4`` (fixed steps h = 1/8 .. 1/1024), ``dopri5``
(rtol 1e-3 .. 1e-10, atol = rtol/100), the discrete Momentum ResNet ``discretize(ode, N)``
(one evaluation of F per layer, NFE = N) and scipy ``solve_ivp`` (DOP853) at rtol 1e-13, atol
1e-14. Problems, both float64: a neural ``F(t, x)`` (a time-dependent MLP, d = 4, width 64,
batch 64), whose reference is scipy's DOP853 solution, and a linear ``F(x) = A x`` (d = 4), whose
reference is the closed form ``expm`` of the first-order system (scipy's error against it is
reported to validate the neural reference). The error is ``|x(t1) - x_ref| / |x_ref|``; NFE counts
evaluations of ``F`` (for scipy, ``nfev``). Wall times: best of ``--repeats`` runs, one thread.

Also in the forward rows: the Strang splitting network ``discretize(ode, N, scheme="strang")``
(``strang``, NFE = N) and the asynchronous leapfrog of MALI (``alf``, ``benchmarks/_alf.py``,
NFE = N + 1).

Gradients (``gradient_rows``, neural F): the gradient of ``sum(w * x(t1))`` over F's parameters
by ``strang-exact`` (``discretize(..., scheme="strang", backward="exact")``), ``momentum-exact``
(the Momentum ResNet scheme, ``backward="exact"``), ``mali`` (ALF with the float-reconstructing
memory-free backward), torchdiffeq ``rk4`` and ``dopri5`` with direct backprop (``-direct``) and
with ``odeint_adjoint`` (``-adjoint``). The error is relative to a reference gradient (direct
backprop through dopri5 at rtol 1e-12, atol 1e-14), checked against a second one (Richardson
extrapolation of ``strang-exact`` at the largest depths: the scheme is
symmetric, so its error expands in even powers of h; for depths N and rN,
``(r^2 g(rN) - g(N)) / (r^2 - 1)``). NFE counts forward plus backward
evaluations of ``F``. Peak memory (``memory_rows``, eps = 1, two sizes per method): peak RSS of a
child process running one forward + backward, minus its RSS before the forward, with
``MALLOC_MMAP_THRESHOLD_=65536`` (docs/theory.md §7.1).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.integrate
import torch

import secondorder as so
from benchmarks._alf import alf_solve
from scripts.problems import D, Linear, TimeMLP, linear_exact, linear_matrix, rel

EPSS = [0.1, 1.0, 10.0]
T1 = 1.0
REF_TOL = dict(rtol=1e-13, atol=1e-14)
ROOT = Path(__file__).resolve().parent.parent
GRAD_METHODS = ["strang-exact", "momentum-exact", "mali", "rk4-direct", "rk4-adjoint", "dopri5-direct", "dopri5-adjoint"]
GRAD_REF = dict(method="dopri5", rtol=1e-12, atol=1e-14)


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
    for N in depths:
        net = so.discretize(ode, N, scheme="strang")
        x, dt = _timed(lambda net=net: net(x0), repeats)
        add("strang", f"N={N}", N, dt, x)
    for N in steps:
        (x, _), dt = _timed(lambda N=N: alf_solve(F, eps, x0, torch.zeros_like(x0), N, T1,
                                                  takes_time=name == "neural"), repeats)
        add("alf", f"N={N}", N + 1, dt, x)
    return rows


def compute(quick: bool, seed: int, repeats: int = 1, gradients=True, memory: bool = True) -> dict:
    """Forward rows (``rows``) for both problems; with ``gradients`` (True: every eps, or a list
    of eps) the gradient sweep (``gradient_rows``, ``gradient_checks``); with ``memory`` the
    peak-memory rows (child processes)."""
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
    out = {"quick": quick, "seed": seed, "rows": rows, "reference_checks": refs}
    if gradients:
        from tqdm.auto import tqdm

        epss = EPSS if gradients is True else list(gradients)
        total = len(epss) * sum(len(v) for v in grad_settings(quick).values())
        with tqdm(total=total, desc="gradients", unit="run", leave=False, disable=not sys.stderr.isatty()) as bar:
            # one run per setting (the sweep is long): its wall times are single runs, not best-of
            out["gradient_rows"], out["gradient_checks"] = gradient_rows(
                quick, seed, 1, progress=lambda r: bar.update(), epss=epss)
    if memory:
        from tqdm.auto import tqdm

        total = sum(len(v) for v in MEMORY_SIZES.values())
        with tqdm(total=total, desc="memory", unit="child", leave=False, disable=not sys.stderr.isatty()) as bar:
            out["memory_rows"] = memory_rows(seed, progress=lambda r: bar.update())
    return out


def grad_settings(quick):
    """Method -> settings of the gradient sweep: depths (N), fixed steps or rtols."""
    depths = [8, 32, 128] if quick else [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    steps = [8, 32] if quick else [8, 16, 32, 64, 128, 256]
    rtols = [1e-3, 1e-6] if quick else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
    return {"strang-exact": depths, "momentum-exact": depths, "mali": depths, "rk4-direct": steps,
            "rk4-adjoint": steps, "dopri5-direct": rtols, "dopri5-adjoint": rtols}


def _label(method, setting):
    return f"rtol={setting:.0e}" if method.startswith("dopri5") else (
        f"h=1/{setting}" if method.startswith("rk4") else f"N={setting}")


def gradient_problem(seed):
    """The neural problem of ``compute`` (F, x0) and the loss weights ``w``: ``sum(w * x(t1))``."""
    g = torch.Generator().manual_seed(seed)
    F = TimeMLP(d=4, width=64, seed=seed)
    x0 = torch.randn(64, 4, generator=g, dtype=D)
    w = torch.randn(64, 4, generator=torch.Generator().manual_seed(seed + 1), dtype=D) / 16
    return F, x0, w


def one_gradient(method, setting, F, eps, x0, w):
    """One forward + backward of ``sum(w * x(t1))`` by ``method`` at ``setting``; returns the
    gradient over F's parameters (flat), forward and backward NFE and the wall time."""
    F.zero_grad()
    t0 = time.perf_counter()
    if method in ("strang-exact", "momentum-exact"):
        scheme = "strang" if method == "strang-exact" else "euler"
        net = so.discretize(so.SecondOrderODE(F, eps=eps, t1=T1), setting, backward="exact", scheme=scheme)
        (w * net(x0)).sum().backward()
        nfe, nfe_b = setting, setting  # the exact backward evaluates each layer's F once (its vjp)
    elif method == "mali":
        x, _ = alf_solve(F, eps, x0, torch.zeros_like(x0), setting, T1)
        (w * x).sum().backward()
        nfe, nfe_b = setting + 1, 2 * setting
    else:
        solver, mode = method.split("-")
        kw = ({"options": {"step_size": T1 / setting}} if solver == "rk4"
              else {"rtol": setting, "atol": setting / 100})
        ode = so.SecondOrderODE(F, eps=eps, t1=T1, method=solver, adjoint=mode == "adjoint", **kw)
        (w * ode(x0)).sum().backward()
        nfe, nfe_b = ode.nfe, ode.nfe_backward
    dt = time.perf_counter() - t0
    grad = torch.cat([p.grad.reshape(-1) for p in F.parameters()]).detach().clone()
    return {"grad": grad, "nfe": int(nfe), "nfe_backward": int(nfe_b), "seconds": dt}


def gradient_rows(quick, seed, repeats=1, progress=None, epss=EPSS):
    """Gradient error against total NFE and wall time, every method of ``GRAD_METHODS``, per eps
    in ``epss``. The reference is direct backprop through dopri5 at rtol 1e-12 (quick: 1e-10)."""
    F, x0, w = gradient_problem(seed)
    rows, checks = [], []
    sweep = grad_settings(quick)
    ref_rtol = 1e-10 if quick else GRAD_REF["rtol"]
    for method in GRAD_METHODS:  # warm-up (first-call costs), untimed
        one_gradient(method, sweep[method][0], F, 1.0, x0[:2], w[:2])
    for eps in epss:
        ref = one_gradient("dopri5-direct", ref_rtol, F, eps, x0, w)
        grads = {}
        for method in GRAD_METHODS:
            for setting in sweep[method]:
                if method == "momentum-exact" and T1 / setting >= eps:  # gamma = 1 - h/eps <= 0
                    continue
                best = None
                for _ in range(repeats):
                    r = one_gradient(method, setting, F, eps, x0, w)
                    best = r if best is None or r["seconds"] < best["seconds"] else best
                grads[method, setting] = best["grad"]
                err = rel(best["grad"], ref["grad"])
                rows.append({"eps": eps, "method": method, "setting": _label(method, setting),
                             "nfe": best["nfe"], "nfe_backward": best["nfe_backward"],
                             "seconds": best["seconds"], "error": err if math.isfinite(err) else float("inf")})
                if progress:
                    progress(rows[-1])
        n1, n2 = sweep["strang-exact"][-2], sweep["strang-exact"][-1]
        r2 = (n2 / n1) ** 2  # error ~ C h^2 + O(h^4): cancel the h^2 term
        richardson = (r2 * grads["strang-exact", n2] - grads["strang-exact", n1]) / (r2 - 1)
        checks.append({"eps": eps, "reference_nfe": ref["nfe"], "reference_rtol": ref_rtol,
                       "richardson_strang_vs_reference": rel(richardson, ref["grad"]),
                       "richardson_depths": [n1, n2]})
    return rows, checks


MEMORY_SIZES = {"strang-exact": [64, 1024], "momentum-exact": [64, 1024], "mali": [64, 1024],
                "rk4-direct": [16, 256], "rk4-adjoint": [16, 256],
                "dopri5-direct": [1e-5, 1e-9], "dopri5-adjoint": [1e-5, 1e-9]}


def _child(cfg):
    """One forward + backward in a fresh process: print peak RSS growth (MiB), NFE and time.

    The peak is ``VmHWM`` after resetting it (``/proc/self/clear_refs``) just before the forward,
    minus ``VmRSS`` then: the imports' own peak (scipy, torchdiffeq) is not counted."""

    def status(key):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"{key} not in /proc/self/status")

    torch.set_num_threads(1)
    F, x0, w = gradient_problem(cfg["seed"])
    one_gradient(cfg["method"], cfg["setting"], F, cfg["eps"], x0[:2], w[:2])  # warm-up: imports, kernels
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak RSS (VmHWM) to the current RSS
        fh.write("5")
    base = status("VmRSS")
    r = one_gradient(cfg["method"], cfg["setting"], F, cfg["eps"], x0, w)
    print(json.dumps({"peak_mib": status("VmHWM") - base, "seconds": r["seconds"],
                      "nfe": r["nfe"], "nfe_backward": r["nfe_backward"]}))


def memory_rows(seed, eps=1.0, progress=None):
    """Peak memory of one forward + backward per method at two sizes (child processes)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    rows = []
    for method in GRAD_METHODS:
        for setting in MEMORY_SIZES[method]:
            cfg = {"method": method, "setting": setting, "eps": eps, "seed": seed}
            out = subprocess.run([sys.executable, "-m", "benchmarks.solvers", "--child", json.dumps(cfg)],
                                 cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"memory child {cfg} failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"eps": eps, "method": method, "setting": _label(method, setting), **r})
            if progress:
                progress(rows[-1])
    return rows


def summary(data, targets=(1e-3, 1e-6)):
    """Smallest NFE with which each method reaches a relative error <= target (neural F), per eps
    (None: not reached in the tested range)."""
    out = {}
    for target in targets:
        for eps in EPSS:
            for method in ("euler", "midpoint", "rk4", "dopri5", "momentum", "strang", "alf"):
                ok = [r["nfe"] for r in data["rows"] if r["problem"] == "neural" and r["eps"] == eps
                      and r["method"] == method and r["error"] <= target]
                out[f"err<={target:.0e} eps={eps:g} {method}"] = min(ok) if ok else None
            for method in GRAD_METHODS:
                ok = [r["nfe"] + r["nfe_backward"] for r in data.get("gradient_rows", [])
                      if r["eps"] == eps and r["method"] == method and r["error"] <= target]
                if any(r["eps"] == eps for r in data.get("gradient_rows", [])):
                    out[f"grad<={target:.0e} eps={eps:g} {method}"] = min(ok) if ok else None
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
    if "gradient_rows" in data:
        print("\ngradients of sum(w * x(t1)) over F's parameters (neural F), error against direct "
              "backprop through dopri5 (rtol in the checks below):")
        print(f"{'eps':>5} {'method':<16} {'setting':<12} {'NFE fwd':>7} {'NFE bwd':>7} {'seconds':>9} {'rel. error':>10}")
        for r in data["gradient_rows"]:
            print(f"{r['eps']:>5g} {r['method']:<16} {r['setting']:<12} {r['nfe']:>7d} {r['nfe_backward']:>7d} "
                  f"{r['seconds']:>9.4f} {r['error']:>10.2e}")
        for c in data["gradient_checks"]:
            print(f"  eps={c['eps']:g}: reference rtol {c['reference_rtol']:.0e}, NFE {c['reference_nfe']}; Richardson extrapolation of strang-exact "
                  f"at N={c['richardson_depths']} vs the reference {c['richardson_strang_vs_reference']:.1e}")
    if "memory_rows" in data:
        print("\npeak memory of one forward + backward (eps = 1, MiB above the RSS before the forward):")
        for r in data["memory_rows"]:
            print(f"  {r['method']:<16} {r['setting']:<12} NFE {r['nfe']:>5d} + {r['nfe_backward']:>5d}  "
                  f"{r['peak_mib']:>8.1f} MiB  {r['seconds']:.3f} s")
    print("\nsmallest NFE reaching a relative error target (neural F; grad: forward + backward NFE):")
    for k, v in summary(data).items():
        print(f"  {k:<40} {v if v is not None else '> tested range'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="secondorder bench solvers", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer step sizes, tolerances and depths")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats, best kept (default 3)")
    p.add_argument("--out", default="solvers.json", help="JSON output (default solvers.json)")
    p.add_argument("--no-gradients", action="store_true", help="skip the gradient sweep")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        _child(json.loads(args.child))
        return 0
    from scripts.shared import write_json

    data = compute(args.quick, args.seed, repeats=args.repeats, gradients=not args.no_gradients,
                   memory=not args.no_memory)
    data["summary"] = summary(data)
    print_table(data)
    write_json(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
