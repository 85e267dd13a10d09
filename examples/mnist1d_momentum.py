"""MNIST-1D: ResNets, Momentum ResNets (several gamma, exact backward) and RevNets on real 1-D data.

A scaled-down reproduction of the empirical claims of Momentum ResNets (Sander, Ablin, Blondel,
Peyré, ICML 2021) on MNIST-1D (Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D",
arXiv:2011.14439): 4,000 training and 1,000 test sequences of length 40, 10 classes, generated
offline by the ``mnist1d`` package's ``make_dataset`` from the templates it ships (its download
path is never called). Four experiments, all from this one script:

1. ``accuracy``: 1-D convolutional nets of several depths trained as a ResNet, as Momentum
   ResNets (``so.to_momentum`` of the same initial ResNet, ``backward="exact"``) for gamma in
   {0.5, 0.9, 0.99} and as a RevNet (``so.RevNet``, exact backward) with the same parameter
   count, over several seeds; test accuracy mean and spread beside the published baselines.
   gamma = 0 is the ResNet itself (the exact backward needs gamma > 0; a gamma = 0 Momentum
   ResNet computes ``x + f(x)``), so its entry repeats the ResNet's numbers.
2. ``curves``: the per-epoch running training accuracy and test accuracy of those runs at one
   depth (ResNet vs Momentum ResNet: same epochs, optimiser and batch order).
3. ``memory``: peak memory of one training step (ResNet with autograd, ResNet with
   ``torch.utils.checkpoint`` over sqrt(depth) segments, Momentum ResNet exact, RevNet exact)
   against batch size and depth, each point in a fresh process (``MALLOC_MMAP_THRESHOLD_=65536``,
   steady state after a warm-up step, ``scripts.shared.step_peak_bytes``), and the largest
   batch (powers of two) each method trains under a fixed memory budget.
4. ``finetune``: a ResNet pretrained on classes 0-4, converted with ``so.to_momentum`` at several
   gammas (exact backward) and fine-tuned on classes 5-9, against fine-tuning the ResNet itself
   and training it from scratch: test accuracy on classes 5-9 and peak step memory.

Results go to ``out/mnist1d/results.json`` (``--out`` to change); every trained group of models
is cached under ``out/mnist1d/cache/`` keyed by all its settings, so the figures
``momentum_influence`` and ``learning_curves`` (``secondorder figures``) reuse a finished run.

    python examples/mnist1d_momentum.py --quick            # CI-sized, about half a minute
    python examples/mnist1d_momentum.py                    # the settings of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(_ROOT))

import secondorder as so  # noqa: E402
from examples._train import evaluate, run_fresh, step_peak, train  # noqa: E402
from scripts.shared import Residual, seed_everything, write_json  # noqa: E402

#: Published MNIST-1D test accuracies for the default 4000 / 1000 split (Greydanus & Kobak,
#: arXiv:2011.14439; the table "Comparing MNIST and MNIST-1D" of the mnist1d README,
#: github.com/greydanus/mnist1d).
PUBLISHED = {"logistic regression": 0.32, "MLP": 0.68, "CNN": 0.94, "GRU": 0.91, "human expert": 0.96}
PUBLISHED_SOURCE = ("Greydanus & Kobak, 'Scaling Down Deep Learning with MNIST-1D', arXiv:2011.14439; "
                    "table 'Comparing MNIST and MNIST-1D' in the README of github.com/greydanus/mnist1d")
GAMMAS = (0.0, 0.5, 0.9, 0.99)
MEMORY_METHODS = {
    "resnet": "ResNet, autograd (stores activations)",
    "checkpoint": "ResNet, torch.utils.checkpoint over sqrt(depth) segments",
    "momentum": "Momentum ResNet, gamma 0.9, backward='exact'",
    "revnet": "RevNet, backward='exact'",
}
CACHE_VERSION = 1  # bump when a change to this file changes what a cached training group holds
DEFAULT_CACHE = _ROOT / "out" / "mnist1d" / "cache"

FULL = dict(width=16, depths=[3, 12, 24], epochs=10, seeds=3, batch_size=128, lr=0.05, curve_depth=12,
            mem_depth=24, mem_depths=[3, 12, 24, 96], mem_batch=128, mem_batches=[32, 64, 128, 256, 512, 1024],
            budget_mib=32.0, ft_depth=12, ft_epochs=6, ft_finetune_epochs=3, ft_gammas=[0.5, 0.9, 0.99])
QUICK = dict(width=8, depths=[2, 6], epochs=2, seeds=1, batch_size=128, lr=0.05, curve_depth=6,
             mem_depth=24, mem_depths=[6, 24], mem_batch=128, mem_batches=[128], budget_mib=8.0,
             ft_depth=6, ft_epochs=2, ft_finetune_epochs=1, ft_gammas=[0.9])


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
_DATA = {}


def load_mnist1d(classes=None):
    """MNIST-1D with the package's default arguments (4000 train / 1000 test, length 40, seed 42),
    generated offline by ``mnist1d.data.make_dataset`` from its shipped templates.

    Returns ``(x_train, y_train, x_test, y_test)`` as tensors of shapes ``(N, 1, 40)`` (float32)
    and ``(N,)`` (int64); ``classes`` keeps only those labels. The generator seeds python's and
    numpy's global random state; both are restored afterwards.
    """
    if classes is not None:
        classes = sorted({int(c) for c in classes})
        if not classes or min(classes) < 0 or max(classes) > 9:
            raise ValueError(f"classes == {classes}, must be a non-empty subset of 0..9.")
    if "all" not in _DATA:
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as e:
            raise SystemExit("mnist1d_momentum.py needs the mnist1d package: pip install 'secondorder[data]'") from e
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            d = make_dataset(get_dataset_args())
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        t = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)).to(dt)  # noqa: E731
        _DATA["all"] = (t(d["x"], torch.float32)[:, None], t(d["y"], torch.int64),
                        t(d["x_test"], torch.float32)[:, None], t(d["y_test"], torch.int64))
    xtr, ytr, xte, yte = _DATA["all"]
    if classes is None:
        return xtr, ytr, xte, yte
    mtr, mte = torch.isin(ytr, torch.tensor(classes)), torch.isin(yte, torch.tensor(classes))
    return xtr[mtr], ytr[mtr], xte[mte], yte[mte]


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
def residual_function(c_in, hidden, c_out):
    """``f(x) = BN(conv3(relu(BN(conv3(x)))))`` on ``(N, C, L)``; the last BatchNorm starts at
    zero weight, so ``f = 0`` at initialisation and a deep stack starts as the identity."""
    bn = nn.BatchNorm1d(c_out)
    nn.init.zeros_(bn.weight)
    return nn.Sequential(nn.Conv1d(c_in, hidden, 3, padding=1, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Conv1d(hidden, c_out, 3, padding=1, bias=False), bn)


class Net1d(nn.Module):
    """stem ``Conv1d(1, width, 5)``-BN-ReLU -> ``body`` (residual blocks at width ``width``, length
    40) -> BN-ReLU -> average pool to 5 positions -> linear (10 classes).

    ``checkpoint_segments`` > 0 runs an ``nn.Sequential`` body through
    ``torch.utils.checkpoint.checkpoint_sequential`` in training (the checkpointing baseline)."""

    def __init__(self, width, body, classes=10, checkpoint_segments=0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, width, 5, padding=2, bias=False), nn.BatchNorm1d(width), nn.ReLU())
        self.body = body
        self.post = nn.Sequential(nn.BatchNorm1d(width), nn.ReLU())
        self.fc = nn.Linear(5 * width, classes)
        self.checkpoint_segments = checkpoint_segments

    def forward(self, x):
        x = self.stem(x)
        if self.checkpoint_segments and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint_sequential

            x = checkpoint_sequential(self.body, self.checkpoint_segments, x, use_reentrant=False)
        else:
            x = self.body(x)
        return self.fc(F.adaptive_avg_pool1d(self.post(x), 5).flatten(1))


def build(kind, width, depth, gamma=0.9, seed=0):
    """A seeded network of ``depth`` residual blocks: ``kind`` "resnet", "checkpoint" (the same
    ResNet, checkpointed), "momentum" (``so.to_momentum`` of that ResNet, the same initial weights,
    ``backward="exact"``; gamma > 0) or "revnet" (``so.RevNet``, exact backward, ``F`` and ``G``
    each ``width/2 -> width -> width/2``: the ResNet's parameter count up to BatchNorm)."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth == {depth!r}, must be a positive int.")
    if not isinstance(width, int) or width < 2:
        raise ValueError(f"width == {width!r}, must be an int >= 2.")
    torch.manual_seed(seed)
    if kind == "revnet":
        a, b = width // 2, width - width // 2
        Fs = [residual_function(b, width, a) for _ in range(depth)]
        Gs = [residual_function(a, width, b) for _ in range(depth)]
        return Net1d(width, so.RevNet(Fs, Gs, backward="exact", dim=1))
    if kind not in ("resnet", "checkpoint", "momentum"):
        raise ValueError(f"kind == {kind!r}, must be 'resnet', 'checkpoint', 'momentum' or 'revnet'.")
    segments = max(1, round(math.sqrt(depth))) if kind == "checkpoint" else 0
    net = Net1d(width, nn.Sequential(*[Residual(residual_function(width, width, width)) for _ in range(depth)]),
                checkpoint_segments=segments)
    if kind == "momentum":
        net = so.to_momentum(net, layers=["body"], gamma=gamma, backward="exact", keep_first=False)
    return net


def n_params(net):
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# Experiment 1 + 2: accuracy against gamma and depth, learning curves
# --------------------------------------------------------------------------------------------
def _cached(cache, key, fn, cached_only=False):
    """``fn()``, stored as JSON under ``cache/<sha1 of key>.json`` (``cache`` None: no caching;
    ``cached_only``: None instead of calling ``fn`` when the cache does not hold ``key``)."""
    if cache is None:
        return fn()
    path = Path(cache) / (hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16] + ".json")
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["value"]
    if cached_only:
        return None
    value = fn()
    write_json(path, {"key": key, "value": value})
    return value


def figures_cached_only():
    """Whether the figures aggregate only cached groups (environment variable
    ``SECONDORDER_MNIST1D_CACHED_ONLY=1``; default: train the missing ones)."""
    import os

    return os.environ.get("SECONDORDER_MNIST1D_CACHED_ONLY", "") == "1"


def model_names(gammas=GAMMAS):
    """The trained models of one group: the ResNet, a Momentum ResNet per gamma > 0, the RevNet."""
    return ["resnet"] + [f"momentum_{g}" for g in gammas if g > 0] + ["revnet"]


def train_group(width, depth, seed, epochs, lr, batch_size, gammas=GAMMAS, progress=True):
    """Train the models of ``model_names`` at one depth and seed (the same batch order; the
    Momentum ResNets from the ResNet's initial weights), their epochs interleaved. Returns
    ``{name: {"test_acc", "params", "epoch_s", "history"}}``."""
    data = load_mnist1d()
    nets = {}
    for name in model_names(gammas):
        kind, _, g = name.partition("_")
        nets[name] = build(kind, width, depth, float(g) if g else 0.9, seed)
    history = {}
    out = train(nets, data, epochs, lr, batch_size, seed, torch.device("cpu"), f"depth {depth} seed {seed}",
                progress, history=history)
    return {k: {"test_acc": out[k][1], "epoch_s": out[k][0], "params": n_params(nets[k]), "history": history[k]}
            for k in nets}


def _stats(values):
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": [float(x) for x in v]}


def accuracy_experiment(cfg, seed=0, cache=DEFAULT_CACHE, progress=True, cached_only=False):
    """Experiment 1 (and the data of experiment 2): for every depth of ``cfg["depths"]`` and
    ``cfg["seeds"]`` seeds ``seed, seed + 1, ...``, ``train_group``. Returns
    ``{"accuracy": {depth: {"resnet": stats, "momentum": {gamma: stats}, "revnet": stats}},
    "params": {depth: {...}}, "runs": {depth: [group per seed]}, "seconds": ...}`` (stats: mean,
    sample std, min, max, values of the final test accuracy over seeds; ``momentum["0.0"]`` is
    the ResNet's). ``cached_only``: aggregate only the groups the cache holds (a run cut short);
    ``seeds_by_depth`` says which."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    seeds = [seed + i for i in range(cfg["seeds"])]
    jobs = [(d, s) for d in cfg["depths"] for s in seeds]
    runs, seeds_by_depth = {}, {}
    for depth, s in tqdm(jobs, desc="accuracy", disable=not progress):
        key = {"v": CACHE_VERSION, "what": "group", "width": cfg["width"], "depth": depth, "seed": s,
               "epochs": cfg["epochs"], "lr": cfg["lr"], "batch_size": cfg["batch_size"], "gammas": list(GAMMAS)}
        group = _cached(cache, key, lambda depth=depth, s=s: train_group(
            cfg["width"], depth, s, cfg["epochs"], cfg["lr"], cfg["batch_size"], progress=progress), cached_only)
        if group is not None:
            runs.setdefault(str(depth), []).append(group)
            seeds_by_depth.setdefault(str(depth), []).append(s)
    if not runs:
        raise RuntimeError("accuracy_experiment: no trained group (cached_only with an empty cache?)")
    acc, params = {}, {}
    for depth, groups in runs.items():
        get = lambda name, groups=groups: _stats([g[name]["test_acc"] for g in groups])  # noqa: E731
        acc[depth] = {"resnet": get("resnet"),
                      "momentum": {str(g): get("resnet" if g == 0 else f"momentum_{g}") for g in GAMMAS},
                      "revnet": get("revnet")}
        params[depth] = {k: v["params"] for k, v in groups[0].items()}
    return {"accuracy": acc, "params": params, "runs": runs, "seeds": seeds, "seeds_by_depth": seeds_by_depth,
            "seconds": time.perf_counter() - t0}


def curves(acc_result, depth, names=("resnet", "momentum_0.9")):
    """Experiment 2: per-epoch mean (and min, max over seeds) of the running training accuracy
    and the test accuracy of ``names`` at ``depth``, from ``accuracy_experiment``'s runs."""
    groups = acc_result["runs"][str(depth)]
    out = {"depth": depth, "seeds": acc_result["seeds_by_depth"][str(depth)], "models": {}}
    for name in names:
        m = {}
        for what in ("train_acc", "test_acc", "loss"):
            a = np.array([g[name]["history"][what] for g in groups], dtype=float)
            m[what] = {"mean": a.mean(0).tolist(), "min": a.min(0).tolist(), "max": a.max(0).tolist()}
        out["models"][name] = m
    return out


# --------------------------------------------------------------------------------------------
# Experiment 3: memory against batch size and depth
# --------------------------------------------------------------------------------------------
def _measure_child(kind, width, depth, gamma, batch_size, seed):
    """Runs in the fresh process: the peak memory of one training step on random inputs."""
    torch.set_num_threads(1)
    net = build(kind, width, depth, gamma, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 1, 40, generator=g)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    peak, method = step_peak(net, x, y, torch.device("cpu"))
    return {"kind": kind, "depth": depth, "batch": batch_size, "step_peak_mib": peak / 2**20, "method": method,
            "process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


_MEASURED = {}


def measure_memory(kind, width, depth, batch_size, gamma=0.9, seed=0):
    """Peak memory of one training step of ``build(kind, ...)``, measured in a fresh process
    (a dict with ``step_peak_mib``; each configuration is measured once per process)."""
    key = (kind, width, depth, batch_size, float(gamma), seed)
    if key not in _MEASURED:
        _MEASURED[key] = _measure_fresh(kind, width, depth, batch_size, gamma, seed)
    return _MEASURED[key]


def _measure_fresh(kind, width, depth, batch_size, gamma, seed):
    return run_fresh(__file__, ["--_measure", kind, "--width", width, "--_depth", depth, "--gamma", gamma,
                                "--batch-size", batch_size, "--seed", seed])


def memory_experiment(cfg, seed=0, progress=True):
    """Experiment 3. ``by_batch``: every method at depth ``cfg["mem_depth"]`` on the batches of
    ``cfg["mem_batches"]`` (increasing), stopping after the first one above the budget;
    ``by_depth``: every method at batch ``cfg["mem_batch"]`` on ``cfg["mem_depths"]``;
    ``largest_batch``: the largest measured batch whose step peak is within ``cfg["budget_mib"]``
    (None when even the smallest is above it), with ``capped`` True when the largest batch tried
    still fits."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    w, budget = cfg["width"], cfg["budget_mib"]
    bar = tqdm(total=len(MEMORY_METHODS) * (len(cfg["mem_batches"]) + len(cfg["mem_depths"])), desc="memory",
               disable=not progress)
    by_batch, by_depth, largest = {}, {}, {}
    for m in MEMORY_METHODS:
        rows = by_batch[m] = []
        for b in cfg["mem_batches"]:
            rows.append(measure_memory(m, w, cfg["mem_depth"], b, seed=seed)["step_peak_mib"])
            bar.update()
            if rows[-1] > budget:
                break
        fits = [b for b, p in zip(cfg["mem_batches"], rows) if p <= budget]
        largest[m] = {"batch": fits[-1] if fits else None, "capped": len(fits) == len(cfg["mem_batches"])}
        by_depth[m] = []
        for d in cfg["mem_depths"]:
            by_depth[m].append(measure_memory(m, w, d, cfg["mem_batch"], seed=seed)["step_peak_mib"])
            bar.update()
    bar.close()
    return {"width": w, "depth": cfg["mem_depth"], "batches": cfg["mem_batches"], "by_batch_mib": by_batch,
            "batch": cfg["mem_batch"], "depths": cfg["mem_depths"], "by_depth_mib": by_depth,
            "budget_mib": budget, "largest_batch": largest, "methods": MEMORY_METHODS,
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------
# Experiment 4: fine-tuning a pretrained ResNet as Momentum ResNets
# --------------------------------------------------------------------------------------------
def finetune_experiment(cfg, seed=0, progress=True, memory=True):
    """Experiment 4, per seed: pretrain a ResNet on classes 0-4 (``ft_epochs``), then fine-tune
    for ``ft_finetune_epochs`` on classes 5-9: the ResNet itself, its conversions
    ``so.to_momentum(resnet, gamma, backward="exact")`` for each gamma of ``ft_gammas``, and a
    ResNet from scratch (same epochs). Reports test accuracy on classes 5-9 after fine-tuning,
    on classes 0-4 right after conversion (what the conversion keeps), and the step peak memory
    (fresh process) of the ResNet and of each converted net at the fine-tuning batch."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    w, depth, bs, lr = cfg["width"], cfg["ft_depth"], cfg["batch_size"], cfg["lr"]
    task_a, task_b = load_mnist1d(range(5)), load_mnist1d(range(5, 10))
    dev = torch.device("cpu")
    seeds = [seed + i for i in range(cfg["seeds"])]
    per_seed = []
    for s in tqdm(seeds, desc="finetune", disable=not progress):
        pre = build("resnet", w, depth, seed=s)
        train({"pretrain": pre}, task_a, cfg["ft_epochs"], lr, bs, s, dev, "pretrain 0-4", progress)
        r = {"pretrained_acc_0_4": evaluate(pre, task_a[2], task_a[3], dev)}
        nets = {"resnet": copy.deepcopy(pre)}
        for g in cfg["ft_gammas"]:
            nets[f"momentum_{g}"] = so.to_momentum(pre, layers=["body"], gamma=g, backward="exact", keep_first=False)
            r[f"momentum_{g}_converted_acc_0_4"] = evaluate(nets[f"momentum_{g}"], task_a[2], task_a[3], dev)
        nets["scratch_resnet"] = build("resnet", w, depth, seed=s + 1000)
        out = train(nets, task_b, cfg["ft_finetune_epochs"], lr, bs, s + 1, dev, "fine-tune 5-9", progress)
        r.update({f"{k}_acc_5_9": v[1] for k, v in out.items()})
        per_seed.append(r)
    res = {"depth": depth, "width": w, "seeds": seeds, "gammas": cfg["ft_gammas"], "pretrain_epochs": cfg["ft_epochs"],
           "finetune_epochs": cfg["ft_finetune_epochs"], "per_seed": per_seed,
           "accuracy": {k: _stats([r[k] for r in per_seed]) for k in per_seed[0]}}
    if memory:
        res["step_peak_mib"] = {"resnet": measure_memory("resnet", w, depth, bs, seed=seed)["step_peak_mib"]}
        for g in cfg["ft_gammas"]:
            res["step_peak_mib"][f"momentum_{g}"] = measure_memory("momentum", w, depth, bs, gamma=g, seed=seed)["step_peak_mib"]
        res["memory_batch"] = bs
    res["seconds"] = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------------------------
# Report and command line
# --------------------------------------------------------------------------------------------
def _pct(s):
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}" if s["std"] else f"{100 * s['mean']:.1f}"


def report(r):
    """Markdown tables of the results dict written by ``main``."""
    lines = []
    if "accuracy" in r:
        a = r["accuracy"]
        lines += ["Test accuracy (%), mean ± sample std over seeds", "",
                  "| depth | seeds | params (ResNet / RevNet) | ResNet (gamma 0) | " + " | ".join(f"Momentum gamma {g}" for g in GAMMAS[1:])
                  + " | RevNet |", "|---" * (5 + len(GAMMAS[1:])) + "|"]
        for d, v in sorted(a["accuracy"].items(), key=lambda kv: int(kv[0])):  # JSON keys sort as text
            p = a["params"][d]
            seeds = ", ".join(map(str, a.get("seeds_by_depth", {}).get(d, a["seeds"])))
            lines.append(f"| {d} | {seeds} | {p['resnet']} / {p['revnet']} | {_pct(v['resnet'])} | "
                         + " | ".join(_pct(v["momentum"][str(g)]) for g in GAMMAS[1:]) + f" | {_pct(v['revnet'])} |")
        lines += ["", "Published baselines (" + PUBLISHED_SOURCE + "): "
                  + ", ".join(f"{k} {100 * v:.0f}%" for k, v in PUBLISHED.items()), ""]
    if "memory" in r:
        m = r["memory"]
        lines += [f"Peak memory of one training step (MiB), width {m['width']}, depth {m['depth']}, by batch "
                  f"(budget {m['budget_mib']} MiB)", "",
                  "| method | " + " | ".join(f"batch {b}" for b in m["batches"]) + " | largest batch within budget |",
                  "|---" * (len(m["batches"]) + 2) + "|"]
        for k, rows in m["by_batch_mib"].items():
            lb = m["largest_batch"][k]
            cells = [f"{x:.1f}" for x in rows] + ["-"] * (len(m["batches"]) - len(rows))
            big = "none" if lb["batch"] is None else f"{'>= ' if lb['capped'] else ''}{lb['batch']}"
            lines.append(f"| {k} | " + " | ".join(cells) + f" | {big} |")
        lines += ["", f"by depth, batch {m['batch']}", "",
                  "| method | " + " | ".join(f"depth {d}" for d in m["depths"]) + " |", "|---" * (len(m["depths"]) + 1) + "|"]
        for k, rows in m["by_depth_mib"].items():
            lines.append(f"| {k} | " + " | ".join(f"{x:.1f}" for x in rows) + " |")
        lines.append("")
    if "finetune" in r:
        f = r["finetune"]
        lines += [f"Fine-tuning (depth {f['depth']}, width {f['width']}): pretrain on 0-4 for {f['pretrain_epochs']} "
                  f"epochs, fine-tune on 5-9 for {f['finetune_epochs']}; accuracy (%) over seeds {f['seeds']}", ""]
        for k, s in f["accuracy"].items():
            lines.append(f"- {k}: {_pct(s)}")
        for k, v in f.get("step_peak_mib", {}).items():
            lines.append(f"- step peak memory {k}: {v:.1f} MiB (batch {f['memory_batch']})")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring for details.")
    p.add_argument("--quick", action="store_true", help="CI size: width 8, depths 2 and 6, 2 epochs, 1 seed, small memory sweep")
    p.add_argument("--seed", type=int, default=0, help="first seed; seeds are SEED, SEED+1, ... (default 0)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; quick: 1)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of experiment 1 (default 10; quick: 2)")
    p.add_argument("--depths", type=int, nargs="+", default=None, help="residual blocks (default 3 12 24; quick: 2 6)")
    p.add_argument("--width", type=int, default=None, help="channels (default 16; quick: 8)")
    p.add_argument("--curve-depth", type=int, default=None, help="depth of the learning curves (one of --depths)")
    p.add_argument("--budget-mib", type=float, default=None, help="memory budget of one training step in MiB (default 32; quick: 8)")
    p.add_argument("--experiments", nargs="+", default=["accuracy", "memory", "finetune"],
                   choices=["accuracy", "memory", "finetune"], help="which to run (curves come with accuracy)")
    p.add_argument("--no-cache", action="store_true", help="retrain even when the cache holds the group")
    p.add_argument("--cache", default=None, help="cache folder of trained groups (default out/mnist1d/cache)")
    p.add_argument("--cached-only", action="store_true",
                   help="experiment 1: aggregate only the groups already in the cache (a run cut short)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", default=None, help="results JSON (default out/mnist1d/results[_quick].json)")
    p.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_depth", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--gamma", type=float, default=0.9, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default 128)")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for k in ("seeds", "epochs", "depths", "width", "curve_depth", "budget_mib", "batch_size"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    if cfg["curve_depth"] not in cfg["depths"]:
        cfg["curve_depth"] = cfg["depths"][len(cfg["depths"]) // 2]
    for k in ("seeds", "epochs", "width", "batch_size"):
        if cfg[k] < 1:
            p.error(f"--{k.replace('_', '-')} == {cfg[k]}, must be >= 1.")
    if min(cfg["depths"]) < 1:
        p.error(f"--depths {cfg['depths']}: every depth must be >= 1.")
    args.cfg = cfg
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    if args._measure is not None:
        print(json.dumps(_measure_child(args._measure, args.width or 16, args._depth, args.gamma,
                                        args.batch_size or 128, args.seed)))
        return 0
    cfg, progress = args.cfg, not args.no_progress
    seed_everything(args.seed)
    cache = None if args.no_cache else Path(args.cache) if args.cache else DEFAULT_CACHE
    out = Path(args.out) if args.out else _ROOT / "out" / "mnist1d" / f"results{'_quick' if args.quick else ''}.json"
    data = load_mnist1d()
    print(f"MNIST-1D: {len(data[0])} train / {len(data[2])} test sequences of length {data[0].shape[-1]}; "
          f"{'quick' if args.quick else 'full'} settings {json.dumps(cfg)}")
    results = {"config": cfg, "quick": args.quick, "seed": args.seed, "published": PUBLISHED,
               "published_source": PUBLISHED_SOURCE, "torch": torch.__version__, "threads": 1}
    if out.exists():  # keep the experiments of an earlier run of the same settings not rerun now
        old = json.loads(out.read_text())
        if all(old.get(k) == results[k] for k in ("config", "quick", "seed")):
            results = {**old, **results}
    if "accuracy" in args.experiments:
        acc = accuracy_experiment(cfg, args.seed, cache, progress, args.cached_only)
        results["accuracy"] = {k: acc[k] for k in ("accuracy", "params", "seeds", "seeds_by_depth", "seconds")}
        results["curves"] = curves(acc, cfg["curve_depth"])
        results["epoch_s"] = {d: {k: float(np.median(sum((g[k]["epoch_s"] for g in groups), [])))
                                  for k in groups[0]} for d, groups in acc["runs"].items()}
    if "memory" in args.experiments:
        results["memory"] = memory_experiment(cfg, args.seed, progress)
    if "finetune" in args.experiments:
        results["finetune"] = finetune_experiment(cfg, args.seed, progress)
    write_json(out, results)
    print(report(results))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
