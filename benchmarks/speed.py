"""Time of one training step of the memory-free backwards against autograd, checkpointing and the official package.

In one process, one thread, float32, gamma 0.9, a weight-tied block over ``--depth`` layers. For
each block every method is timed in turn, round after round (``--repeats`` rounds, medians), so
that machine load affects them alike; the table gives each method's median as a ratio to
autograd's. Times are the process's CPU time (``time.process_time``; the JSON also has the wall
clock), which a loaded machine distorts less than the wall clock. Before timing, each method runs one step (reported as ``first_ms``): that step pays
one-time costs that later steps do not (compiling the fused kernels, or loading them from
inductor's on-disk cache; the ~34 MiB import that ``torch.autograd.grad`` with ``grad_outputs``
triggers once per process; first-touch allocations).

Methods (Momentum ResNet unless said): ``autograd`` (stores activations), ``exact`` (the
memory-free exact backward with the fused kernels, :func:`secondorder.exact.set_fused`),
``exact_unverified`` (the same with the self-verification of the reconstructed first state
switched off, to measure what that check costs; not a user option), ``exact_eager`` (the same
without the fused kernels), ``float`` (the float inverse), ``checkpoint``
(``torch.utils.checkpoint`` over ``sqrt(depth)`` segments of the autograd network) and
``momentumnet`` (the official package, ``use_backprop=False``; skipped when not installed). The
``revnet-*`` rows time a RevNet (``autograd``, ``exact``, ``exact_eager``, ``float``).

``floor`` is not a method but the bound every recompute-in-backward method obeys: an autograd step
plus one more forward pass without a graph (the memory-free backward must evaluate every residual
function again). ``floor / autograd`` is therefore the best ratio any of them can reach on that
block; it is about 4/3 where a block's backward costs twice its forward, and more for blocks
whose forward is relatively expensive (a ``tanh`` MLP: ``tanh`` costs as much as a matmul here
and has a cheap derivative). The ``exact / floor`` column is what the exact backward adds on top
of recomputation: its fixed-point arithmetic, its checks and its per-layer Python.

    python -m benchmarks speed [--quick] [--depth 30] [--repeats 7] [--out FILE.json]
    python -m benchmarks speed --kernels    # the fused vs eager fixed-point chain alone, by size
    python -m benchmarks speed --phases     # an exact and a float step split into phases
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import statistics
import sys
import time
from pathlib import Path

CONFIGS = {
    # name: (kind, width, spatial size, batch)
    "mlp-64": ("mlp", 64, None, 512),
    "mlp-256": ("mlp", 256, None, 512),
    "mlp-1024": ("mlp", 1024, None, 128),
    "conv-16ch-16px": ("conv", 16, 16, 32),
    "conv-32ch-16px": ("conv", 32, 16, 32),
    "conv-64ch-16px": ("conv", 64, 16, 32),
    "conv-128ch-8px": ("conv", 128, 8, 32),
    "revnet-mlp-64": ("revnet-mlp", 64, None, 512),
    "revnet-conv-32ch-16px": ("revnet-conv", 32, 16, 32),
}
MODES = ("autograd", "floor", "exact", "exact_unverified", "exact_eager", "float", "checkpoint", "momentumnet")
REVNET_MODES = ("autograd", "floor", "exact", "exact_unverified", "exact_eager", "float")
_EXACT = ("exact", "exact_unverified", "exact_eager")  # the exact backward, three ways


def _block(kind, width):
    from torch import nn

    if kind == "mlp":
        return nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, width))
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))


def _block_and_input(kind, width, size, batch):
    import torch

    base = kind.split("-")[-1]
    if kind.startswith("revnet"):  # F and G act on half the channels
        blocks = [_block(base, width // 2), _block(base, width // 2)]
    else:
        blocks = [_block(base, width)]
    x = torch.randn(batch, width) if base == "mlp" else torch.randn(batch, width, size, size)
    with torch.no_grad():
        for b in blocks:
            for p in b.parameters():
                p.mul_(0.3)
    return blocks, x


class _Checkpointed:
    """A Momentum ResNet step-by-step under ``torch.utils.checkpoint`` over ``sqrt(depth)`` segments."""

    def __init__(self, block, depth, gamma):
        self.block, self.depth, self.gamma = block, depth, gamma
        self.seg = max(1, round(math.sqrt(depth)))

    def _run(self, x, v, n0, n1):
        for _ in range(n0, n1):
            v = self.gamma * v + (1 - self.gamma) * self.block(x)
            x = x + v
        return x, v

    def __call__(self, x):
        import torch
        from torch.utils.checkpoint import checkpoint

        v = torch.zeros_like(x)
        bounds = [round(i * self.depth / self.seg) for i in range(self.seg + 1)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            x, v = checkpoint(self._run, x, v, a, b, use_reentrant=False)
        return x


def _nets(kind, blocks, depth, gamma):
    import secondorder as so

    if kind.startswith("revnet"):
        F, G = blocks
        nets = {m: so.RevNet([F] * depth, [G] * depth, backward="exact" if m in _EXACT else m)
                for m in REVNET_MODES if m != "floor"}
    else:
        (block,) = blocks
        nets = {m: so.MomentumResNet([block] * depth, gamma, backward="exact" if m in _EXACT else m)
                for m in ("autograd", *_EXACT, "float")}
    nets = {"autograd": nets["autograd"], "floor": nets["autograd"], **nets}
    if kind.startswith("revnet"):
        return nets
    nets["checkpoint"] = _Checkpointed(block, depth, gamma)
    try:
        import momentumnet

        nets["momentumnet"] = momentumnet.MomentumNet([block] * depth, gamma, use_backprop=False)
    except ImportError:
        pass
    return nets


def _setup(name, depth, gamma, seed):
    """The networks of every method for block ``name`` and its input, seeded."""
    import torch

    torch.manual_seed(seed)
    blocks, x = _block_and_input(*CONFIGS[name])
    return _nets(CONFIGS[name][0], blocks, depth, gamma), x


def _step(net, x, mode):
    from secondorder import _reversible as reversible
    from secondorder.exact import set_fused

    set_fused(False if mode == "exact_eager" else None)
    verify = reversible._verify_exact
    if mode == "exact_unverified":
        reversible._verify_exact = lambda *args, **kwargs: None
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "floor":  # the extra forward every recompute-in-backward method pays
            import torch

            with torch.no_grad():
                net(x)
        (net(x) ** 2).mean().backward()
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        set_fused(None)
        reversible._verify_exact = verify


def run(names, depth=30, repeats=7, seed=0, progress=True, gamma=0.9):
    """Time every method on every block of ``names``; returns a JSON-able dict with one row per block."""
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    rows = []
    for name in tqdm(names, desc="speed", disable=not progress):
        nets, x = _setup(name, depth, gamma, seed)
        first = {m: 1e3 * _step(net, x, m)[0] for m, net in nets.items()}  # one-time costs
        wall, cpu = {m: [] for m in nets}, {m: [] for m in nets}
        for _ in range(repeats):
            for m, net in nets.items():
                w, c = _step(net, x, m)
                wall[m].append(w)
                cpu[m].append(c)
        med = {m: 1e3 * statistics.median(t) for m, t in cpu.items()}
        med_wall = {m: 1e3 * statistics.median(t) for m, t in wall.items()}
        row = {"config": name, "elements": x.numel(), **{f"{m}_ms": med[m] for m in nets},
               **{f"{m}_wall_ms": med_wall[m] for m in nets}, **{f"{m}_first_ms": first[m] for m in nets}}
        for m in nets:
            if m != "autograd":
                row[f"{m}_ratio"] = med[m] / med["autograd"]
                row[f"{m}_wall_ratio"] = med_wall[m] / med_wall["autograd"]
        row["exact_over_floor"] = med["exact"] / med["floor"]
        rows.append(row)
    return {"depth": depth, "repeats": repeats, "gamma": gamma, "statistic": "median of CPU time (process_time); "
            "*_wall_* keys: wall clock; *_first_ms: wall clock of the first step", "torch": torch.__version__,
            "device": "cpu", "threads": 1, "rows": rows}


def table(result):
    modes = [m for m in MODES if any(f"{m}_ms" in r for r in result["rows"])]
    lines = [f"CPU time per training step, depth {result['depth']}, float32, one thread, median of {result['repeats']} "
             f"interleaved rounds; ratios to autograd (ms of autograd in its column)",
             "| block | state elements | autograd ms | " + " | ".join(f"{m} / autograd" for m in modes[1:])
             + " | exact / floor |",
             "|---|---:|---:|" + "---:|" * len(modes)]
    for r in result["rows"]:
        cells = [f"{r[f'{m}_ratio']:.2f}x" if f"{m}_ratio" in r else "-" for m in modes[1:]]
        lines.append(f"| {r['config']} | {r['elements']} | {r['autograd_ms']:.1f} | " + " | ".join(cells)
                     + f" | {r['exact_over_floor']:.2f}x |")
    return "\n".join(lines)


def kernel_times(sizes=(64, 512, 2048, 8192, 32768, 131072), repeats=200, gamma=0.9):
    """Microseconds of one layer's fixed-point work (forward step, then the backward's unstep),
    eager against fused, float32, one thread, by number of state elements: where the compiled
    call's fixed overhead stops paying (``secondorder._fused.MIN_NUMEL``)."""
    import torch

    from secondorder import _fused
    from secondorder._reversible import _ExactMomentum
    from secondorder.exact import set_fused

    torch.set_num_threads(1)
    old, _fused.MIN_NUMEL = _fused.MIN_NUMEL, 0
    rows = []
    try:
        for size in sizes:
            x = torch.randn(size)
            fx = torch.tanh(x)
            res = {}
            for fused in (True, False, True, False):
                set_fused(fused)
                a = _ExactMomentum(gamma, x)
                a.encode(x, torch.zeros_like(x))
                ts = []
                for i in range(repeats):
                    t0 = time.perf_counter()
                    a.step(i, fx)
                    a.x_float()
                    a.unstep_x()
                    a.x_float()
                    a.unstep_v(i, fx)
                    ts.append(time.perf_counter() - t0)
                a.checks.count = 0
                res[fused] = 1e6 * statistics.median(ts)
            rows.append({"elements": size, "fused_us": res[True], "eager_us": res[False], "speedup": res[False] / res[True]})
    finally:
        set_fused(None)
        _fused.MIN_NUMEL = old
    return rows


def _phase_points():
    """``(phase, owner, attribute)``: the library functions whose time is charged to each phase."""
    import torch

    from secondorder import _fused
    from secondorder import _reversible as R

    arith = [(c, a) for c in (R._ExactMomentum, R._FloatMomentum)
             for a in ("encode", "step", "unstep_x", "unstep_v", "unstep", "x_float", "v_float", "finish_forward")]
    arith += [(c, a) for c in (R._ExactCoupling, R._FloatCoupling)
              for a in ("encode", "get", "add", "sub", "finish_forward")]
    return ([("f in the forward", R._Layers, "call_forward"),
             ("f recomputed", R._Layers, "call_backward"),
             ("vector-Jacobian products", torch.autograd, "grad"),
             ("graph check", R._Layers, "_check_closed"),
             ("self-verification", R, "_verify_exact"),
             ("self-verification", R, "_verify_float")]
            + [("state arithmetic", c, a) for c, a in arith]
            + [("state arithmetic", _fused, "call")])


@contextlib.contextmanager
def _phase_timers(acc):
    """Charge the wall time spent in each of :func:`_phase_points` (exclusive of nested timed calls)
    to ``acc[phase]``, in seconds; the functions are put back afterwards."""
    stack, saved = [], []

    def timed(phase, f):
        @functools.wraps(f)
        def g(*args, **kwargs):
            t = time.perf_counter()
            stack.append(0.0)
            try:
                return f(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                acc[phase] = acc.get(phase, 0.0) + dt - stack.pop()
                if stack:
                    stack[-1] += dt
        return g

    for phase, owner, attr in _phase_points():
        if attr in vars(owner):  # a subclass's inherited method is timed through its base
            saved.append((owner, attr, vars(owner)[attr]))
            setattr(owner, attr, timed(phase, getattr(owner, attr)))
    try:
        yield
    finally:
        for owner, attr, f in reversed(saved):
            setattr(owner, attr, f)  # the attribute as it was stored (a staticmethod stays one)


PHASES = ("f in the forward", "f recomputed", "vector-Jacobian products", "state arithmetic", "self-verification",
          "graph check", "rest")


def phase_times(names, depth=30, repeats=7, seed=0, gamma=0.9, progress=True):
    """Where one training step's time goes, by phase, for ``exact`` and ``float`` against autograd's
    forward and backward (wall clock of timers around the library's functions, medians over
    ``repeats`` interleaved rounds, milliseconds per step). The phases of a memory-free step are
    the residual functions in the forward pass (no graph), their recomputation with a graph in the
    backward, the vector-Jacobian products (``torch.autograd.grad``), the arithmetic on the states
    (fused kernels, quantization, range checks), the self-verification, the closed-graph check, and
    the rest (the loss, the backward loop's Python, gradient bookkeeping)."""
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    rows = []
    for name in tqdm(names, desc="phases", disable=not progress):
        nets, x = _setup(name, depth, gamma, seed)
        nets = {m: nets[m] for m in ("autograd", "exact", "float")}
        samples = {m: [] for m in nets}
        for r in range(repeats + 1):  # round 0 pays the one-time costs and is dropped
            for m, net in nets.items():
                acc = {}
                if m == "autograd":
                    t0 = time.perf_counter()
                    loss = (net(x) ** 2).mean()
                    t1 = time.perf_counter()
                    loss.backward()
                    t2 = time.perf_counter()
                    acc = {"forward": t1 - t0, "backward": t2 - t1}
                    with torch.no_grad():
                        t3 = time.perf_counter()
                        net(x)
                        acc["forward without graph"] = time.perf_counter() - t3
                    total = t2 - t0
                else:
                    with _phase_timers(acc):
                        t0 = time.perf_counter()
                        (net(x) ** 2).mean().backward()
                        total = time.perf_counter() - t0
                    acc["rest"] = total - sum(acc.values())
                acc["total"] = total
                if r:
                    samples[m].append(acc)
        row = {"config": name, "elements": x.numel()}
        for m, accs in samples.items():
            for key in accs[0]:
                row[f"{m}.{key}_ms"] = 1e3 * statistics.median(a.get(key, 0.0) for a in accs)
        rows.append(row)
    return {"depth": depth, "repeats": repeats, "gamma": gamma, "torch": torch.__version__, "device": "cpu",
            "threads": 1, "statistic": "median over rounds of wall-clock ms per step", "rows": rows}


def phase_table(result):
    lines = [f"Wall-clock ms per training step by phase, depth {result['depth']}, float32, one thread, median of "
             f"{result['repeats']} interleaved rounds, each cell its own median (so parts need not add up "
             f"exactly); in brackets: share of autograd's step"]
    for r in result["rows"]:
        ag = r["autograd.total_ms"]
        lines += ["", f"{r['config']} ({r['elements']} state elements): autograd {ag:.1f} ms (forward "
                  f"{r['autograd.forward_ms']:.1f}, backward {r['autograd.backward_ms']:.1f}); a forward without "
                  f"graph {r['autograd.forward without graph_ms']:.1f} (floor {ag + r['autograd.forward without graph_ms']:.1f}"
                  f" = {1 + r['autograd.forward without graph_ms'] / ag:.2f}x)",
                  "| phase | exact ms | float ms |", "|---|---:|---:|"]
        for ph in (*PHASES, "total"):
            cells = [f"{r[f'{m}.{ph}_ms']:.1f} ({r[f'{m}.{ph}_ms'] / ag:.2f})" if f"{m}.{ph}_ms" in r else "-"
                     for m in ("exact", "float")]
            lines.append(f"| {ph} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _default_out(argv):
    from benchmarks.__main__ import default_out

    return default_out("speed", sys.argv[1:] if argv is None else argv)


def main(argv=None):
    p = argparse.ArgumentParser(prog="secondorder bench speed", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="three blocks, 3 rounds")
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kernels", action="store_true", help="time the fixed-point chain alone (fused vs eager) by size")
    p.add_argument("--phases", action="store_true",
                   help="where the time of an exact and a float step goes, by phase, against autograd's forward and backward")
    p.add_argument("--out", default=None, help="JSON output (default out/bench/speed[_quick][_kernels|_phases].json)")
    args = p.parse_args(argv)
    from scripts.shared import report

    root = Path(__file__).resolve().parent.parent / "out" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    if args.kernels:
        rows = kernel_times()
        text = "\n".join(["| state elements | eager us | fused us | eager / fused |\n|---:|---:|---:|---:|"]
                         + [f"| {r['elements']} | {r['eager_us']:.0f} | {r['fused_us']:.0f} | {r['speedup']:.2f}x |"
                            for r in rows])
        return report(text, args.out or _default_out(argv), {"rows": rows})
    names = ["mlp-64", "conv-16ch-16px", "revnet-mlp-64"] if args.quick else list(CONFIGS)
    measure, tabulate = (phase_times, phase_table) if args.phases else (run, table)
    result = measure(names, depth=args.depth, repeats=3 if args.quick else args.repeats, seed=args.seed)
    return report(tabulate(result), args.out or _default_out(argv), result)


if __name__ == "__main__":
    sys.exit(main())
