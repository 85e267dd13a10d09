"""Peak memory and time of one training step against depth, and gradient errors of the memory-saving modes.

Each configuration runs in a fresh subprocess. On CPU the peak is the process's resident-set
high-water mark during the step (``VmHWM`` after resetting it through ``/proc/self/clear_refs``),
with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors really leave the process
(docs/theory.md §7.1); on CUDA it is ``torch.cuda.max_memory_allocated`` during the step. The network is one
weight-tied block ``Linear(d, h)-Tanh-Linear(h, d)`` repeated ``depth`` times, so that parameter
memory is the same at every depth and the table shows what each method stores per layer.

    python -m benchmarks memory [--quick] [--device cpu|cuda] [--out FILE.json]
    python -m benchmarks memory --break-even   # depths 1..8 at batch 8192: exact vs autograd
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = {
    "resnet_autograd": "ResNet, autograd (stores activations)",
    "resnet_checkpoint": "ResNet, torch.utils.checkpoint over sqrt(depth) segments",
    "momentum_autograd": "Momentum ResNet, autograd",
    "momentum_exact": "Momentum ResNet, backward='exact'",
    "momentum_float": "Momentum ResNet, backward='float'",
    "revnet_exact": "RevNet, backward='exact'",
    "official_momentumnet": "momentumnet 0.10, use_backprop=False (when installed)",
}


def _build(method, depth, d, h, gamma, device, dtype):
    import torch
    from torch import nn

    import secondorder as so

    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, d)).to(device, dtype)
    with torch.no_grad():
        for p in block.parameters():
            p.mul_(0.5)
    if method == "resnet_autograd":
        return so.ResNet([block] * depth)
    if method == "resnet_checkpoint":
        from torch.utils.checkpoint import checkpoint_sequential

        from scripts.shared import Residual

        seq = nn.Sequential(*[Residual(block) for _ in range(depth)])
        segments = max(1, round(math.sqrt(depth)))

        class Checkpointed(nn.Module):
            def __init__(self):
                super().__init__()
                self.seq = seq

            def forward(self, x):
                return checkpoint_sequential(self.seq, segments, x, use_reentrant=False)

        return Checkpointed()
    if method == "momentum_exact_eager":  # the exact backward without the fused kernels
        so.exact.set_fused(False)
        return so.MomentumResNet([block] * depth, gamma, backward="exact")
    if method.startswith("momentum_"):
        return so.MomentumResNet([block] * depth, gamma, backward=method.split("_")[1])
    if method == "revnet_exact":
        half = d // 2
        F = nn.Sequential(nn.Linear(half, h // 2), nn.Tanh(), nn.Linear(h // 2, half)).to(device, dtype)
        G = nn.Sequential(nn.Linear(half, h // 2), nn.Tanh(), nn.Linear(h // 2, half)).to(device, dtype)
        return so.RevNet([F] * depth, [G] * depth, backward="exact")
    if method == "official_momentumnet":
        import momentumnet

        return momentumnet.MomentumNet([block] * depth, gamma, use_backprop=False)
    raise ValueError(f"method == {method!r}, must be one of {', '.join(METHODS)}.")


def child(cfg):
    """Run in a fresh process: one warm-up step, then measure the peak memory of a step
    (``cfg["what"] == "memory"``) or the median time of ``repeats`` steps (``"time"``)."""
    import torch

    torch.set_num_threads(1)
    device, dtype = cfg["device"], getattr(torch, cfg["dtype"])
    net = _build(cfg["method"], cfg["depth"], cfg["d"], cfg["h"], cfg["gamma"], device, dtype)
    x = torch.randn(cfg["batch"], cfg["d"], device=device, dtype=dtype)

    def step():
        out = net(x.requires_grad_(False))
        loss = (out**2).mean()
        loss.backward()
        return float(loss)

    step()  # warm-up: allocates the gradient buffers, which every later step reuses
    if cfg["what"] == "time":
        times = []
        for _ in range(cfg["repeats"]):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return {"seconds": statistics.median(times)}
    from scripts.shared import step_peak_bytes

    peak, _ = step_peak_bytes(step, device)
    return {"peak_bytes": peak}


def measure(method, depth, *, d=64, h=128, batch=512, gamma=0.9, device="cpu", dtype="float32", repeats=3, timing=True):
    """Measure one configuration in two fresh subprocesses: peak memory (with
    ``MALLOC_MMAP_THRESHOLD_=65536``, so freed memory leaves the process) and time (with the
    default allocator: forcing mmap for every tensor makes each allocation fault its pages in and
    would distort the timings of allocation-heavy methods). Returns a dict, with ``error`` on failure."""
    cfg = dict(method=method, depth=depth, d=d, h=h, batch=batch, gamma=gamma, device=device, dtype=dtype, repeats=repeats)
    root = str(Path(__file__).resolve().parent.parent)
    out = dict(cfg)
    for what in ("memory", "time") if timing else ("memory",):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        if what == "memory":
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        code = "import json,sys; from benchmarks.memory import child; print('RESULT', json.dumps(child(json.loads(sys.argv[1]))))"
        proc = subprocess.run([sys.executable, "-c", code, json.dumps({**cfg, "what": what})], capture_output=True, text=True, env=env)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                out.update(json.loads(line[7:]))
                break
        else:
            return {**cfg, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return out


def gradient_errors(depths, *, d=16, h=32, batch=64, gamma=0.9, dtypes=("float32", "float64")):
    """Relative gradient error (parameters and input) of each memory-saving mode against autograd."""
    import torch
    from torch import nn

    import secondorder as so

    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for depth in depths:
            torch.manual_seed(0)
            fs = [nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, d)).to(dtype) for _ in range(depth)]
            x = torch.randn(batch, d, dtype=dtype)

            def grads(net, x=x):
                net.zero_grad()
                xi = x.clone().requires_grad_(True)
                (net(xi) ** 2).mean().backward()
                return torch.cat([xi.grad.flatten()] + [p.grad.flatten() for p in net.parameters()])

            ref = grads(so.MomentumResNet(fs, gamma))
            row = {"dtype": dtype_name, "depth": depth}
            if dtype != torch.float64:  # how far float32 autograd itself is from float64 autograd
                fs64 = [copy.deepcopy(f).double() for f in fs]
                net64 = so.MomentumResNet(fs64, gamma)
                net64.zero_grad()
                xi = x.double().requires_grad_(True)
                (net64(xi) ** 2).mean().backward()
                g64 = torch.cat([xi.grad.flatten()] + [p.grad.flatten() for p in net64.parameters()])
                row["autograd_vs_float64"] = float((ref.double() - g64).norm() / g64.norm())
            for mode in ("exact", "float"):
                try:
                    g = grads(so.MomentumResNet(fs, gamma, backward=mode))
                    row[mode] = float((g - ref).norm() / ref.norm())
                except so.ReconstructionError:  # the self-check refused to return gradients
                    row[mode] = "refused"
            try:
                import momentumnet

                g = grads(momentumnet.MomentumNet(fs, gamma, use_backprop=False))
                row["official_momentumnet"] = float((g - ref).norm() / ref.norm())
            except ImportError:
                pass
            rows.append(row)
    return rows


def break_even(depths=(1, 2, 3, 4, 6, 8, 12, 16), *, batch=8192, d=64, h=128, device="cpu", progress=True):
    """Steady-state peak memory of a step (after a warm-up step) at small depths, autograd against
    the exact backward (fused and eager); the break-even depth is the first where exact mode's
    peak is below autograd's. With ``d=64``, ``batch=8192`` one activation is 2 MiB."""
    from tqdm.auto import tqdm

    methods = ("momentum_autograd", "momentum_exact", "momentum_exact_eager")
    rows = []
    for n in tqdm(depths, desc="break-even", disable=not progress):
        row = {"depth": n}
        for m in methods:
            r = measure(m, n, d=d, h=h, batch=batch, device=device, timing=False)
            row[m] = r["peak_bytes"] / 2**20 if "error" not in r else float("nan")
        rows.append(row)
    below = [r["depth"] for r in rows if r["momentum_exact"] < r["momentum_autograd"]]
    return {"batch": batch, "d": d, "h": h, "rows": rows, "break_even_depth": below[0] if below else None,
            "activation_mib": batch * d * 4 / 2**20}


def break_even_table(be):
    lines = [f"steady-state peak memory of a step (MiB), batch {be['batch']}, width {be['d']} "
             f"(one activation = {be['activation_mib']:.1f} MiB); break-even depth: {be['break_even_depth']}",
             "| depth | autograd | exact (fused) | exact (eager) | exact / autograd |", "|---:|---:|---:|---:|---:|"]
    for r in be["rows"]:
        lines.append(f"| {r['depth']} | {r['momentum_autograd']:.1f} | {r['momentum_exact']:.1f} | "
                     f"{r['momentum_exact_eager']:.1f} | {r['momentum_exact'] / r['momentum_autograd']:.2f}x |")
    return "\n".join(lines)


def run(quick=False, device="cpu", seed=0, progress=True, batch=512, d=64, h=128):
    from tqdm.auto import tqdm

    try:
        import momentumnet  # noqa: F401

        methods = list(METHODS)
    except ImportError:
        methods = [m for m in METHODS if m != "official_momentumnet"]
    depths = [10, 100, 300] if quick else [10, 30, 100, 300, 1000]
    jobs = [(m, n) for n in depths for m in methods]
    rows = []
    for m, n in tqdm(jobs, desc="memory", disable=not progress):
        rows.append(measure(m, n, device=device, repeats=2 if quick else 5, batch=batch, d=d, h=h))
    errs = gradient_errors([10, 100, 1000] if quick else [10, 100, 1000, 3000])
    be = break_even((1, 4, 16) if quick else (1, 2, 3, 4, 6, 8, 12, 16), device=device, progress=progress)
    return {"device": device, "quick": quick, "batch": batch, "d": d, "h": h, "rows": rows, "gradient_errors": errs,
            "break_even": be}


def _failure(r):
    """A failed configuration's cell: "refused" when the self-check refused to return gradients."""
    return "refused" if "ReconstructionError" in r["error"] else "error"


def _cell(v):
    return "-" if v is None else v if isinstance(v, str) else f"{v:.2e}"


def table(result):
    rows = result["rows"]
    depths = sorted({r["depth"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["method"], r["depth"]): r for r in rows}
    lines = [f"peak memory of one training step (MiB) / time per step (ms), device={result['device']}, "
             f"batch {result['batch']}, block Linear({result['d']},{result['h']})-Tanh-Linear({result['h']},{result['d']}) tied over depth, float32"]
    lines.append("| method | " + " | ".join(f"depth {n}" for n in depths) + f" | mem {depths[-1]}/{depths[0]} | time vs momentum_autograd at {depths[-1]} |")
    lines.append("|---" * (len(depths) + 3) + "|")
    ref_t = by.get(("momentum_autograd", depths[-1]), {}).get("seconds")
    for m in methods:
        cells = []
        for n in depths:
            r = by[(m, n)]
            cells.append(_failure(r) if "error" in r else f"{r['peak_bytes'] / 2**20:.1f} / {1e3 * r['seconds']:.1f}")
        a, b = by[(m, depths[0])], by[(m, depths[-1])]
        ratio = f"{b['peak_bytes'] / max(a['peak_bytes'], 1):.2f}x" if "error" not in a and "error" not in b else "-"
        tr = f"{b['seconds'] / ref_t:.2f}x" if ref_t and "error" not in b else "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {ratio} | {tr} |")
    lines.append("")
    lines.append("relative gradient error against autograd (Momentum ResNet, gamma 0.9)")
    keys = [k for k in ("exact", "float", "official_momentumnet", "autograd_vs_float64") if k in result["gradient_errors"][0]]
    lines.append("| dtype | depth | " + " | ".join(keys) + " |")
    lines.append("|---" * (len(keys) + 2) + "|")
    for r in result["gradient_errors"]:
        lines.append(f"| {r['dtype']} | {r['depth']} | " + " | ".join(_cell(r.get(k)) for k in keys) + " |")
    if "break_even" in result:
        lines += ["", break_even_table(result["break_even"])]
    return "\n".join(lines)


def _default_out(argv):
    from benchmarks.__main__ import default_out

    return default_out("memory", sys.argv[1:] if argv is None else argv)


def main(argv=None):
    p = argparse.ArgumentParser(prog="secondorder bench memory", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="depths 10, 100, 300 (default 10 .. 1000)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0, help="seed (the configuration seeds torch with 0 in each child)")
    p.add_argument("--batch", type=int, default=512, help="batch size (default 512)")
    p.add_argument("--width", type=int, default=64, help="state width d (default 64); hidden width is 2d")
    p.add_argument("--break-even", action="store_true", help="only the small-depth table (batch 8192): where exact mode's peak drops below autograd's")
    p.add_argument("--depths", default="1,2,3,4,6,8,12,16", help="depths of the --break-even table (comma-separated)")
    p.add_argument("--out", default=None, help="JSON output (default out/bench/memory[_DEVICE][_quick][_break_even].json)")
    args = p.parse_args(argv)
    from scripts.shared import report

    root = Path(__file__).resolve().parent.parent / "out" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    if args.break_even:
        be = break_even(tuple(int(n) for n in args.depths.split(",")), device=args.device)
        return report(break_even_table(be), args.out or _default_out(argv), be)
    result = run(quick=args.quick, device=args.device, seed=args.seed, batch=args.batch, d=args.width, h=2 * args.width)
    return report(table(result), args.out or _default_out(argv), result)


if __name__ == "__main__":
    sys.exit(main())
