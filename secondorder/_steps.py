"""The update rules, each written once.

Forward rules, inverses, the memory-free backward passes (in float; the exact arithmetic applies
the same pieces to fixed-point integers), ``discretize`` and the tests all call these functions,
so the equations below are the only definition of the models. The inverses are built from named
pieces (``momentum_unstep_x`` / ``momentum_unstep_v``, the RevNet half steps) because the
memory-free backward needs them one at a time: it evaluates ``f`` between the two.
"""

from __future__ import annotations

__all__ = [
    "resnet_step",
    "momentum_step",
    "momentum_unstep_x",
    "momentum_unstep_v",
    "momentum_inverse",
    "half_step",
    "half_unstep",
    "coupling_step",
    "coupling_inverse",
]


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


def momentum_unstep_x(x, v):
    """First piece of the Momentum ResNet inverse: ``x_n = x_{n+1} - v_{n+1}``."""
    return x - v


def momentum_unstep_v(v, fx, gamma):
    """Second piece, once ``fx = f_n(x_n)`` is known: ``v_n = (v_{n+1} - (1 - gamma) fx) / gamma``
    (needs ``gamma > 0``)."""
    return (v - (1 - gamma) * fx) / gamma


def momentum_inverse(x, v, f, gamma):
    """Inverse of ``momentum_step`` given the layer's function ``f``::

        x_n = x_{n+1} - v_{n+1}
        v_n = (v_{n+1} - (1 - gamma) * f(x_n)) / gamma        (needs gamma > 0)

    In floating point the division amplifies rounding by ``1/gamma`` per layer.
    """
    x = momentum_unstep_x(x, v)
    return x, momentum_unstep_v(v, f(x), gamma)


def half_step(a, h):
    """A RevNet half step: one part of the state gets the other part's function value added,
    ``a <- a + h`` with ``h = F(b)`` (or ``G(b)``). A shear: ``b`` is unchanged, so it inverts."""
    return a + h


def half_unstep(a, h):
    """Inverse of ``half_step``: ``a <- a - h``, with ``h`` recomputed from the unchanged part."""
    return a - h


def coupling_step(x1, x2, F, G):
    """RevNet additive coupling (Gomez et al. 2017): ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``,
    two ``half_step``s with alternating roles."""
    y1 = half_step(x1, F(x2))
    y2 = half_step(x2, G(y1))
    return y1, y2


def coupling_inverse(y1, y2, F, G):
    """Inverse of ``coupling_step``: ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``."""
    x2 = half_unstep(y2, G(y1))
    x1 = half_unstep(y1, F(x2))
    return x1, x2
