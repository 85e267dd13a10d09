"""Discrete models over residual functions: ResNet, Momentum ResNet, RevNet.

Every model takes a sequence of residual functions (``nn.Module``s, called as
``f(x, *args, **kwargs)``) and integrates them with its own update rule from
``secondorder._steps`` (the update rules, each written once). The same module may appear several times (weight tying).
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import torch
from torch import nn

from . import _perfeature as _pf
from . import exact as _exact
from ._reversible import (
    coupling_memory_free,
    coupling_roundtrip,
    momentum_memory_free,
    momentum_roundtrip,
)
from ._steps import coupling_inverse, coupling_step, momentum_inverse, momentum_step, resnet_step
from ._validate import check_choice, check_gamma, check_output, check_velocity

__all__ = ["ResNet", "MomentumResNet", "RevNet", "BACKWARDS", "exact_roundtrip"]

#: Backward modes. "autograd" stores activations (the reference); "exact" stores none and
#: reconstructs them bit-exactly in fixed point; "float" reconstructs them in floating point.
BACKWARDS = {
    "autograd": "store activations, plain autograd (the reference)",
    "exact": "store no activations; reconstruct them bit-exactly (int64 fixed point + bit store)",
    "float": "store no activations; reconstruct them by the floating-point inverse (error grows with depth)",
}


def _module_list(functions, name="functions") -> nn.ModuleList:
    if isinstance(functions, nn.Module) and not isinstance(functions, (nn.ModuleList, nn.Sequential)):
        raise TypeError(f"{name} must be a sequence of modules (a list, nn.ModuleList or nn.Sequential), got one {type(functions).__name__}.")
    functions = list(functions)
    for i, f in enumerate(functions):
        if not isinstance(f, nn.Module):
            raise TypeError(f"{name}[{i}] is a {type(f).__name__}; residual functions must be nn.Module instances.")
    return nn.ModuleList(functions)


def _call(f, n, x, args, kwargs, what="residual function", shape=None, hint="", rule=None):
    """``f(x, *args, **kwargs)``, checked to be a tensor of ``shape`` (default: ``x``'s)."""
    out = f(x, *args, **kwargs)
    check_output(n, out, x.shape if shape is None else shape, what, hint, rule)
    return out


def _sequential_hint(functions) -> str:
    """What a shape error adds when the functions came as one ``nn.Sequential``."""
    if isinstance(functions, nn.Sequential) and not isinstance(functions, nn.ModuleList):
        return (
            f" (The functions were given as one nn.Sequential, which is read as a list of "
            f"{len(functions)} residual functions, one per entry, as in momentumnet; to use the whole "
            f"Sequential as a single residual function, pass [block].)"
        )
    return ""


def _warn_if_not_finite(what, *ts):
    """The float inverse overflows at depth: say so instead of returning NaN/inf silently."""
    if not all(bool(torch.isfinite(t).all()) for t in ts):
        warnings.warn(
            f"{what} returned NaN/inf: the floating-point inverse amplifies rounding at every layer "
            f"and overflowed. Use secondorder.exact_roundtrip(net, x) for a bit-exact reconstruction.",
            RuntimeWarning,
            stacklevel=3,
        )


def check_any_gamma(gamma, invertible: bool) -> None:
    """A Momentum ResNet's gamma: a number or 0-dim tensor in [0, 1] ((0, 1] when ``invertible``),
    or a per-feature tensor with every entry so (``secondorder._perfeature``)."""
    if _pf.is_per_feature(gamma):
        _pf.check_gamma_tensor(gamma, invertible=invertible)
    else:
        check_gamma(gamma, invertible=invertible)


def set_gamma(module: nn.Module, gamma) -> None:
    """Store ``gamma`` on ``module`` as every Momentum ResNet container does: an ``nn.Parameter`` is
    registered (learnable, in the state dict); any other tensor that requires grad (e.g. produced by
    a hypernetwork) is kept with its graph, unregistered; a fixed per-feature tensor becomes the
    buffer ``gamma``; anything else is stored as a float."""
    if isinstance(gamma, nn.Parameter):
        module.gamma = gamma
    elif isinstance(gamma, torch.Tensor) and gamma.requires_grad:
        object.__setattr__(module, "gamma", gamma)
    elif _pf.is_per_feature(gamma):
        module.register_buffer("gamma", gamma.detach().clone())
    else:
        module.gamma = float(gamma)


class ResNet(nn.Module):
    """ResNet over residual functions: ``x_{n+1} = x_n + f_n(x_n, *args, **kwargs)``.

    It is the Momentum ResNet with ``gamma = 0``; with ``return_velocity=True`` the last increment
    ``f_{N-1}(x_{N-1})`` is returned as the velocity (what that Momentum ResNet's ``v_N`` is).
    """

    def __init__(self, functions):
        super().__init__()
        self._hint = _sequential_hint(functions)
        self.functions = _module_list(functions)

    def forward(self, x, *args, v0=None, return_velocity=False, **kwargs):
        if v0 is not None:
            raise ValueError("v0: a ResNet has no velocity state (it is the Momentum ResNet with gamma = 0).")
        fx = torch.zeros_like(x)
        for n, f in enumerate(self.functions):
            fx = _call(f, n, x, args, kwargs, hint=self._hint)
            x = resnet_step(x, fx)
        return (x, fx) if return_velocity else x

    def trajectory(self, x, *args, **kwargs):
        """All layer states ``(x_0, ..., x_N)`` stacked: shape ``(depth + 1, *x.shape)``."""
        xs = [x]
        for n, f in enumerate(self.functions):
            x = resnet_step(x, _call(f, n, x, args, kwargs, hint=self._hint))
            xs.append(x)
        return torch.stack(xs)

    def inverse(self, *args, **kwargs):
        """Not available: a ResNet layer ``y = x + f(x)`` has no closed-form inverse (it need not be
        invertible at all). Use ``MomentumResNet`` (``gamma > 0``) or ``RevNet``."""
        raise NotImplementedError(
            "a ResNet layer y = x + f(x) has no closed-form inverse; MomentumResNet (gamma > 0) and "
            "RevNet are invertible."
        )


class MomentumResNet(nn.Module):
    """Momentum ResNet (Sander, Ablin, Blondel, Peyré, ICML 2021)::

        v_{n+1} = gamma * v_n + (1 - gamma) * f_n(x_n, *args, **kwargs)
        x_{n+1} = x_n + v_{n+1}

    Args:
        functions: sequence of ``nn.Module`` residual functions ``f_n`` (shape-preserving; the same
            module may appear several times).
        gamma: momentum in [0, 1], a float or a learnable ``nn.Parameter`` (0-dim). ``gamma = 0`` is
            the ResNet; the memory-free backwards need ``gamma > 0``. A tensor (or ``nn.Parameter``)
            of at least one dimension is a *per-feature* gamma: it must broadcast against ``x``
            without enlarging it (e.g. ``(d,)`` for ``x`` of shape ``(batch, d)``), every entry in
            [0, 1] ((0, 1] for the memory-free backwards); all three backwards support it, exact
            mode with one rational ``n_i/d_i`` per entry (``secondorder._perfeature``).
        backward: ``"autograd"`` (store activations), ``"exact"`` (store none; the backward pass
            reconstructs every ``(x_n, v_n)`` bit-exactly in int64 fixed point, any depth) or
            ``"float"`` (store none; naive float inverse, error ~ ``gamma**-N``). Both memory-free
            backwards check that their walk lands on the forward's input (bit for bit in exact
            mode, within ``sqrt(eps)`` in float mode) and raise
            ``secondorder.ReconstructionError`` instead of returning unchecked gradients.
        init_velocity: optional module ``v_0 = init_velocity(x_0)``; default ``v_0 = 0``.
        fixed_point_bits: fractional bits of the exact mode's fixed point; the range is
            ``|x| < 2**(61 - bits)``. Default None: the finest format of the dtype's ladder
            (``secondorder.exact.BITS_LADDER``; float64 52 bits, float32 32 bits) whose range
            holds every value of the forward pass (a pass that overflows is rerun one rung coarser,
            with the RNG state and buffers restored).

    ``net(x, *args, v0=None, return_velocity=False, **kwargs)`` returns ``x_N`` (or ``(x_N, v_N)``);
    extra arguments reach every residual function. Any tensor shape works; the dtype is kept.

    In exact mode gamma is applied as the rational ``n/d`` of ``exact_gamma`` (float64: equal
    to gamma for short decimals such as 0.9, within ~1e-18 otherwise; float32: ``n / 2**24``,
    within 3e-8, for speed), the states are rounded to the fixed-point
    quantum ``2**-bits`` after every layer, and gradients equal autograd's up to that rounding.
    A value leaving the fixed-point range, or NaN/inf, raises
    ``secondorder.FixedPointOverflowError`` (a ``secondorder.NumericalError``).
    """

    def __init__(self, functions, gamma=0.9, backward="autograd", init_velocity=None, fixed_point_bits=None):
        super().__init__()
        check_choice("backward", backward, BACKWARDS)
        check_any_gamma(gamma, invertible=backward != "autograd")
        if init_velocity is not None and not callable(init_velocity):
            raise TypeError(f"init_velocity must be a module or callable, got {type(init_velocity).__name__}.")
        if fixed_point_bits is not None:
            _exact.FixedPoint(torch.float32, fixed_point_bits)  # validates the value
        self._hint = _sequential_hint(functions)
        self.functions = _module_list(functions)
        set_gamma(self, gamma)
        self.backward = backward
        self.init_velocity = init_velocity
        self.fixed_point_bits = fixed_point_bits

    def extra_repr(self):
        g = "learnable" if isinstance(self.gamma, nn.Parameter) else self.gamma
        if _pf.is_per_feature(self.gamma):
            g = f"{'learnable ' if self.gamma.requires_grad else ''}per-feature {tuple(self.gamma.shape)}"
        return f"depth={len(self.functions)}, gamma={g}, backward={self.backward!r}"

    def exact_gamma(self, dtype=torch.float32) -> Fraction:
        """The rational ``n/d`` that exact mode uses for the current gamma on inputs of ``dtype``
        (exact for short decimals; see ``secondorder.exact.rational_gamma``). A per-feature gamma
        gives a list of fractions, one per entry of ``gamma.flatten()``."""
        if _pf.is_per_feature(self.gamma):
            n, d, _ = _pf.rational_gammas(self.gamma.detach().to(dtype), dtype)  # as the forward casts it
            return [Fraction(int(a), int(b)) for a, b in zip(n.reshape(-1).tolist(), d.reshape(-1).tolist())]
        g = self.gamma.detach() if isinstance(self.gamma, torch.Tensor) else self.gamma
        return _exact.rational_gamma(float(g), dyadic=dtype != torch.float64)

    def _checked_gamma(self, x, invertible):
        """The current gamma, validated (a per-feature one also against ``x``'s shape, and cast to
        ``x``'s dtype)."""
        gamma = self.gamma
        if _pf.is_per_feature(gamma):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"x must be a tensor, got {type(x).__name__}.")
            _pf.check_gamma_tensor(gamma, invertible=invertible, x_shape=x.shape)
            return _pf.gamma_for(gamma, x)
        check_gamma(gamma, invertible=invertible)
        return gamma

    def _start(self, x, v0):
        """The initial velocity: ``v0``, ``init_velocity(x)``, or None for zero."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}.")
        if v0 is not None:
            return check_velocity(v0, x)
        if self.init_velocity is not None:
            return check_velocity(self.init_velocity(x), x)
        return None

    def forward(self, x, *args, v0=None, return_velocity=False, **kwargs):
        check_choice("backward", self.backward, BACKWARDS)  # an attribute may be set after construction
        gamma = self._checked_gamma(x, invertible=self.backward != "autograd")  # a learned gamma may drift
        v = self._start(x, v0)
        if self.backward == "autograd":
            v = torch.zeros_like(x) if v is None else v
            for n, f in enumerate(self.functions):
                x, v = momentum_step(x, v, _call(f, n, x, args, kwargs, hint=self._hint), gamma)
        else:
            x, v = momentum_memory_free(
                self.functions, x, v, gamma, args, kwargs, self.backward, self.fixed_point_bits, self._hint
            )
        return (x, v) if return_velocity else x

    def trajectory(self, x, *args, v0=None, return_velocity=False, **kwargs):
        """All layer states in float arithmetic: ``xs`` of shape ``(depth + 1, *x.shape)``
        (and ``vs`` of the same shape with ``return_velocity=True``)."""
        gamma = self._checked_gamma(x, invertible=False)
        v = self._start(x, v0)
        v = torch.zeros_like(x) if v is None else v
        xs, vs = [x], [v]
        for n, f in enumerate(self.functions):
            x, v = momentum_step(x, v, _call(f, n, x, args, kwargs, hint=self._hint), gamma)
            xs.append(x)
            vs.append(v)
        return (torch.stack(xs), torch.stack(vs)) if return_velocity else torch.stack(xs)

    def inverse(self, x, v, *args, **kwargs):
        """Reconstruct ``(x_0, v_0)`` from ``(x_N, v_N)`` by the float inverse::

            x_n = x_{n+1} - v_{n+1};   v_n = (v_{n+1} - (1 - gamma) f_n(x_n)) / gamma

        Each division by gamma multiplies the rounding error already present by ``1/gamma``, so the
        error grows like ``gamma**-N`` times the dtype's epsilon (float32, gamma = 0.9: about 0.1
        relative at N = 100, overflow to NaN near N = 1000). In the ODE scaling
        ``gamma = 1 - T/(N eps)`` it stays bounded by about ``exp(T/eps)``. For a bit-exact round
        trip use ``secondorder.exact_roundtrip`` (fixed point with a bit store).
        """
        gamma = self._checked_gamma(x, invertible=True)
        for n in reversed(range(len(self.functions))):
            f = self.functions[n]
            x, v = momentum_inverse(x, v, lambda z, f=f, n=n: _call(f, n, z, args, kwargs, hint=self._hint), gamma)
        _warn_if_not_finite("MomentumResNet.inverse", x, v)
        return x, v


class RevNet(nn.Module):
    """RevNet with additive coupling (Gomez et al., NeurIPS 2017)::

        x = (x1, x2)  split along ``dim``;   y1 = x1 + F_n(x2);   y2 = x2 + G_n(y1)

    ``dim`` defaults to 1: the channel dimension of ``(N, C, ...)`` feature maps and the feature
    dimension of ``(N, D)`` inputs; pass ``dim=-1`` for ``(N, L, D)`` sequences. ``x1`` takes the
    first ``size // 2`` entries, ``x2`` the rest; ``F_n`` maps an ``x2``-shaped tensor to an
    ``x1``-shaped one and ``G_n`` the reverse. ``backward`` as for ``MomentumResNet`` (the
    coupling is invertible without a bit store: exact mode only quantizes).
    """

    def __init__(self, F_functions, G_functions, backward="autograd", dim=1, fixed_point_bits=None):
        super().__init__()
        check_choice("backward", backward, BACKWARDS)
        self.F = _module_list(F_functions, "F_functions")
        self.G = _module_list(G_functions, "G_functions")
        if len(self.F) != len(self.G):
            raise ValueError(f"F_functions has {len(self.F)} modules and G_functions {len(self.G)}; they must have the same length.")
        if fixed_point_bits is not None:
            _exact.FixedPoint(torch.float32, fixed_point_bits)
        self.backward = backward
        self.dim = dim
        self.fixed_point_bits = fixed_point_bits

    def extra_repr(self):
        return f"depth={len(self.F)}, dim={self.dim}, backward={self.backward!r}"

    def _split(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}.")
        if x.dim() == 0 or not (-x.dim() <= self.dim < x.dim()):
            raise ValueError(f"dim == {self.dim} is out of range for an input of shape {tuple(x.shape)}.")
        size = x.shape[self.dim]
        if size < 2:
            raise ValueError(f"the split dimension dim={self.dim} of x has size {size}; a RevNet needs at least 2.")
        k = size // 2
        return x.narrow(self.dim, 0, k), x.narrow(self.dim, k, size - k)

    def _shape_rule(self, x):
        """``rule(k, got)``: the shape error of half step ``k`` (``F_{k//2}`` for even ``k``, else
        ``G_{k//2}``), in terms of the split of ``x``."""
        size = x.shape[self.dim]
        k = size // 2
        x1, x2 = self._split(x)
        s1, s2 = tuple(x1.shape), tuple(x2.shape)

        def rule(step, got):
            name, src, dst = ("F", ("x2", s2), ("x1", s1)) if step % 2 == 0 else ("G", ("y1", s1), ("x2", s2))
            return (
                f"{name} function {step // 2} returned shape {tuple(got)} for its input {src[0]} of shape "
                f"{src[1]}; {name} functions must return the shape of {dst[0]}, {dst[1]}. A RevNet splits "
                f"x of shape {tuple(x.shape)} along dim={self.dim} into x1 (the first {size} // 2 = {k} "
                f"entries) and x2 (the other {size - k}); F maps x2's shape to x1's, G maps x1's to x2's."
            )

        return rule

    def _coupled(self, n, args, kwargs, rule, shape1, shape2):
        """``F_n`` and ``G_n`` with the extra arguments bound and their output shapes checked
        (``F_n`` must return ``x1``'s shape ``shape1``, ``G_n`` ``x2``'s shape ``shape2``; ``rule``
        words the error, see ``_shape_rule``)."""
        F, G = self.F[n], self.G[n]
        return (
            lambda z: _call(F, n, z, args, kwargs, "F function", shape1, rule=lambda i, got: rule(2 * n, got)),
            lambda z: _call(G, n, z, args, kwargs, "G function", shape2, rule=lambda i, got: rule(2 * n + 1, got)),
        )

    def forward(self, x, *args, v0=None, return_velocity=False, **kwargs):
        check_choice("backward", self.backward, BACKWARDS)  # an attribute may be set after construction
        if v0 is not None or return_velocity:
            raise ValueError("v0 / return_velocity: a RevNet has no velocity state.")
        x1, x2 = self._split(x)
        rule = self._shape_rule(x)
        if self.backward == "autograd":
            for n in range(len(self.F)):
                x1, x2 = coupling_step(x1, x2, *self._coupled(n, args, kwargs, rule, x1.shape, x2.shape))
        else:
            x1, x2 = coupling_memory_free(
                self.F, self.G, x1, x2, args, kwargs, self.backward, self.fixed_point_bits, rule=rule
            )
        return torch.cat([x1, x2], dim=self.dim)

    def trajectory(self, x, *args, **kwargs):
        """All layer states (float arithmetic), shape ``(depth + 1, *x.shape)``."""
        x1, x2 = self._split(x)
        rule = self._shape_rule(x)
        xs = [x]
        for n in range(len(self.F)):
            x1, x2 = coupling_step(x1, x2, *self._coupled(n, args, kwargs, rule, x1.shape, x2.shape))
            xs.append(torch.cat([x1, x2], dim=self.dim))
        return torch.stack(xs)

    def inverse(self, y, *args, **kwargs):
        """Reconstruct ``x_0`` from ``y = x_N`` by the float inverse ``x2 = y2 - G(y1)``,
        ``x1 = y1 - F(x2)``. No division: the rounding error grows only additively with depth
        (times the Lipschitz constants of F and G)."""
        y1, y2 = self._split(y)
        rule = self._shape_rule(y)
        for n in reversed(range(len(self.F))):
            y1, y2 = coupling_inverse(y1, y2, *self._coupled(n, args, kwargs, rule, y1.shape, y2.shape))
        _warn_if_not_finite("RevNet.inverse", y1, y2)
        return torch.cat([y1, y2], dim=self.dim)


def exact_roundtrip(net, x, *args, v0=None, bits=None, **kwargs):
    """Run ``net`` (a MomentumResNet or RevNet) forward in exact fixed point, then invert it.

    Returns a dict: ``x_N`` (and ``v_N`` for momentum) the forward output, ``x0``/``v0`` the
    reconstructed input (floats), ``bit_exact`` whether the reconstructed int64 states equal the
    quantized input bit for bit (the check every exact backward makes before returning gradients),
    ``store_bytes`` the bit store's size at the end of the forward pass, ``spills`` when it was
    spilled and ``bits`` the fixed-point format used (``bits`` defaults to
    ``net.fixed_point_bits``; None tries the dtype's ladder, finest first).

    A ``StrangMomentumResNet`` round-trips its chain from ``z_0 = x_0 + v_0 / 2``: ``bit_exact``
    is the chain's check on ``(z_0, v_0)``, ``z_N``/``z0`` are the chain's states and
    ``x_N``/``x0`` the full-step positions ``z - v / 2`` (float operations).
    """
    if hasattr(net, "_exact_roundtrip"):  # a network built around a chain (StrangMomentumResNet)
        return net._exact_roundtrip(x, *args, v0=v0, bits=bits, **kwargs)
    bits = net.fixed_point_bits if bits is None else bits
    if isinstance(net, MomentumResNet):
        gamma = net._checked_gamma(x, invertible=True)  # the arithmetic takes it as it comes
        return momentum_roundtrip(net.functions, x, net._start(x, v0), gamma, args, kwargs, bits, net._hint)
    if isinstance(net, RevNet):
        x1, x2 = net._split(x)
        r = coupling_roundtrip(net.F, net.G, x1, x2, args, kwargs, bits, net._shape_rule(x))
        return {"x_N": torch.cat(r["y"], net.dim), "store_bytes": 0, "spills": [], "bits": r["bits"],
                "x0": torch.cat(r["x"], net.dim), "bit_exact": r["bit_exact"]}
    raise TypeError(f"exact_roundtrip needs a MomentumResNet or RevNet, got {type(net).__name__}.")
