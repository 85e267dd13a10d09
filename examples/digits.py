"""Digits: a convolutional ResNet vs its Momentum ResNet counterpart (exact backward), real data.

Trains, from the same initial weights, a small deep convolutional ResNet and the Momentum ResNet
``so.to_momentum(resnet, gamma, backward="exact")`` on scikit-learn's ``load_digits`` (1,797 8x8
images of 10 digits, shipped with scikit-learn: no download), with a stratified held-out test
split. Reports test accuracy, time per epoch and peak memory of one training step for both; then
fine-tunes: converts the trained ResNet and continues training it as a Momentum ResNet.

Peak memory is measured in a fresh process per model, on random inputs of the training shape:
on CPU as the growth of the resident set during one training step (Linux peak RSS, reset after a
warm-up step; glibc told to return freed blocks with ``MALLOC_MMAP_THRESHOLD_=65536``,
docs/theory.md §7.1), on CUDA as ``torch.cuda.max_memory_allocated`` minus what was allocated before.

Multi-process: ``torchrun --nproc_per_node=2 examples/digits.py`` trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA); each process takes its share of every batch
(BatchNorm statistics are per process), rank 0 reports. Memory is not measured then.

    python examples/digits.py --quick                 # a minute-scale smoke run
    python examples/digits.py --out digits.json       # the numbers in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(_ROOT))

import secondorder as so  # noqa: E402
from examples._train import Trainer, evaluate, init_dist, run_fresh, step_peak, train  # noqa: E402,F401
from scripts.shared import seed_everything, write_json  # noqa: E402

LAYERS = ["layer1", "layer2"]


# --------------------------------------------------------------------------------------------
# The network: torchvision-style basic blocks, two stages (8x8 then 4x4)
# --------------------------------------------------------------------------------------------
class Block(nn.Module):
    """``relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))``; the shortcut is a strided 1x1 conv
    when the block changes the shape. ``bn2`` starts at zero weight, so every block starts as the
    identity on the (non-negative) output of the previous ReLU: deep stacks train from step one."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class DigitsResNet(nn.Module):
    """stem (1 -> width, 8x8) -> layer1 (depth blocks) -> layer2 (depth blocks, the first one
    strided to width*2 at 4x4) -> average pool -> linear (10 classes)."""

    def __init__(self, width=16, depth=32, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = nn.Sequential(*[Block(width, width) for _ in range(depth)])
        self.layer2 = nn.Sequential(Block(width, 2 * width, 2), *[Block(2 * width, 2 * width) for _ in range(depth - 1)])
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def build(kind, width, depth, gamma, seed):
    """``kind`` "resnet" or "momentum" (the same initial weights, converted with exact backward)."""
    torch.manual_seed(seed)
    net = DigitsResNet(width, depth)
    if kind == "momentum":
        net = so.to_momentum(net, layers=LAYERS, gamma=gamma, backward="exact")
    return net


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def load_data(seed, test_size=0.2):
    """``load_digits`` as (N, 1, 8, 8) float32 standardised with the training split's statistics."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise SystemExit("digits.py needs scikit-learn: pip install 'secondorder[data]'") from e
    d = load_digits()
    x = d.images.astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    mean, std = xtr.mean(), xtr.std()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return t((xtr - mean) / std), t(ytr), t((xte - mean) / std), t(yte)


# --------------------------------------------------------------------------------------------
# Peak memory of one training step, in a fresh process
# --------------------------------------------------------------------------------------------
def _measure_step(kind, width, depth, gamma, batch_size, seed, device):
    """Runs in the child process: one warm-up step, then the peak of one training step."""
    net = build(kind, width, depth, gamma, seed).to(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 1, 8, 8, generator=g).to(device)
    y = torch.randint(0, 10, (batch_size,), generator=g).to(device)
    out = {"kind": kind, "device": device.type}
    peak, out["method"] = step_peak(net, x, y, device)
    out["step_peak_mib"] = peak / 2**20
    if device.type == "cuda":
        return out
    out["process_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def measure_memory(kind, width, depth, gamma, batch_size, seed, device, threads):
    """Peak memory of one training step of ``kind``, measured in a fresh Python process."""
    return run_fresh(__file__, ["--_measure", kind, "--width", width, "--depth", depth, "--gamma", gamma,
                                "--batch-size", batch_size, "--seed", seed, "--device", device,
                                "--threads", threads])


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring for details.")
    p.add_argument("--quick", action="store_true", help="tiny network (width 8, 3 blocks per stage), batch 32, 3 epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the batch order (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per model (default 10; quick: 3)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="epochs of fine-tuning after conversion (default 3; quick: 1)")
    p.add_argument("--width", type=int, default=None, help="channels of the first stage (default 16; quick: 8)")
    p.add_argument("--depth", type=int, default=None, help="residual blocks per stage (default 32; quick: 3)")
    p.add_argument("--gamma", type=float, default=0.9, help="momentum of the Momentum ResNet (default 0.9)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (default 128; quick: 32)")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", default=None, help="write the results to this JSON file")
    p.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.epochs = args.epochs if args.epochs is not None else (3 if q else 10)
    args.finetune_epochs = args.finetune_epochs if args.finetune_epochs is not None else (1 if q else 3)
    args.width = args.width if args.width is not None else (8 if q else 16)
    args.depth = args.depth if args.depth is not None else (3 if q else 32)
    args.batch_size = args.batch_size if args.batch_size is not None else (32 if q else 128)
    if args.depth < 2:
        p.error(f"--depth == {args.depth}, must be >= 2 (a stage keeps its first block as is).")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args._measure is not None:
        out = _measure_step(args._measure, args.width, args.depth, args.gamma, args.batch_size, args.seed, device)
        print(json.dumps(out))
        return 0

    world, rank = init_dist(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    seed_everything(args.seed)
    data = load_data(args.seed)
    progress = not args.no_progress
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"digits: {len(data[0])} train / {len(data[2])} test images, width {args.width}, "
        f"{args.depth} blocks per stage, batch {args.batch_size}, {args.epochs} epochs, "
        f"{world} process(es), device {device.type}, seed {args.seed}")

    results = {"config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
               "world_size": world, "n_train": len(data[0]), "n_test": len(data[2]), "models": {}}
    trained = {kind: build(kind, args.width, args.depth, args.gamma, args.seed) for kind in ["resnet", "momentum"]}
    out = train(trained, data, args.epochs, args.lr, args.batch_size, args.seed, device, "train", progress)
    for kind, net in trained.items():
        times, acc = out[kind]
        r = {"test_acc": acc, "epoch_time_s": times, "median_epoch_time_s": float(np.median(times)),
             "params": sum(p.numel() for p in net.parameters())}
        if not args.no_memory and world == 1:
            r["memory"] = measure_memory(kind, args.width, args.depth, args.gamma, args.batch_size,
                                         args.seed, device, args.threads)
        results["models"][kind] = r

    # fine-tune: convert the trained ResNet (same weights) and continue as a Momentum ResNet
    resnet = trained["resnet"].cpu()
    same = so.to_momentum(resnet, layers=LAYERS, gamma=0.0, backward="autograd")
    conv = so.to_momentum(resnet, layers=LAYERS, gamma=args.gamma, backward="exact")
    ft = {"gamma": args.gamma, "epochs": args.finetune_epochs,
          "resnet_acc": results["models"]["resnet"]["test_acc"],
          "converted_gamma0_acc": evaluate(same.to(device), data[2], data[3], device),
          "converted_before_acc": evaluate(conv.to(device), data[2], data[3], device)}
    times, ft["converted_after_acc"] = train({"converted": conv}, data, args.finetune_epochs, args.lr / 5,
                                             args.batch_size, args.seed + 1, device, "fine-tune", progress)["converted"]
    ft["epoch_time_s"] = times
    results["finetune"] = ft

    if rank == 0:
        _report(results)
        if args.out:
            write_json(args.out, results)
            say(f"wrote {args.out}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


def _report(results):
    rows = [("model", "test acc", "s / epoch", "step peak MiB")]
    names = {"resnet": "ResNet", "momentum": "Momentum ResNet (exact)"}
    for kind, r in results["models"].items():
        mem = r.get("memory", {}).get("step_peak_mib")
        rows.append((names[kind], f"{100 * r['test_acc']:.2f}%", f"{r['median_epoch_time_s']:.2f}",
                     "-" if mem is None else f"{mem:.1f}"))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(row)))
    ft = results["finetune"]
    print(f"fine-tune: ResNet {100 * ft['resnet_acc']:.2f}% -> converted (gamma=0) "
          f"{100 * ft['converted_gamma0_acc']:.2f}%, converted (gamma={ft['gamma']}) before "
          f"{100 * ft['converted_before_acc']:.2f}%, after {ft['epochs']} epoch(s) "
          f"{100 * ft['converted_after_acc']:.2f}%")


if __name__ == "__main__":
    sys.exit(main())
