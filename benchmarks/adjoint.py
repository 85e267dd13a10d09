"""Exact discretization vs adjoint: gradient error against peak memory, eps*x'' + x' = F(x).

For each ``eps`` the same ``F`` (``Linear(64, 256) - Tanh - Linear(256, 64)``, float64, batch 128,
loss ``sum(w * x(1))``) is trained through

- ``SecondOrderODE`` with dopri5 (rtol 1e-8, atol 1e-10): direct backprop through the solver
  (``ode-direct``) and ``odeint_adjoint`` (``ode-adjoint``, a reverse-time solve);
- ``discretize(ode, N)`` at several depths with ``backward="autograd"`` (stores activations),
  ``"exact"`` (stores none, reconstructs them bit-exactly) and ``"float"`` (stores none,
  reconstructs them by the float inverse).

Columns: ``err_same``, the relative gradient error against the *same* discrete problem computed
with stored activations (adjoint vs direct backprop through the same solver; exact/float vs
autograd at the same depth): the error the memory saving costs. ``err_ode``, the error against
the ODE's gradient (direct backprop through dopri5 at rtol 1e-11), which adds the
discretization error O(1/N) of the networks. ``peak MiB``: peak RSS of a child process running
one forward + backward, minus its RSS before the forward, with ``MALLOC_MMAP_THRESHOLD_=65536``
so freed tensors leave the heap (docs/theory.md §7.1). Gradients are over F's parameters.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
D_IN, WIDTH, BATCH = 64, 256, 128
RTOL, ATOL = 1e-8, 1e-10
REF_RTOL, REF_ATOL = 1e-11, 1e-13


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(cfg: dict) -> None:
    """One forward + backward; writes the gradient (npy) and a JSON line with memory and time."""
    import torch
    from torch import nn

    import secondorder as so

    torch.set_num_threads(1)
    torch.manual_seed(cfg["seed"])
    D = torch.float64
    F = nn.Sequential(nn.Linear(D_IN, WIDTH), nn.Tanh(), nn.Linear(WIDTH, D_IN)).to(D)
    x0 = torch.randn(BATCH, D_IN, dtype=D)
    w = torch.randn(BATCH, D_IN, dtype=D) / math.sqrt(BATCH * D_IN)
    kind, eps = cfg["kind"], cfg["eps"]
    if kind.startswith("ode"):
        rtol, atol = (REF_RTOL, REF_ATOL) if kind == "ode-reference" else (RTOL, ATOL)
        model = so.SecondOrderODE(F, eps=eps, method="dopri5", rtol=rtol, atol=atol,
                                  adjoint=kind == "ode-adjoint")
    else:
        model = so.discretize(so.SecondOrderODE(F, eps=eps), cfg["depth"], backward=kind.split("-")[1])
    base_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = _rss_mib()
    t0 = time.perf_counter()
    loss = (w * model(x0)).sum()
    loss.backward()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    g = torch.cat([p.grad.reshape(-1) for p in F.parameters()]).numpy()
    np.save(cfg["grad_path"], g)
    nfe = getattr(model, "nfe", cfg.get("depth", 0))
    nfe_b = getattr(model, "nfe_backward", 0)
    print(json.dumps({"peak_mib": max(peak, base_peak) - base, "seconds": dt, "nfe": nfe,
                      "nfe_backward": nfe_b, "loss": loss.item()}))


def _run_child(cfg, tmp):
    cfg = dict(cfg, grad_path=str(Path(tmp) / f"g{abs(hash(json.dumps(cfg, sort_keys=True)))}.npy"))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "benchmarks.adjoint", "--child", json.dumps(cfg)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {cfg['kind']} failed:\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["grad"] = np.load(cfg["grad_path"])
    return res


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def compute(quick: bool, seed: int, progress=print, bar=None) -> dict:
    """Run every configuration (one child process each); ``progress`` gets each table row.

    ``bar``: show a tqdm bar over the child runs (default: when stderr is a terminal).
    """
    from tqdm.auto import tqdm

    epss = [1.0, 0.1] if quick else [1.0, 0.1, 1 / 32]
    depths = [64, 256] if quick else [64, 256, 1024]
    runs = sum(3 + 3 * sum(N * eps >= 1 for N in depths) for eps in epss)
    pbar = tqdm(total=runs, desc="adjoint", unit="run", leave=False,
                disable=(not sys.stderr.isatty()) if bar is None else not bar)
    rows = []

    def child(cfg, tmp):
        pbar.set_postfix_str(f"eps={cfg['eps']:g} {cfg['kind']} {cfg.get('depth', '')}".strip())
        r = _run_child(cfg, tmp)
        pbar.update()
        return r

    def emit(line):
        pbar.clear()
        progress(line)
        pbar.refresh()

    with tempfile.TemporaryDirectory() as tmp, pbar:
        for eps in epss:
            base = {"eps": eps, "seed": seed}
            ref = child(dict(base, kind="ode-reference"), tmp)
            direct = child(dict(base, kind="ode-direct"), tmp)
            adj = child(dict(base, kind="ode-adjoint"), tmp)
            for name, r, same in (("ode-direct", direct, direct), ("ode-adjoint", adj, direct)):
                rows.append({"eps": eps, "model": name, "depth": None, "nfe": r["nfe"],
                             "nfe_backward": r["nfe_backward"], "peak_mib": r["peak_mib"],
                             "seconds": r["seconds"], "err_same": _rel(r["grad"], same["grad"]),
                             "err_ode": _rel(r["grad"], ref["grad"])})
                emit(_fmt_row(rows[-1]))
            for N in depths:
                if N * eps < 1:
                    continue
                res = {k: child(dict(base, kind=f"discrete-{k}", depth=N), tmp)
                       for k in ("autograd", "exact", "float")}
                for k, r in res.items():
                    err = _rel(r["grad"], res["autograd"]["grad"])
                    rows.append({"eps": eps, "model": f"momentum-{k}", "depth": N, "nfe": N,
                                 "nfe_backward": 0 if k == "autograd" else N,
                                 "peak_mib": r["peak_mib"], "seconds": r["seconds"],
                                 "err_same": err if math.isfinite(err) else float("inf"),
                                 "err_ode": _rel(r["grad"], ref["grad"])})
                    emit(_fmt_row(rows[-1]))
    return {"quick": quick, "seed": seed, "rows": rows,
            "setup": {"d": D_IN, "width": WIDTH, "batch": BATCH, "rtol": RTOL, "atol": ATOL,
                      "reference_rtol": REF_RTOL, "dtype": "float64"}}


HEADER = (f"{'eps':>7} {'model':<18} {'depth':>5} {'NFE fwd':>7} {'NFE bwd':>7} {'peak MiB':>9} "
          f"{'seconds':>8} {'err_same':>9} {'err_ode':>9}")


def _fmt_row(r):
    return (f"{r['eps']:>7.4g} {r['model']:<18} {r['depth'] if r['depth'] else '-':>5} {r['nfe']:>7} "
            f"{r['nfe_backward']:>7} {r['peak_mib']:>9.1f} {r['seconds']:>8.3f} {r['err_same']:>9.1e} "
            f"{r['err_ode']:>9.1e}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="secondorder bench adjoint", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="eps in {1, 0.1}, depths 64 and 256")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None,
                   help="JSON output (default out/bench/adjoint[_quick].json at the checkout root)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        _child(json.loads(args.child))
        return 0
    from scripts.shared import write_json

    out = Path(args.out) if args.out else ROOT / "out" / "bench" / f"adjoint{'_quick' if args.quick else ''}.json"
    print(HEADER, flush=True)
    data = compute(args.quick, args.seed, progress=lambda line: print(line, flush=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, data)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
