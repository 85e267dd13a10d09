"""The update rules, each written once.

Forward rules, inverses, the memory-free backward passes, ``discretize`` and the tests all call
these functions, so the equations below are the only definition of the models.
"""

from __future__ import annotations

__all__ = ["resnet_step", "momentum_step", "momentum_inverse", "coupling_step", "coupling_inverse"]


def resnet_step(x, fx):
    """ResNet layer: ``x_{n+1} = x_n + f_n(x_n)`` with ``fx = f_n(x_n)``."""
    return x + fx


def momentum_step(x, v, fx, gamma):
    """Momentum ResNet layer (Sander et al. 2021, eq. 2), with ``fx = f_n(x_n)``::

        v_{n+1} = gamma * v_n + (1 - gamma) * fx
        x_{n+1} = x_n + v_{n+1}
    """
    v = gamma * v + (1 - gamma) * fx
    return x + v, v


def momentum_inverse(x, v, f, gamma):
    """Inverse of ``momentum_step`` given the layer's function ``f``::

        x_n = x_{n+1} - v_{n+1}
        v_n = (v_{n+1} - (1 - gamma) * f(x_n)) / gamma        (needs gamma > 0)

    In floating point the division amplifies rounding by ``1/gamma`` per layer.
    """
    x = x - v
    v = (v - (1 - gamma) * f(x)) / gamma
    return x, v


def coupling_step(x1, x2, F, G):
    """RevNet additive coupling (Gomez et al. 2017): ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``."""
    y1 = x1 + F(x2)
    y2 = x2 + G(y1)
    return y1, y2


def coupling_inverse(y1, y2, F, G):
    """Inverse of ``coupling_step``: ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``."""
    x2 = y2 - G(y1)
    x1 = y1 - F(x2)
    return x1, x2
