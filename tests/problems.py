"""Problems with closed forms, shared by the tests."""

import math

import torch
from torch import nn


class Lin(nn.Module):
    """``F(x) = x @ A^T`` (a module taking ``x`` only): the linear field with closed-form flows."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, x):
        return x @ self.A.T


def mlp_functions(depth, d=6, h=12, dtype=torch.float64, scale=0.3, seed=0):
    """``depth`` independent ``Linear(d, h)-Tanh-Linear(h, d)`` residual functions, weights drawn
    from ``seed`` with standard deviation ``scale / sqrt(fan_in)``."""
    g = torch.Generator().manual_seed(seed)
    fs = []
    for _ in range(depth):
        f = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, d)).to(dtype)
        with torch.no_grad():
            for p in f.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * scale / math.sqrt(p.shape[-1]))
        fs.append(f)
    return fs
