"""First- and second-order neural ODEs, solved with torchdiffeq.

Models (horizon ``t1``, time starting at 0)::

    NeuralODE:       x'(t) = F(t, x(t))
    SecondOrderODE:  eps * x''(t) + x'(t) = F(t, x(t)),   x'(0) = v0 (0 by default)

The second-order equation is integrated as the first-order system on the state
``y = stack((x, u))`` (shape ``(2, *x.shape)``)::

    x' = u
    u' = (F(t, x) - u) / eps

``eps == 0`` is the first-order model itself (the state is ``x`` alone, nothing is divided by
``eps``). Every method of torchdiffeq's ``odeint`` is accepted by name and ``options`` is passed
through untouched (e.g. ``{"step_size": 0.01}`` for the fixed-step methods).

**The form of F.** ``F`` is called as ``F(t, x)`` (torchdiffeq's convention) or as ``F(x)``. The
form is decided once, from the *positional arity* of ``F.forward`` for an ``nn.Module`` or of
``F`` itself for any other callable (never from argument names):

- two required positional parameters -> ``F(t, x)``;
- one required positional parameter -> ``F(x)``;
- no required positional parameter: ``F(t, x)`` if it accepts ``*args`` or two positional
  parameters, ``F(x)`` if it accepts exactly one;
- three or more required positional parameters -> ``TypeError``;
- a signature that cannot be read (some builtins) -> ``F(t, x)``.

``t`` is a 0-dim tensor of ``x``'s dtype. ``F`` must return a tensor of ``x``'s shape.

**Gradients.** ``adjoint=False`` backpropagates through the solver's operations (memory grows
with the number of steps). ``adjoint=True`` uses ``torchdiffeq.odeint_adjoint`` with
``adjoint_params`` = the parameters of ``F`` (when ``F`` is an ``nn.Module``) plus ``eps`` when it
is an ``nn.Parameter``; the backward pass integrates the state and the adjoint *backwards in
time*, at constant memory. Tensors a plain-callable ``F`` closes over get no adjoint gradient:
wrap them in an ``nn.Module`` as parameters. The trade-off for small ``eps``: the forward
dynamics damp ``u`` at rate ``1/eps``, so the backward-in-time reconstruction is *anti-damped*:
solver errors grow like ``exp(t1/eps)`` and the adjoint gradient drifts from the direct-backprop
gradient (measured in ``benchmarks/adjoint.py`` and ``theory/continuous_limit.py``). For small
``eps`` prefer ``adjoint=False`` or the exact discretization
(``discretize(ode, depth)`` with ``backward="exact"``).

**Counting.** ``model.nfe`` is the number of evaluations of the field (one evaluation = one call
of ``F``) made by the solver during the last ``forward``/``trajectory`` call; it is reset at the
start of each call. ``model.nfe_backward`` counts the evaluations made since then by a backward
pass (the adjoint's reverse solve; 0 for direct backprop, which calls no ``F``). The velocity
``F(t, x(t))`` that ``trajectory`` returns for a first-order model is not counted.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from ._validate import (
    check_broadcast,
    check_choice,
    check_eps,
    check_eps_tensor,
    check_positive,
    check_t1,
    check_velocity,
)

__all__ = ["NeuralODE", "SecondOrderODE"]

_PER_FEATURE_ZERO = (
    " A per-feature eps must be > 0 in every entry: eps == 0 is the first-order model x' = F, whose "
    "state has no velocity, and a model cannot be first order in some features and second order in "
    "others. Use eps=0.0 (a float) for the whole first-order model, or a small positive eps."
)

try:  # torchdiffeq's own name -> solver table, to reject unknown names at construction
    from torchdiffeq._impl.odeint import SOLVERS as _SOLVERS
except ImportError:  # pragma: no cover - a future torchdiffeq layout: let odeint validate
    _SOLVERS = None


def _takes_time(F) -> bool:
    """True if ``F`` is called ``F(t, x)``, False if ``F(x)``; see the module docstring."""
    if not callable(F):
        raise TypeError(f"F must be callable (an nn.Module or a function), got {type(F).__name__}.")
    fn = F.forward if isinstance(F, nn.Module) else F
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    positional = [
        p for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = sum(p.default is p.empty for p in positional)
    var = any(p.kind is p.VAR_POSITIONAL for p in sig.parameters.values())
    if required > 2:
        raise TypeError(
            f"F must be called as F(t, x) or F(x), but {getattr(fn, '__qualname__', fn)!r} "
            f"requires {required} positional arguments."
        )
    if required == 2:
        return True
    if required == 1:
        return False
    if var or len(positional) >= 2:
        return True
    if len(positional) == 1:
        return False
    raise TypeError(f"F must accept x as a positional argument; its signature is {sig}.")


def _check_method(method: str) -> str:
    if _SOLVERS is not None:
        check_choice("method", method, _SOLVERS)
    return method


class _Field(nn.Module):
    """The right-hand side handed to torchdiffeq; counts its calls in ``self.calls``.

    ``order == 1``: ``y = x`` (any shape), ``dy/dt = F(t, x)``.
    ``order == 2``: ``y = stack((x, u))`` (shape ``(2, *x.shape)``),
    ``dy/dt = stack((u, (F(t, x) - u) / eps))``.
    """

    def __init__(self, F, eps, order: int, takes_time: bool):
        super().__init__()
        self.F = F  # registered as a submodule when F is an nn.Module
        self.eps = eps  # float, or an nn.Parameter (then registered)
        self.order = order
        self.takes_time = takes_time
        self.calls = 0

    def evaluate(self, t, x):
        """``F(t, x)`` in the decided form, with a shape check; not counted."""
        out = self.F(t, x) if self.takes_time else self.F(x)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"F returned {got} for x of shape {tuple(x.shape)}; F must return a tensor of "
                f"x's shape."
            )
        return out

    def forward(self, t, y):
        self.calls += 1
        if self.order == 1:
            return self.evaluate(t, y)
        x, u = y[0], y[1]
        eps = self.eps
        if isinstance(eps, torch.Tensor) and eps.dim() > 0:  # per-feature: keep u's dtype
            eps = eps.to(u.dtype)
        return torch.stack((u, (self.evaluate(t, x) - u) / eps))


class _ODE(nn.Module):
    """Shared solver plumbing of ``NeuralODE`` and ``SecondOrderODE`` (not public)."""

    def __init__(self, F, eps, t1, method, rtol, atol, adjoint, options):
        super().__init__()
        takes_time = _takes_time(F)
        if isinstance(eps, torch.Tensor) and eps.dim() > 0:  # per-feature eps
            check_eps_tensor(eps, _PER_FEATURE_ZERO)
            if not isinstance(eps, nn.Parameter):
                eps = eps.detach().clone()  # fixed: a buffer of the field
            order = 2
        elif isinstance(eps, nn.Parameter):
            if check_eps(eps) == 0.0:
                raise ValueError(
                    "eps == 0 as a learnable nn.Parameter: the order of the model is fixed at "
                    "construction, so a learnable eps must start > 0 (use eps=0.0, a float, for "
                    "the first-order model)."
                )
            order = 2
        else:
            eps = check_eps(eps)
            order = 1 if eps == 0.0 else 2
        t1 = check_t1(t1)
        rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict or None, got {type(options).__name__}.")
        if isinstance(eps, torch.Tensor) and not isinstance(eps, nn.Parameter):
            self._field = _Field(F, None, order, takes_time)
            del self._field.eps
            self._field.register_buffer("eps", eps)
        else:
            self._field = _Field(F, eps, order, takes_time)
        self.t1 = t1
        self.method = _check_method(method)
        self.rtol, self.atol = float(rtol), float(atol)
        self.adjoint = bool(adjoint)
        self.options = dict(options) if options is not None else None
        self._nfe_forward = 0

    # --- read-only views -------------------------------------------------------------------
    @property
    def F(self):
        """The user's function (shared, not copied)."""
        return self._field.F

    @property
    def eps(self):
        """``eps`` (a float, the ``nn.Parameter`` given, or a per-feature tensor)."""
        return self._field.eps

    @property
    def order(self) -> int:
        """1 for the first-order model (``eps == 0``), 2 otherwise."""
        return self._field.order

    @property
    def takes_time(self) -> bool:
        """True when ``F`` is called as ``F(t, x)``, False for ``F(x)``."""
        return self._field.takes_time

    @property
    def nfe(self) -> int:
        """Field evaluations by the solver in the last forward/trajectory call."""
        return self._nfe_forward

    @property
    def nfe_backward(self) -> int:
        """Field evaluations since the last forward finished (an adjoint backward pass)."""
        return self._field.calls - self._nfe_forward

    # --- solving ---------------------------------------------------------------------------
    def _initial_state(self, x0, v0):
        if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
            raise TypeError(f"x0 must be a floating-point tensor, got {type(x0).__name__}"
                            f"{'' if not isinstance(x0, torch.Tensor) else ' of dtype ' + str(x0.dtype)}.")
        if self.order == 1:
            if v0 is not None:
                raise ValueError(
                    "v0 was given to a first-order model (eps == 0), whose velocity is "
                    "x'(0) = F(0, x0); pass v0=None."
                )
            return x0
        if isinstance(self.eps, torch.Tensor) and self.eps.dim() > 0:
            check_eps_tensor(self.eps, " (A learnable eps must stay > 0.)")
            check_broadcast("eps", self.eps.shape, x0.shape)
        elif isinstance(self.eps, nn.Parameter) and not float(self.eps.detach()) > 0:
            raise ValueError(f"eps == {float(self.eps.detach())!r} (learnable), must stay > 0.")
        if v0 is None:
            v0 = torch.zeros_like(x0)
        check_velocity(v0, x0, x_name="x0")
        return torch.stack((x0, v0.to(x0.dtype)))

    def _solve(self, y0, t):
        field = self._field
        field.calls = 0
        kw = dict(rtol=self.rtol, atol=self.atol, method=self.method,
                  options=dict(self.options) if self.options is not None else None)
        if self.adjoint:
            params = tuple(p for p in field.parameters() if p.requires_grad)
            ys = odeint_adjoint(field, y0, t, adjoint_params=params, **kw)
        else:
            ys = odeint(field, y0, t, **kw)
        self._nfe_forward = field.calls
        return ys

    def _grid(self, x0, t):
        return torch.as_tensor(t, dtype=x0.dtype, device=x0.device)

    def forward(self, x0, v0=None):
        """``x(t1)`` from ``x(0) = x0`` (and ``x'(0) = v0``, zeros by default; order 2 only).

        Shapes: ``x0``, ``v0`` and the result all have the same shape (any).
        """
        y0 = self._initial_state(x0, v0)
        t = self._grid(x0, [0.0, self.t1])
        ys = self._solve(y0, t)
        return ys[-1] if self.order == 1 else ys[-1, 0]

    def trajectory(self, x0, t, v0=None):
        """``(x(t), v(t))`` on the 1-D time grid ``t`` (``t[0]`` is the initial time).

        ``v = x'``: the solved velocity ``u`` for order 2; ``F(t_k, x(t_k))`` for order 1.
        Shapes: ``x0`` is ``S``; ``t`` is ``(T,)``; both outputs are ``(T, *S)``.
        """
        y0 = self._initial_state(x0, v0)
        t = self._grid(x0, t)
        if t.dim() != 1 or t.numel() < 2:
            raise ValueError(f"t must be a 1-D grid of at least 2 times, got shape {tuple(t.shape)}.")
        ys = self._solve(y0, t)
        if self.order == 2:
            return ys[:, 0], ys[:, 1]
        vs = torch.stack([self._field.evaluate(tk, xk) for tk, xk in zip(t, ys, strict=True)])
        return ys, vs

    def extra_repr(self):
        eps = self.eps
        if isinstance(eps, torch.Tensor):
            eps = (f"{'learnable ' if eps.requires_grad else ''}per-feature {tuple(eps.shape)}" if eps.dim() > 0
                   else float(eps.detach()))
        return (f"eps={eps}, t1={self.t1}, method={self.method!r}, rtol={self.rtol}, "
                f"atol={self.atol}, adjoint={self.adjoint}, F_form={'F(t, x)' if self.takes_time else 'F(x)'}")


class NeuralODE(_ODE):
    """First-order neural ODE ``x' = F(t, x)`` on ``[0, t1]`` (Chen et al. 2018).

    Args:
        F: ``nn.Module`` or callable, ``F(t, x)`` or ``F(x)`` (see the module docstring).
        t1: horizon, > 0.
        method: any torchdiffeq method name (``"dopri5"``, ``"rk4"``, ``"euler"``, ...).
        rtol, atol: solver tolerances (adaptive methods).
        adjoint: use ``odeint_adjoint`` (constant memory, reverse-time solve).
        options: passed to torchdiffeq untouched (e.g. ``{"step_size": h}``).

    ``model(x0)`` returns ``x(t1)``; ``model(x0, v0)`` raises (the velocity is ``F``'s).
    """

    def __init__(self, F, t1=1.0, method="dopri5", rtol=1e-6, atol=1e-8, adjoint=False,
                 options=None):
        super().__init__(F, 0.0, t1, method, rtol, atol, adjoint, options)


class SecondOrderODE(_ODE):
    """Second-order neural ODE ``eps * x'' + x' = F(t, x)``, ``x'(0) = v0``, on ``[0, t1]``.

    Solved as ``x' = u``, ``u' = (F(t, x) - u) / eps``; ``eps == 0`` is ``NeuralODE``.
    ``eps`` may be an ``nn.Parameter`` (learnable, must be > 0; it gets gradients, also with
    ``adjoint=True``). Other arguments as in ``NeuralODE``.

    **Per-feature eps.** ``eps`` may be a tensor (or ``nn.Parameter``) of at least one dimension
    that broadcasts against ``x`` without enlarging it, e.g. ``(d,)`` for ``x`` of shape
    ``(batch, d)``: each feature gets its own damping, ``eps_i x_i'' + x_i' = F_i(t, x)``
    (heavy-ball neural ODEs, Xia et al., NeurIPS 2021, are ``x'' + g x' = f(x)`` with learnable
    damping ``g = 1/eps`` after rescaling ``f = F/eps``). Every entry must be finite and > 0:
    ``ValueError`` otherwise, also for a mix of zero and positive entries (a model is first order
    in all features or none; ``eps=0.0`` is the first-order model). A learnable per-feature eps is
    part of ``adjoint_params`` with ``adjoint=True``. The shape is checked against ``x0`` at each
    call (``ValueError``); a non-learnable tensor is kept as a buffer (moves with ``.to()``).

    ``model(x0, v0=None)`` returns ``x(t1)``; ``model.trajectory(x0, t, v0=None)`` returns
    ``(x(t), x'(t))``. This is the continuous limit of a Momentum ResNet with
    ``gamma = 1 - h/eps``, ``h = t1/depth`` (see ``secondorder.discretize``).
    """

    def __init__(self, F, eps=1.0, t1=1.0, method="dopri5", rtol=1e-6, atol=1e-8,
                 adjoint=False, options=None):
        super().__init__(F, eps, t1, method, rtol, atol, adjoint, options)
