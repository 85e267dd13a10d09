"""Drop-in replacements for the official ``momentumnet`` package (version 0.10).

``from secondorder.compat import MomentumNet, transform_to_momentumnet`` runs code written for
``momentumnet`` unchanged: same arguments, same defaults, same module structure and state-dict keys
(``network.0.*``, ``network.init.*``; ``layer1.0.*``, ``layer1.1.0.network.0.*`` after a transform),
so weights saved with the official package load. Differences, all deliberate:

- ``use_backprop=False`` uses this library's exact memory-free backward: gradients equal the
  stored-activation ones up to fixed-point rounding at any depth, a learnable gamma gets its gradient,
  overflow raises. (The official path keeps ``x`` in float and is no more exact than naive float32.)
- keyword arguments of ``forward`` reach every function (the official package drops them).
- bad arguments raise ``ValueError`` naming the argument, not a bare ``Exception``.

The update rule is ``v <- gamma v + (1 - gamma) f(x)``, ``x <- x + v`` with ``f = function(x)`` when
``is_residual`` and ``f = function(x) - x`` otherwise (the block then computes ``x + f`` itself).
"""

from __future__ import annotations

import copy

from torch import nn

from ._checks import check_gamma
from .nets import MomentumResNet

__all__ = ["MomentumNet", "transform_to_momentumnet"]


class _MinusInput(nn.Module):
    """``f(x) = block(x) - x`` for a block that already adds its input."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, *args, **kwargs):
        return self.block(x, *args, **kwargs) - x


class _Network(nn.Module):
    """Holds the functions under the official names ``"0" .. "N-1"`` and ``"init"``."""

    def __init__(self, functions, init_function):
        super().__init__()
        for i, f in enumerate(functions):
            self.add_module(str(i), f)
        self.n_functions = len(functions)
        if init_function is not None:
            self.add_module("init", init_function)

    @property
    def functions(self):
        return [self._modules[str(i)] for i in range(self.n_functions)]


class MomentumNet(nn.Module):
    """Momentum ResNet with the ``momentumnet`` 0.10 interface (see the module docstring).

    Args:
        functions: list / ``nn.Sequential`` of modules ``f_n``.
        gamma: momentum in [0, 1] (a float or an ``nn.Parameter``).
        init_speed: if True, ``v_0 = init_function(x_0)``; else ``v_0 = 0``.
        init_function: module for the initial velocity (needed when ``init_speed``).
        use_backprop: True stores activations; False stores none (exact memory-free backward).
        is_residual: True: ``f = function(x)``; False: ``f = function(x) - x``.
    """

    def __init__(self, functions, gamma, init_speed=False, init_function=None, use_backprop=True, is_residual=True):
        super().__init__()
        check_gamma(gamma, invertible=not use_backprop)
        if init_speed and init_function is None:
            raise ValueError("init_speed=True needs an init_function (the module giving v_0 = init_function(x)).")
        functions = list(functions)
        self.network = _Network(functions, init_function)
        self.use_backprop = use_backprop
        self.init_speed = init_speed
        self.is_residual = is_residual
        residuals = functions if is_residual else [_MinusInput(f) for f in functions]
        impl = MomentumResNet(
            residuals,
            gamma=gamma,
            backward="autograd" if use_backprop else "exact",
            init_velocity=init_function if init_speed else None,
        )
        object.__setattr__(self, "_impl", impl)  # shares the modules; not a second registration
        self.gamma = gamma  # an nn.Parameter is registered under "gamma", as in momentumnet

    @property
    def functions(self):
        return self.network.functions

    @property
    def init_function(self):
        return self.network._modules["init"]

    def forward(self, x, *args, **kwargs):
        self._impl.gamma = self.gamma if isinstance(self.gamma, nn.Parameter) else float(self.gamma)
        return self._impl(x, *args, **kwargs)


def transform_to_momentumnet(
    model,
    sub_layers=("layer1", "layer2", "layer3", "layer4"),
    keep_first_layer=True,
    gamma=0.9,
    use_backprop=False,
    is_residual=False,
):
    """Return a copy of ``model`` whose ``sub_layers`` (dotted names of sequences of blocks) run as
    :class:`MomentumNet` s, with the ``momentumnet`` 0.10 structure: a sequence ``S`` becomes
    ``nn.Sequential(S[0], nn.Sequential(MomentumNet(S[1:])))`` when ``keep_first_layer`` (the first
    block usually changes the shape) and ``nn.Sequential(MomentumNet(S))`` otherwise.

    ``is_residual=False`` (the default, for blocks such as torchvision's that add their input
    themselves) uses ``f(x) = block(x) - x``. For conversions that keep the original state-dict keys
    and pass keyword arguments (Transformers), use :func:`secondorder.to_momentum`.
    """
    if isinstance(sub_layers, str):
        sub_layers = [sub_layers]
    out = copy.deepcopy(model)
    for name in sub_layers:
        parent, key = out, None
        parts = name.split(".")
        for i, part in enumerate(parts):
            if part not in parent._modules:
                raise ValueError(f"sub_layers: {type(model).__name__} has no submodule {name!r} (no {part!r} in {'.'.join(parts[:i]) or 'the model'}).")
            if i < len(parts) - 1:
                parent = parent._modules[part]
            key = part
        seq = parent._modules[key]
        blocks = list(seq)
        if keep_first_layer:
            new = nn.Sequential(blocks[0], nn.Sequential(MomentumNet(blocks[1:], gamma=gamma, use_backprop=use_backprop, is_residual=is_residual)))
        else:
            new = nn.Sequential(MomentumNet(blocks, gamma=gamma, use_backprop=use_backprop, is_residual=is_residual))
        setattr(parent, key, new)
    return out
