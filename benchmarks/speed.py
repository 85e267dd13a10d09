"""Time of one training step of the memory-free backwards against autograd, for MLP and conv blocks of several widths.

In-process, one thread, float32, gamma 0.9, a weight-tied block over ``--depth`` layers; each
configuration times autograd, exact and float steps in turn (``--repeats`` rounds, the minimum of
each kept), so that machine load affects the three alike. Prints a table and writes JSON.

    python -m benchmarks speed [--quick] [--depth 30] [--repeats 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CONFIGS = {
    # name: (kind, width, spatial size, batch)
    "mlp-64": ("mlp", 64, None, 512),
    "mlp-256": ("mlp", 256, None, 512),
    "conv-16ch-16px": ("conv", 16, 16, 32),
    "conv-32ch-16px": ("conv", 32, 16, 32),
    "conv-64ch-16px": ("conv", 64, 16, 32),
    "conv-128ch-8px": ("conv", 128, 8, 32),
}
MODES = ("autograd", "exact", "float")


def _block_and_input(kind, width, size, batch):
    import torch
    from torch import nn

    if kind == "mlp":
        block = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, width))
        x = torch.randn(batch, width)
    else:
        block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        x = torch.randn(batch, width, size, size)
    with torch.no_grad():
        for p in block.parameters():
            p.mul_(0.3)
    return block, x


def run(names, depth=30, repeats=5, seed=0, progress=True):
    import torch
    from tqdm.auto import tqdm

    import secondorder as so

    torch.set_num_threads(1)
    rows = []
    for name in tqdm(names, desc="speed", disable=not progress):
        torch.manual_seed(seed)
        block, x = _block_and_input(*CONFIGS[name])
        nets = {m: so.MomentumResNet([block] * depth, 0.9, backward=m) for m in MODES}
        best = dict.fromkeys(MODES, float("inf"))
        for m in MODES:  # warm-up
            (nets[m](x) ** 2).mean().backward()
        for _ in range(repeats):
            for m in MODES:
                t0 = time.perf_counter()
                (nets[m](x) ** 2).mean().backward()
                best[m] = min(best[m], time.perf_counter() - t0)
        rows.append({"config": name, "elements": x.numel(), **{f"{m}_ms": 1e3 * best[m] for m in MODES},
                     "exact_ratio": best["exact"] / best["autograd"], "float_ratio": best["float"] / best["autograd"]})
    return {"depth": depth, "repeats": repeats, "rows": rows}


def table(result):
    lines = [f"time per training step, depth {result['depth']}, float32, one thread (best of {result['repeats']})",
             "| block | state elements | autograd ms | exact ms | float ms | exact / autograd | float / autograd |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['config']} | {r['elements']} | {r['autograd_ms']:.1f} | {r['exact_ms']:.1f} | "
                     f"{r['float_ms']:.1f} | {r['exact_ratio']:.2f}x | {r['float_ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="secondorder bench speed", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two configurations, 2 repeats")
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/speed_cpu.json)")
    args = p.parse_args(argv)
    from secondorder._io import write_json

    names = ["mlp-64", "conv-32ch-16px"] if args.quick else list(CONFIGS)
    result = run(names, depth=args.depth, repeats=2 if args.quick else args.repeats, seed=args.seed)
    print(table(result))
    out = args.out or str(Path(__file__).resolve().parent / "results" / f"speed_cpu{'_quick' if args.quick else ''}.json")
    write_json(out, result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
