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
- ``gamma = 0`` with ``use_backprop=False`` stores activations (a step with ``gamma = 0`` cannot be
  inverted) and warns once that no memory is saved; the official package runs its memory-saving
  path there and returns wrong gradients.
- ``transform_to_momentumnet`` on ``nn.TransformerEncoder`` / ``nn.TransformerDecoder`` layers
  (``sub_layers=["encoder.layers", "decoder.layers"]``) also gives the encoder and decoder a
  forward that runs the converted layers (recent torch versions inspect ``layers[0].self_attn``,
  which a ``MomentumNet`` does not have), with masks canonicalised as torch does and handed to
  every layer; the sequences it builds pass keyword arguments on (``keep_first_layer=True`` works
  for Transformers too).

Both published keyword spellings are accepted: ``sub_layers=`` and ``residual_layers=``.

The update rule is ``v <- gamma v + (1 - gamma) f(x)``, ``x <- x + v`` with ``f = function(x)`` when
``is_residual`` and ``f = function(x) - x`` otherwise (the block then computes ``x + f`` itself).
"""

from __future__ import annotations

import copy
import warnings

from torch import nn

from ._convert import _decoder_layer_kwargs, _encoder_layer_kwargs
from ._nets import MomentumResNet
from ._validate import check_gamma

__all__ = ["MomentumNet", "transform_to_momentumnet"]


class _MinusInput(nn.Module):
    """``f(x) = block(x) - x`` for a block that already adds its input."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, *args, **kwargs):
        return self.block(x, *args, **kwargs) - x


class _Network(nn.Module):
    """Holds the functions under the official names ``"0" .. "N-1"`` and ``"init"``, and gamma
    (a learnable gamma is registered here too, as the official package does: its state dict holds
    both ``gamma`` and ``network.gamma``)."""

    def __init__(self, functions, init_function, gamma):
        super().__init__()
        for i, f in enumerate(functions):
            self.add_module(str(i), f)
        self.n_functions = len(functions)
        if init_function is not None:
            self.add_module("init", init_function)
        self.gamma = gamma


_warned_gamma_zero = False


def _warn_gamma_zero():
    global _warned_gamma_zero
    if not _warned_gamma_zero:
        _warned_gamma_zero = True
        warnings.warn(
            "MomentumNet(gamma=0, use_backprop=False): a Momentum ResNet with gamma = 0 is a ResNet, "
            "whose layers cannot be inverted, so activations are stored and no memory is saved "
            "(gradients are exact). Use gamma > 0 to save memory.",
            UserWarning,
            stacklevel=3,
        )

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
        g = check_gamma(gamma)
        if init_speed and init_function is None:
            raise ValueError("init_speed=True needs an init_function (the module giving v_0 = init_function(x)).")
        if not use_backprop and g == 0.0 and not isinstance(gamma, nn.Parameter):
            _warn_gamma_zero()
            memory_free = False
        else:
            memory_free = not use_backprop
        if memory_free:
            check_gamma(gamma, invertible=True)
        functions = list(functions)
        self.network = _Network(functions, init_function, gamma)
        self.use_backprop = use_backprop
        self.init_speed = init_speed
        self.is_residual = is_residual
        residuals = functions if is_residual else [_MinusInput(f) for f in functions]
        impl = MomentumResNet(
            residuals,
            gamma=gamma,
            backward="exact" if memory_free else "autograd",
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


class _Sequential(nn.Sequential):
    """``nn.Sequential`` (same keys, indexing, iteration) whose forward passes ``*args`` and
    ``**kwargs`` to every module, so masks reach the blocks of a converted Transformer."""

    def forward(self, x, *args, **kwargs):
        for module in self:
            x = module(x, *args, **kwargs)
        return x


def _first_attention(layers):
    for m in layers.modules():
        if isinstance(m, nn.MultiheadAttention):
            return m
    raise TypeError("transform_to_momentumnet: the converted Transformer layers hold no nn.MultiheadAttention.")


class _ConvertedEncoder(nn.TransformerEncoder):
    """``nn.TransformerEncoder`` whose ``layers`` were converted: the forward hands the masks, as
    torch canonicalises them, to every item of ``layers`` (never the nested-tensor fast path, which
    needs torch's own layers)."""

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        batch_first = _first_attention(self.layers).batch_first
        kwargs = _encoder_layer_kwargs(src, mask, src_key_padding_mask, is_causal, batch_first)
        out = src
        for mod in self.layers:
            out = mod(out, **kwargs)
        return out if self.norm is None else self.norm(out)


class _ConvertedDecoder(nn.TransformerDecoder):
    """``nn.TransformerDecoder`` whose ``layers`` were converted (see ``_ConvertedEncoder``)."""

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        kwargs = _decoder_layer_kwargs(tgt, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask,
                                      tgt_is_causal, memory_is_causal, _first_attention(self.layers).batch_first)
        out = tgt
        for mod in self.layers:
            out = mod(out, memory, **kwargs)
        return out if self.norm is None else self.norm(out)


_CONVERTED = {nn.TransformerEncoder: _ConvertedEncoder, nn.TransformerDecoder: _ConvertedDecoder}


def transform_to_momentumnet(
    model,
    sub_layers=("layer1", "layer2", "layer3", "layer4"),
    keep_first_layer=True,
    gamma=0.9,
    use_backprop=False,
    is_residual=False,
    *,
    residual_layers=None,
):
    """Return a copy of ``model`` whose ``sub_layers`` (dotted names of sequences of blocks) run as
    ``MomentumNet``s, with the ``momentumnet`` 0.10 structure: a sequence ``S`` becomes
    ``nn.Sequential(S[0], nn.Sequential(MomentumNet(S[1:])))`` when ``keep_first_layer`` (the first
    block usually changes the shape) and ``nn.Sequential(MomentumNet(S))`` otherwise.

    ``is_residual=False`` (the default, for blocks such as torchvision's that add their input
    themselves) uses ``f(x) = block(x) - x``. For conversions that keep the original state-dict keys
    and pass keyword arguments (Transformers), use ``secondorder.to_momentum``.

    ``residual_layers=`` is accepted as another spelling of ``sub_layers=``. When the converted
    sequence is the ``layers`` of an ``nn.TransformerEncoder`` / ``nn.TransformerDecoder``, that
    encoder / decoder gets a forward that runs them (see the module docstring).
    """
    if residual_layers is not None:
        if sub_layers not in (None, ("layer1", "layer2", "layer3", "layer4")):
            raise TypeError("transform_to_momentumnet: pass sub_layers or residual_layers (the same argument), not both.")
        sub_layers = residual_layers
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
            new = _Sequential(blocks[0], _Sequential(MomentumNet(blocks[1:], gamma=gamma, use_backprop=use_backprop, is_residual=is_residual)))
        else:
            new = _Sequential(MomentumNet(blocks, gamma=gamma, use_backprop=use_backprop, is_residual=is_residual))
        setattr(parent, key, new)
        if type(parent) in _CONVERTED and key == "layers":
            parent.__class__ = _CONVERTED[type(parent)]
    return out
