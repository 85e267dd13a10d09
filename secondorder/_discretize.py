"""Discrete <-> continuous: Momentum ResNets as time steps of second-order ODEs.

With ``h = t1 / depth``, ``t_n = n h`` and residual functions ``f_n(x) = h * F(t_n, x)``, one
Momentum ResNet layer with ``gamma = 1 - h / eps``::

    v_{n+1} = gamma * v_n + (1 - gamma) * f_n(x_n)
    x_{n+1} = x_n + v_{n+1}

is, writing ``v_n = h * u_n``, the semi-implicit Euler step of ``x' = u``,
``u' = (F(t, x) - u) / eps`` (docs/theory.md §2.2)::

    u_{n+1} = u_n + h * (F(t_n, x_n) - u_n) / eps
    x_{n+1} = x_n + h * u_{n+1}

so the network converges to ``secondorder.SecondOrderODE`` at order 1 as the depth grows,
with ``v_N / h -> x'(t1)``. The network's initial velocity is ``h`` times the ODE's:
``net(x0, v0=h * ode_v0)``. ``gamma = 0`` (``h == eps``, or ``eps == 0`` at any depth) is
forward Euler for ``x' = F`` (a ResNet).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _perfeature as _pf
from . import _splitting
from ._nets import MomentumResNet, ResNet
from ._ode import _ODE, SecondOrderODE
from ._splitting import SCHEMES, StrangMomentumResNet, TiedStrangMomentumResNet
from ._tied import TiedMomentumResNet, gamma_semi_implicit
from ._validate import (
    check_choice,
    check_count,
    check_eps,
    check_eps_tensor,
    check_gamma,
    check_t1,
)

__all__ = ["gamma_from_eps", "eps_from_gamma", "min_depth", "StepFunction", "SCHEMES", "discretize", "to_ode"]

# gamma = 1 - h/eps is computed in float64; a result in (-_ROUND, 0) is rounding of an exact 0
# (e.g. t1 = 1, eps = 0.1, depth = 10) and is set to 0.
_ROUND = 1e-12


def min_depth(eps, t1=1.0) -> int:
    """Smallest depth with ``h = t1/depth <= eps``: ``ceil(t1/eps)`` (1 for ``eps == 0``); for a
    per-feature ``eps``, that of its smallest entry."""
    if _pf.is_per_feature(eps):
        eps = float(check_eps_tensor(eps).min())
    eps, t1 = check_eps(eps), check_t1(t1)
    if eps == 0:
        return 1
    return max(1, math.ceil(t1 / eps * (1 - _ROUND)))


def gamma_from_eps(eps, depth, t1=1.0) -> float:
    """``gamma = 1 - h / eps`` with ``h = t1 / depth``; ``eps == 0`` gives ``gamma = 0`` (ResNet).

    Raises ``ValueError`` when ``h > eps`` (``gamma`` would be negative), naming the minimum depth
    ``ceil(t1 / eps)``. A per-feature ``eps`` (a tensor of >= 1 dimension, every entry > 0) gives
    the tensor ``gamma`` of its shape and dtype (detached), entry by entry.
    """
    if _pf.is_per_feature(eps):
        return _gamma_tensor(eps, depth, t1)
    eps, depth, t1 = check_eps(eps), check_count(depth, "depth"), check_t1(t1)
    if eps == 0:
        return 0.0
    h = t1 / depth
    gamma = 1.0 - h / eps
    if gamma < 0:
        if gamma > -_ROUND:
            return 0.0
        raise ValueError(
            f"depth == {depth} is too small for eps == {eps!r}: the step h = t1/depth = {h:.6g} "
            f"exceeds eps, so gamma = 1 - h/eps = {gamma:.6g} < 0. Use depth >= "
            f"ceil(t1/eps) = {min_depth(eps, t1)}."
        )
    return gamma


def eps_from_gamma(gamma, depth, t1=1.0) -> float:
    """``eps = h / (1 - gamma) = t1 / (depth * (1 - gamma))``, the inverse of ``gamma_from_eps``.

    ``gamma == 0`` gives ``eps = h``; note that ``gamma == 0`` is also forward Euler for the
    first-order model (``eps == 0``), see ``to_ode``. ``gamma == 1`` has no ODE (``eps``
    would be infinite) and raises ``ValueError``. A per-feature ``gamma`` (a tensor of >= 1
    dimension, entries in (0, 1)) gives the tensor ``eps`` entry by entry (detached).
    """
    if _pf.is_per_feature(gamma):
        g = _pf.check_gamma_tensor(gamma, invertible=True)
        depth, t1 = check_count(depth, "depth"), check_t1(t1)
        if bool((g == 1).any()):
            raise ValueError("gamma has an entry == 1, which has no ODE limit (eps would be infinite); "
                             "use entries in (0, 1).")
        return t1 / (depth * (1 - g))
    gamma, depth, t1 = check_gamma(gamma), check_count(depth, "depth"), check_t1(t1)
    if gamma == 1.0:
        raise ValueError(
            "gamma == 1 has no ODE limit: eps = t1 / (depth * (1 - gamma)) would be infinite; "
            "use gamma in [0, 1)."
        )
    return t1 / (depth * (1.0 - gamma))


def _gamma_tensor(eps, depth, t1):
    """``gamma_from_eps`` for a per-feature ``eps``: ``1 - h/eps`` entrywise, rounding of 0 set to 0."""
    e = check_eps_tensor(eps, " (A per-feature eps has no first-order entries: see SecondOrderODE.)")
    depth, t1 = check_count(depth, "depth"), check_t1(t1)
    h = t1 / depth
    gamma = gamma_semi_implicit(e, h)
    if bool((gamma < -_ROUND).any()):
        low = float(e.min())
        raise ValueError(
            f"depth == {depth} is too small for eps (smallest entry {low!r}): the step h = t1/depth = "
            f"{h:.6g} exceeds it, so gamma = 1 - h/eps < 0. Use depth >= ceil(t1/min(eps)) = "
            f"{min_depth(low, t1)}."
        )
    return gamma.clamp(min=0.0)


class StepFunction(nn.Module):
    """Residual function ``f_n(x) = h * F(t_n, x)`` over a shared ``F`` (parameters not copied).

    ``F`` is held as a submodule when it is an ``nn.Module``, so every layer's ``StepFunction``
    shares its parameters (``net.parameters()`` lists them once). ``takes_time`` says whether
    ``F`` is called ``F(t, x)`` (``t`` a 0-dim tensor of ``x``'s dtype) or ``F(x)``.
    Shapes: ``x`` any; output as ``x``.
    """

    def __init__(self, F, t_n: float, h: float, takes_time: bool):
        super().__init__()
        self.F = F
        self.t_n = float(t_n)
        self.h = float(h)
        self.takes_time = bool(takes_time)

    def forward(self, x):
        if self.takes_time:
            t = torch.tensor(self.t_n, dtype=x.dtype, device=x.device)
            return self.h * self.F(t, x)
        return self.h * self.F(x)

    def extra_repr(self):
        return f"t_n={self.t_n:.6g}, h={self.h:.6g}"


def discretize(ode, depth, backward="autograd", scheme="euler", **kwargs) -> MomentumResNet:
    """The network of ``depth`` layers that discretizes ``ode`` on ``[0, ode.t1]``, ``h = t1 / depth``.

    ``scheme`` picks the time stepping (``SCHEMES``); both use one evaluation of ``F`` per layer,
    share ``F``'s parameters (``f_n = StepFunction(F, t, h)``, ``f_n(x) = h F(t, x)``) and accept
    every ``backward`` mode:

    - ``"euler"`` (default): a ``secondorder.MomentumResNet`` with ``f_n`` at ``t_n = n h`` and
      ``gamma = gamma_from_eps(eps, depth, t1) = 1 - h/eps`` (0 for ``eps == 0``: forward Euler),
      the semi-implicit Euler step, order 1 (docs/theory.md §2.2). Raises ``ValueError`` if
      ``h > eps``, naming the minimum depth ``ceil(t1/eps)``.
    - ``"strang"``: a ``secondorder.StrangMomentumResNet`` (half drift, damped kick, half drift)
      with ``f_n`` at ``t_{n+1/2} = (n + 1/2) h`` and ``gamma = exp(-h/eps)``, order 2 at any
      depth (docs/theory.md §8). ``eps == 0`` gives ``gamma = 0`` (the ``eps -> 0`` limit), which
      only ``backward="autograd"`` accepts.

    An unknown ``scheme`` raises ``ValueError`` listing the choices. A per-feature ``eps`` gives
    the per-feature ``gamma``. A learnable ``eps`` (``nn.Parameter``, scalar or per-feature) gives
    a network that is also a ``secondorder.TiedMomentumResNet``: it holds the ODE's own ``eps``
    (``net.eps``) and recomputes ``gamma`` from it at every forward pass, so ``eps`` itself gets the
    gradient (exactly, with ``backward="exact"``); ``net.gamma`` is then a read-only tensor.
    ``backward`` and any other keyword (e.g. ``init_velocity``) go to the network; with
    ``backward="exact"`` the gradients of the discretized ODE cost memory independent of depth.
    The network's velocity is ``v_n ~ h x'(t_n)``: pass ``v0 = h * ode_v0``.
    """
    if not isinstance(ode, _ODE):
        raise TypeError(f"ode must be a NeuralODE or SecondOrderODE, got {type(ode).__name__}.")
    depth = check_count(depth, "depth")
    check_choice("scheme", scheme, SCHEMES)
    if scheme == "strang":
        return _discretize_strang(ode, depth, backward, **kwargs)
    eps = ode.eps
    gamma = gamma_from_eps(eps, depth, ode.t1)  # validates depth against eps
    h = ode.t1 / depth
    fs = [StepFunction(ode.F, n * h, h, ode.takes_time) for n in range(depth)]
    if isinstance(eps, nn.Parameter):  # gamma tied to eps, recomputed at each forward
        return TiedMomentumResNet(fs, eps, h, gamma_semi_implicit, backward=backward, **kwargs)
    return MomentumResNet(fs, gamma=gamma, backward=backward, **kwargs)


def _discretize_strang(ode, depth, backward, **kwargs) -> StrangMomentumResNet:
    """``discretize(ode, depth, scheme="strang")``: ``f_n = h F(t_{n+1/2}, .)``, ``gamma =
    exp(-h/eps)`` (per feature for a per-feature ``eps``; tied to a learnable one)."""
    h = ode.t1 / depth
    eps = ode.eps
    fs = [StepFunction(ode.F, (n + 0.5) * h, h, ode.takes_time) for n in range(depth)]
    if isinstance(eps, nn.Parameter):  # gamma tied to eps, recomputed at each forward
        return TiedStrangMomentumResNet(fs, eps, h, backward=backward, **kwargs)
    gamma = _splitting.strang_gamma(eps, h)
    low = float(gamma.min()) if isinstance(gamma, torch.Tensor) else gamma
    if low == 0.0 and backward != "autograd":
        e = float(eps.min()) if isinstance(eps, torch.Tensor) else float(eps)
        raise ValueError(
            f"scheme='strang' with eps == {e!r} and h = t1/depth = {h:.6g} gives "
            f"gamma = exp(-h/eps) == 0 (in float64), which cannot be inverted: use "
            f"backward='autograd', a larger eps, or more layers."
        )
    return StrangMomentumResNet(fs, gamma=gamma, backward=backward, **kwargs)


def to_ode(net, t1=1.0, **ode_kwargs) -> SecondOrderODE:
    """The ``secondorder.SecondOrderODE`` that ``net`` (made by ``discretize``) steps.

    Needs every residual function to be a ``StepFunction`` around one and the same ``F``
    with ``t_n = n * t1/depth`` and ``h = t1/depth``. ``eps = eps_from_gamma(gamma, depth, t1)``,
    except ``gamma == 0`` (and a ``secondorder.ResNet``), which give the first-order model
    ``eps = 0``: at this depth ``eps = h`` and ``eps = 0`` step to the same network (forward
    Euler), and ``eps = 0`` is the limit of fixed ``gamma = 0`` as the depth grows. A
    ``StrangMomentumResNet`` (``discretize(..., scheme="strang")``) needs ``t_n = (n + 1/2) h``
    and maps back with ``eps = -h / log(gamma)`` (``gamma == 0``: ``eps = 0``). A learnable
    ``gamma`` gives a learnable ``eps`` (a new ``nn.Parameter``, not tied); a network whose gamma
    is tied to a learnable ``eps`` (``discretize`` of an ODE with a learnable ``eps``, either
    scheme) gives an ODE holding that same ``eps``. A per-feature ``gamma`` gives a per-feature
    ``eps`` (its entries must be in (0, 1)). ``ode_kwargs``
    (``method``, ``rtol``, ...) go to ``secondorder.SecondOrderODE``.
    """
    if not isinstance(net, (MomentumResNet, ResNet)):
        raise TypeError(f"net must be a MomentumResNet or ResNet, got {type(net).__name__}.")
    t1 = check_t1(t1)
    fs = list(net.functions)
    depth = len(fs)
    if depth == 0:
        raise ValueError("net has no residual functions; to_ode needs at least one layer.")
    h = t1 / depth
    half = 0.5 if isinstance(net, StrangMomentumResNet) else 0.0  # strang evaluates at t_{n+1/2}
    F = None
    for n, f in enumerate(fs):
        if not isinstance(f, StepFunction):
            raise ValueError(
                f"residual function {n} is a {type(f).__name__}, not a StepFunction h * F(t_n, x); "
                f"to_ode only inverts networks made by discretize(ode, depth)."
            )
        if F is None:
            F = f.F
        elif f.F is not F:
            raise ValueError(
                f"residual function {n} wraps a different F than function 0; to_ode needs one "
                f"shared F (as discretize makes)."
            )
        if not (math.isclose(f.h, h, rel_tol=1e-9) and math.isclose(f.t_n, (n + half) * h, rel_tol=1e-9,
                                                                     abs_tol=1e-12 * t1)):
            raise ValueError(
                f"residual function {n} has h = {f.h:.6g}, t_n = {f.t_n:.6g}, but t1 == {t1!r} "
                f"with depth {depth} needs h = {h:.6g}, t_n = {(n + half) * h:.6g}; pass the t1 the "
                f"network was discretized with ({f.h * depth:.6g})."
            )
    if isinstance(net, ResNet):
        return SecondOrderODE(F, eps=0.0, t1=t1, **ode_kwargs)
    if isinstance(net, TiedMomentumResNet):
        return SecondOrderODE(F, eps=net.eps, t1=t1, **ode_kwargs)
    gamma = net.gamma
    if _pf.is_per_feature(gamma):
        eps = _splitting.strang_eps(gamma, h) if half else eps_from_gamma(gamma, depth, t1)
        if isinstance(gamma, nn.Parameter):
            eps = nn.Parameter(eps.clone())
        return SecondOrderODE(F, eps=eps, t1=t1, **ode_kwargs)
    g = check_gamma(gamma)
    if g == 0.0:
        eps = 0.0
        if isinstance(gamma, nn.Parameter):
            raise ValueError(
                "a learnable gamma == 0 maps to the first-order model eps == 0, whose order is "
                "fixed; start the learnable gamma in (0, 1)."
            )
    else:
        eps = _splitting.strang_eps(g, h) if half else eps_from_gamma(g, depth, t1)
        if isinstance(gamma, nn.Parameter):
            eps = nn.Parameter(torch.tensor(eps, dtype=gamma.dtype, device=gamma.device))
    return SecondOrderODE(F, eps=eps, t1=t1, **ode_kwargs)

