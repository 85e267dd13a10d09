"""Helpers shared by the scripts of a checkout (figures, theory, benchmarks, examples).

Not part of the installed library (the wheel ships ``secondorder/`` only): atomic writes, JSON
output, seeding and the peak-memory probe that the scripts use. Import as
``from scripts.shared import write_json`` from the repository root.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["atomic_path", "write_json", "report", "seed_everything", "step_peak_bytes", "Residual"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    An interrupt or an exception leaves the previous file (or none) in place, never a
    half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a finished file gets the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=_jsonable)
            fh.write("\n")


def report(text: str, out: str | os.PathLike, obj) -> int:
    """What every benchmark ends with: print its table, write its JSON (atomically, creating the
    folder), say where; returns the exit status 0."""
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json(out, obj)
    print(f"\nwrote {out}")
    return 0


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.detach().cpu().tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def step_peak_bytes(step, device="cpu"):
    """Peak memory of one call ``step()`` above the memory in use before it; returns
    ``(bytes, method)``.

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset. CPU (Linux): the resident set's
    high-water mark ``VmHWM``, reset to the current RSS through ``/proc/self/clear_refs``; honest
    only when freed tensors leave the process (run it with ``MALLOC_MMAP_THRESHOLD_=65536``,
    docs/theory.md §7.1). Without ``clear_refs``, the lifetime peak ``ru_maxrss`` is used (it may
    include earlier peaks).
    """
    import resource

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated - memory_allocated before the step"
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the high-water mark to the current RSS
        base = _status_kib("VmRSS")
        step()
        return (_status_kib("VmHWM") - base) * 1024, "peak RSS (VmHWM, reset before the step) - RSS before the step"
    except OSError:
        base = _status_kib("VmRSS")
        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (peak - base) * 1024, "ru_maxrss - RSS before the step (may include earlier peaks)"


class Residual(nn.Module):
    """A plain ResNet block ``x + f(x)`` around a module ``f``: what ``secondorder.to_momentum``
    converts (it reads ``f`` back as ``B(x) - x``) and what ``checkpoint_sequential`` runs."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, x):
        return x + self.f(x)
