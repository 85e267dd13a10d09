"""Problems with closed forms, shared by the tests."""

from torch import nn


class Lin(nn.Module):
    """``F(x) = x @ A^T`` (a module taking ``x`` only): the linear field with closed-form flows."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, x):
        return x @ self.A.T
