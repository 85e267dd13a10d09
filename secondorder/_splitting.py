"""A second-order, exactly reversible integrator: Strang splitting of the damped ODE.

The second-order model ``eps x'' + x' = F(t, x)`` is the system ``x' = u``,
``u' = (F(t, x) - u) / eps``. Split it into two flows that can each be solved exactly:

- the *drift* ``x' = u, u' = 0``: ``x <- x + tau u``;
- the *damped kick* ``x' = 0, u' = (F(t, x) - u) / eps`` with ``x`` (and ``t``) frozen: a linear
  ODE in ``u`` whose exact solution over a step ``h`` is ``u <- gamma u + (1 - gamma) F(t, x)``
  with ``gamma = exp(-h / eps)``.

The symmetric (Strang, 1968) composition half drift - kick - half drift is one step::

    x <- x + (h/2) u;   u <- gamma u + (1 - gamma) F(t_{n+1/2}, x);   x <- x + (h/2) u

one evaluation of ``F`` per step, order 2 (docs/theory.md §8). In network units ``v = h u``
and with the half-drifted position ``z_n = x_n + v_n / 2`` one step is exactly a Momentum ResNet
layer (Sander et al., ICML 2021) in ``(z, v)``::

    v_{n+1} = gamma v_n + (1 - gamma) f_n(z_n),    z_{n+1} = z_n + v_{n+1},
    f_n(z) = h F(t_{n+1/2}, z),    x_N = z_N - v_N / 2.

So the network is a half drift in, a plain Momentum ResNet chain, a half drift out; the chain
brings its backward modes (``"exact"``: bit-exact fixed-point reconstruction, ``"float"``),
its self-verification and ``exact_roundtrip``. The two boundary half drifts are ordinary float
operations taken by autograd (exact gradients, O(1) memory); only the chain between them is
reconstructed bit for bit.
"""

from __future__ import annotations

import math

import torch

from . import _perfeature as _pf
from ._nets import MomentumResNet, exact_roundtrip
from ._tied import TiedMomentumResNet
from ._validate import check_eps, check_eps_tensor, check_gamma, check_positive

__all__ = ["StrangMomentumResNet", "TiedStrangMomentumResNet", "SCHEMES", "strang_gamma", "strang_eps"]

#: Time-stepping schemes of ``secondorder.discretize``.
SCHEMES = {
    "euler": "semi-implicit Euler, gamma = 1 - h/eps, order 1, needs h <= eps (a MomentumResNet)",
    "strang": "Strang splitting drift/damped kick/drift, gamma = exp(-h/eps), order 2, any h "
              "(a StrangMomentumResNet)",
}


def strang_gamma(eps, h):
    """``gamma = exp(-h / eps)``, the damped kick's exact decay over a step ``h > 0``.

    ``eps`` a number (``eps == 0`` gives ``gamma = 0``, the limit ``eps -> 0``, see
    ``StrangMomentumResNet``) or a per-feature tensor (every entry > 0; the result is a tensor in
    ``eps``'s graph, so a learnable ``eps`` gets gradients through it). Raises ``ValueError`` for
    a negative or non-finite ``eps`` or ``h``.
    """
    h = check_positive(h, "h")
    if isinstance(eps, torch.Tensor) and (eps.requires_grad or _pf.is_per_feature(eps)):
        check_eps_tensor(eps.reshape(-1) if eps.dim() == 0 else eps)
        return torch.exp(-h / eps)
    eps = check_eps(eps)
    return 0.0 if eps == 0 else math.exp(-h / eps)


def strang_eps(gamma, h):
    """``eps = -h / log(gamma)``, the inverse of ``strang_gamma`` (``gamma == 0`` gives 0).

    ``gamma`` a number, or a per-feature tensor (entries in (0, 1); the result is a detached
    tensor). Raises ``ValueError`` for ``gamma == 1`` (no ODE: ``eps`` would be infinite) and for
    ``gamma`` outside ``[0, 1]``.
    """
    if _pf.is_per_feature(gamma):
        g = _pf.check_gamma_tensor(gamma, invertible=True).detach()
        if bool((g == 1).any()):
            raise ValueError("gamma has an entry == 1, which has no ODE limit (eps would be infinite).")
        return -float(h) / torch.log(g)
    g = check_gamma(gamma)
    if g == 1.0:
        raise ValueError(
            "gamma == 1 has no ODE limit: eps = -h / log(gamma) would be infinite; use gamma in [0, 1)."
        )
    return 0.0 if g == 0.0 else -float(h) / math.log(g)


class StrangMomentumResNet(MomentumResNet):
    """Momentum ResNet between two half drifts: the Strang splitting step of a damped ODE.

    Named after what one layer is: the Strang (1968) symmetric splitting drift / damped kick /
    drift of ``eps x'' + x' = F(t, x)``, written in network units (``v = h u``)::

        x <- x + v_n / 2;   v_{n+1} = gamma v_n + (1 - gamma) f_n(x);   x_{n+1} = x + v_{n+1} / 2

    With ``z_n = x_n + v_n / 2`` the layers are the ``secondorder.MomentumResNet`` rule on
    ``(z, v)``, so this class is a ``MomentumResNet`` (it inherits every argument, check and
    backward mode) whose ``forward`` wraps the chain in a half drift in, ``z_0 = x_0 + v_0 / 2``,
    and a half drift out, ``x_N = z_N - v_N / 2``. ``secondorder.discretize(ode, depth,
    scheme="strang")`` builds it with ``f_n(x) = h F(t_{n+1/2}, x)`` and ``gamma = exp(-h/eps)``:
    order 2 in ``x`` and ``v / h`` at any depth (docs/theory.md §8).

    Args: as ``MomentumResNet`` (``functions``, ``gamma`` in [0, 1], ``backward``,
    ``init_velocity`` applied to ``x_0``, ``fixed_point_bits``).

    ``net(x, *args, v0=None, return_velocity=False, **kwargs)`` returns ``x_N`` (or
    ``(x_N, v_N)``); ``x`` and ``v0`` of any shape (equal), the dtype is kept.

    Memory-free backwards: ``backward="exact"`` reconstructs the chain's states ``(z_n, v_n)``
    bit for bit (int64 fixed point) and checks it; the two boundary half drifts are float
    additions that autograd differentiates exactly and that store nothing. Gradients equal
    autograd's up to the fixed-point rounding of the chain. ``secondorder.exact_roundtrip``
    accepts this network (its ``bit_exact`` is the chain's check on ``(z_0, v_0)``).

    ``gamma = 0`` (the limit ``eps -> 0`` of ``exp(-h/eps)``) is forward Euler on ``z`` with
    ``x_N = z_N - f_{N-1}(z_{N-1}) / 2``: first order, and not invertible (autograd only).
    """

    def forward(self, x, *args, v0=None, return_velocity=False, **kwargs):
        v = self._start(x, v0)
        z = x if v is None else x + 0.5 * v
        z, v = super().forward(z, *args, v0=v, return_velocity=True, **kwargs)
        x = z - 0.5 * v
        return (x, v) if return_velocity else x

    def trajectory(self, x, *args, v0=None, return_velocity=False, **kwargs):
        """The full-step states ``x_0, ..., x_N`` (float arithmetic), shape ``(depth + 1, *x.shape)``
        (and ``v_0, ..., v_N`` of the same shape with ``return_velocity=True``);
        ``x_n = z_n - v_n / 2`` with ``z_n`` the chain's states."""
        v = self._start(x, v0)
        v = torch.zeros_like(x) if v is None else v
        zs, vs = super().trajectory(x + 0.5 * v, *args, v0=v, return_velocity=True, **kwargs)
        xs = zs - 0.5 * vs
        return (xs, vs) if return_velocity else xs

    def inverse(self, x, v, *args, **kwargs):
        """Reconstruct ``(x_0, v_0)`` from ``(x_N, v_N)`` by the float inverse: ``z_N = x_N + v_N / 2``,
        the chain's float inverse (``MomentumResNet.inverse``: error grows like ``gamma**-N`` times
        the dtype's epsilon), then ``x_0 = z_0 - v_0 / 2``. For a bit-exact round trip of the chain
        use ``secondorder.exact_roundtrip``."""
        z, v = super().inverse(x + 0.5 * v, v, *args, **kwargs)
        return z - 0.5 * v, v

    def chain(self, backward=None) -> MomentumResNet:
        """The Momentum ResNet on ``(z, v)`` between the half drifts, sharing this network's
        functions and gamma (a view: no parameter is copied). ``backward`` defaults to this
        network's."""
        net = MomentumResNet(
            self.functions,
            gamma=self.gamma,
            backward=self.backward if backward is None else backward,
            fixed_point_bits=self.fixed_point_bits,
        )
        net._hint = self._hint
        return net

    def _exact_roundtrip(self, x, *args, v0=None, bits=None, **kwargs):
        """``secondorder.exact_roundtrip`` for this network: the chain's round trip from
        ``(z_0, v_0)``, with the full-step positions added back (see ``exact_roundtrip``)."""
        v = self._start(x, v0)
        v = torch.zeros_like(x) if v is None else v
        z = x + 0.5 * v
        out = exact_roundtrip(self.chain("exact"), z, *args, v0=v, bits=bits, **kwargs)
        out["z_N"], out["z0"] = out["x_N"], out["x0"]
        out["x_N"] = out["z_N"] - 0.5 * out["v_N"]
        out["x0"] = out["z0"] - 0.5 * out["v0"]
        return out


class TiedStrangMomentumResNet(StrangMomentumResNet, TiedMomentumResNet):
    """A ``StrangMomentumResNet`` whose ``gamma = exp(-h/eps)`` is recomputed from a learnable
    ``eps`` at every forward pass (``secondorder.TiedMomentumResNet`` with ``gamma_map =
    strang_gamma``): what ``discretize(ode, depth, scheme="strang")`` returns for an ODE with a
    learnable ``eps``, so that ``eps`` itself gets the gradient (exact with ``backward="exact"``).
    Built as ``TiedStrangMomentumResNet(functions, eps, h, backward=...)``."""

    def __init__(self, functions, eps, h, backward="autograd", init_velocity=None, fixed_point_bits=None):
        super().__init__(functions, eps, h, strang_gamma, backward=backward, init_velocity=init_velocity,
                         fixed_point_bits=fixed_point_bits)
