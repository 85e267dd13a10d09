"""Pieces shared by the examples: evaluation, the training loop (single process or torchrun /
DistributedDataParallel) and the peak memory of one training step measured in a fresh process.

Used by ``examples/digits.py`` and ``examples/mnist1d.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["evaluate", "Trainer", "train", "dist_info", "init_dist", "step_peak", "run_fresh"]


def dist_info():
    """``(world size, rank)`` from the environment torchrun sets; ``(1, 0)`` without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def init_dist(device):
    """Initialise the process group (nccl on CUDA, gloo on CPU) when run under torchrun."""
    world, rank = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank


def evaluate(net, x, y, device, batch_size=512):
    """Accuracy of ``net`` (in eval mode, no gradients) on ``(x, y)``, as a fraction."""
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out = net(x[i : i + batch_size].to(device))
            correct += int((out.argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / len(x)


class Trainer:
    """SGD (Nesterov momentum 0.9, weight decay 5e-4, cosine learning rate over all steps) on the
    training split ``data = (x_train, y_train, x_test, y_test)``, one epoch per ``epoch``
    call. Under torchrun, each process takes a contiguous ``1/world`` share of every batch and
    DistributedDataParallel averages the gradients; the batch order comes from ``seed`` and is
    the same on every process."""

    def __init__(self, net, data, epochs, lr, batch_size, seed, device):
        self.net, self.data, self.batch_size, self.device = net.to(device), data, batch_size, device
        self.world, self.rank = dist_info()
        self.model = net
        if self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
        steps = epochs * ((len(data[0]) + batch_size - 1) // batch_size)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(1, steps))
        self.gen = torch.Generator().manual_seed(seed)
        self.last_train_acc = float("nan")

    def epoch(self):
        """One pass over the training split; returns (seconds, mean training loss). The running
        training accuracy of the pass (train mode, each batch scored before its update, this
        process's share) is left in ``last_train_acc``."""
        xtr, ytr = self.data[0], self.data[1]
        self.model.train()
        perm = torch.randperm(len(xtr), generator=self.gen)
        t0 = time.perf_counter()
        total, correct, seen = 0.0, 0, 0
        for i in range(0, len(xtr), self.batch_size):
            idx = perm[i : i + self.batch_size]
            idx = idx.tensor_split(self.world)[self.rank] if self.world > 1 else idx
            xb, yb = xtr[idx].to(self.device), ytr[idx].to(self.device)
            out = self.model(xb)
            loss = F.cross_entropy(out, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.detach().argmax(1) == yb).sum())
            seen += len(idx)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_train_acc = correct / max(seen, 1)
        return time.perf_counter() - t0, total * self.world / len(xtr)

    def test_acc(self):
        """Accuracy on the test split."""
        return evaluate(self.net, self.data[2], self.data[3], self.device)


def train(nets, data, epochs, lr, batch_size, seed, device, desc, progress=True, history=None):
    """Train every net of the dict ``nets`` for ``epochs``, their epochs interleaved (each epoch
    of one is followed by the same epoch of the next, so the machine's load reaches all alike).
    Returns ``{name: (per-epoch seconds, test accuracy)}``. With a dict ``history``, also
    records per net and epoch the running training accuracy, the training loss and the test
    accuracy: ``history[name] = {"train_acc": [...], "loss": [...], "test_acc": [...]}`` (the
    test evaluation runs in eval mode without gradients and does not change the training)."""
    from tqdm.auto import tqdm

    trainers = {k: Trainer(n, data, epochs, lr, batch_size, seed, device) for k, n in nets.items()}
    times = {k: [] for k in nets}
    if history is not None:
        for k in nets:
            history[k] = {"train_acc": [], "loss": [], "test_acc": []}
    rank = dist_info()[1]
    bar = tqdm(range(epochs), desc=desc, disable=not progress or rank != 0, leave=False)
    for _ in bar:
        post = {}
        for k, tr in trainers.items():
            t, loss = tr.epoch()
            times[k].append(t)
            if history is not None:
                history[k]["train_acc"].append(tr.last_train_acc)
                history[k]["loss"].append(loss)
                history[k]["test_acc"].append(tr.test_acc())
            post[f"loss_{k}"] = f"{loss:.3f}"
            post[f"s_{k}"] = f"{t:.1f}"
        bar.set_postfix(post)
    out = {}
    for k, tr in trainers.items():
        acc = history[k]["test_acc"][-1] if history is not None and epochs > 0 else tr.test_acc()
        out[k] = (times[k], acc)
    return out


def step_peak(net, x, y, device):
    """Peak memory (bytes above the level before it) of one SGD training step of ``net`` on
    ``(x, y)``, after one warm-up step (optimizer state, kernel caches, allocator pools), with
    ``scripts.shared.step_peak_bytes``. Meant for a fresh process started by
    ``run_fresh``. Returns ``(bytes, method)``."""
    from scripts.shared import step_peak_bytes

    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    net.train()
    step()
    return step_peak_bytes(step, device)


def run_fresh(script, argv):
    """Run ``python script *argv`` in a fresh process set up for memory measurement
    (``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors leave the process, no torchrun variables,
    the checkout on ``PYTHONPATH``) and return the JSON object on the last line of its output."""
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(Path(script).resolve()), *map(str, argv)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"memory measurement {' '.join(map(str, argv))} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])
