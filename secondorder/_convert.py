"""Drop-in conversion of existing networks into Momentum ResNets with the same weights.

``to_momentum`` takes a model (a torchvision ResNet, a torch Transformer, or any module holding
``nn.Sequential`` containers of residual blocks) and returns a copy whose named sequences of blocks
``B_0, ..., B_{K-1}`` run as Momentum ResNets (Sander et al. 2021, section 3)::

    x_1 = B_0(x_0)                                   (keep_first=True: the first block as is)
    v_{k+1} = gamma * v_k + (1 - gamma) * f_k(x_k),  x_{k+1} = x_k + v_{k+1},   v_1 = 0
    f_k(x) = B_k(x, *args, **kwargs) - x

A block is used through ``f_k(x) = B_k(x) - x``: torchvision's blocks end with ``relu(x + g(x))``
and torch's Transformer layers add two residual branches, so neither is ``x + f(x)`` as a whole.
With ``gamma = 0`` the update is ``x_{k+1} = x_k + (B_k(x_k) - x_k) = B_k(x_k)``: the converted model
computes what the original computed (up to the rounding of one subtraction and one addition per
block) and, with ``backward="exact"``, trains storing no activations inside the converted sequences.

State dict keys are unchanged (the blocks stay registered under their original names, e.g.
``layer1.0.conv1.weight``), so ``converted.load_state_dict(original.state_dict())`` works with
``strict=True``; a learnable ``gamma`` (an ``nn.Parameter``) adds one key ``<sequence>.gamma`` per
converted sequence.
"""

from __future__ import annotations

import copy
import sys
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.transformer import _detect_is_causal_mask, _get_seq_len

from ._nets import BACKWARDS, MomentumResNet, check_any_gamma, set_gamma
from ._reversible import _fastpath_disabled
from ._validate import check_choice

__all__ = [
    "to_momentum",
    "MomentumSequential",
    "MomentumTransformerEncoder",
    "MomentumTransformerDecoder",
]


class _Residual(nn.Module):
    """Residual function of a block: ``f(x) = block(x, *args, **kwargs) - x``.

    Not registered in the converted model (the block is, under its own name), so state dict keys
    do not change. ``no_fastpath`` runs torch's attention layers on their plain (differentiable)
    path: the exact backward recomputes ``f`` with gradients enabled and needs the recomputation to
    equal the forward bit for bit, which the fused inference kernels (taken without gradients in
    eval mode) would not give.
    """

    def __init__(self, block: nn.Module, name: str, no_fastpath: bool = False):
        super().__init__()
        self.block = block
        self.name = name
        self.no_fastpath = no_fastpath

    def forward(self, x, *args, **kwargs):
        if self.no_fastpath:
            with _fastpath_disabled():
                y = self.block(x, *args, **kwargs)
        else:
            y = self.block(x, *args, **kwargs)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"block {self.name} returned {type(y).__name__}, expected a tensor.")
        if y.shape != x.shape:
            raise ValueError(
                f"block {self.name} changes the shape {tuple(x.shape)} -> {tuple(y.shape)}; every "
                f"block of a converted sequence (after the first, with keep_first=True) must keep "
                f"the shape of its input. Leave this sequence out of `layers`, or use keep_first=True "
                f"if only its first block changes the shape."
            )
        return y - x


class _MomentumBlocks:
    """What the converted containers share: the settings and the run over a list of blocks."""

    def _init_momentum(self, gamma, backward, keep_first, fixed_point_bits):
        check_choice("backward", backward, BACKWARDS)
        check_any_gamma(gamma, invertible=backward != "autograd")
        if not isinstance(keep_first, bool):
            raise TypeError(f"keep_first must be a bool, got {type(keep_first).__name__}.")
        set_gamma(self, gamma)  # as MomentumResNet stores it (a Parameter is in the state dict)
        self.backward = backward
        self.keep_first = keep_first
        self.fixed_point_bits = fixed_point_bits
        self._path = ""  # this module's name in the converted model, for error messages

    def _momentum_extra_repr(self):
        g = "learnable" if isinstance(self.gamma, nn.Parameter) else self.gamma
        return f"gamma={g}, backward={self.backward!r}, keep_first={self.keep_first}"

    def _run_blocks(self, blocks, x, args, kwargs, prefix, no_fastpath=False):
        """``x <- B_0(x)`` if ``keep_first``, then the other blocks as a Momentum ResNet from ``v = 0``."""
        blocks = list(blocks)
        start = 0
        if self.keep_first and blocks:
            if no_fastpath:
                with _fastpath_disabled():
                    x = blocks[0](x, *args, **kwargs)
            else:
                x = blocks[0](x, *args, **kwargs)
            start = 1
        if start == len(blocks):
            return x
        functions = [
            _Residual(b, f"{prefix}{start + i}", no_fastpath) for i, b in enumerate(blocks[start:])
        ]
        net = MomentumResNet(functions, self.gamma, self.backward, fixed_point_bits=self.fixed_point_bits)
        return net(x, *args, **kwargs)


class MomentumSequential(_MomentumBlocks, nn.Sequential):
    """An ``nn.Sequential`` of blocks run as a Momentum ResNet (see the module docstring).

    Holds the blocks exactly as ``nn.Sequential`` does (same names, same state dict keys, indexing
    and iteration unchanged); only ``forward`` differs. Extra arguments of ``forward(x, *args,
    **kwargs)`` reach every block.
    """

    def __init__(self, *blocks, gamma=0.9, backward="exact", keep_first=True, fixed_point_bits=None):
        nn.Sequential.__init__(self, *blocks)
        self._init_momentum(gamma, backward, keep_first, fixed_point_bits)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(
                OrderedDict(list(self._modules.items())[idx]),
                gamma=self.gamma,
                backward=self.backward,
                keep_first=self.keep_first,
                fixed_point_bits=self.fixed_point_bits,
            )
        return nn.Sequential.__getitem__(self, idx)

    def extra_repr(self):
        return self._momentum_extra_repr()

    def forward(self, x, *args, **kwargs):
        prefix = f"{self._path}." if self._path else ""
        return self._run_blocks(self._modules.values(), x, args, kwargs, prefix)


def _adopt(cls, old: nn.Module):
    """A ``cls`` instance holding ``old``'s attributes, submodules, parameters and buffers."""
    new = cls.__new__(cls)
    new.__dict__.update({k: (v.copy() if isinstance(v, dict) else v) for k, v in old.__dict__.items()})
    return new


def _encoder_layer_kwargs(src, mask, src_key_padding_mask, is_causal, batch_first):
    """The keyword arguments ``nn.TransformerEncoder`` hands each of its layers: the masks
    canonicalised as torch does and ``is_causal`` detected from ``mask``."""
    src_key_padding_mask = F._canonical_mask(
        mask=src_key_padding_mask,
        mask_name="src_key_padding_mask",
        other_type=F._none_or_dtype(mask),
        other_name="mask",
        target_type=src.dtype,
    )
    mask = F._canonical_mask(
        mask=mask, mask_name="mask", other_type=None, other_name="", target_type=src.dtype,
        check_other=False,
    )
    is_causal = _detect_is_causal_mask(mask, is_causal, _get_seq_len(src, batch_first))
    return {"src_mask": mask, "is_causal": is_causal, "src_key_padding_mask": src_key_padding_mask}


def _decoder_layer_kwargs(tgt, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask,
                         tgt_is_causal, memory_is_causal, batch_first):
    """The keyword arguments ``nn.TransformerDecoder`` hands each of its layers besides ``memory``
    (``tgt_is_causal`` detected from ``tgt_mask``)."""
    tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, _get_seq_len(tgt, batch_first))
    return {
        "tgt_mask": tgt_mask,
        "memory_mask": memory_mask,
        "tgt_key_padding_mask": tgt_key_padding_mask,
        "memory_key_padding_mask": memory_key_padding_mask,
        "tgt_is_causal": tgt_is_causal,
        "memory_is_causal": memory_is_causal,
    }


class MomentumTransformerEncoder(_MomentumBlocks, nn.TransformerEncoder):
    """``nn.TransformerEncoder`` whose layers run as a Momentum ResNet.

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)`` canonicalises the masks
    as the original does and hands ``src_mask``, ``is_causal`` and ``src_key_padding_mask`` to every
    layer, then applies ``norm``. It never takes the nested-tensor / fused inference path (see
    ``_Residual``): in eval mode with a padding mask, where the original returns zeros at the
    padded positions (its nested-tensor output padded with 0), this one returns the values the
    plain path computes there; all other positions agree up to rounding.
    """

    @classmethod
    def from_encoder(cls, encoder, gamma=0.9, backward="exact", keep_first=True, fixed_point_bits=None):
        new = _adopt(cls, encoder)
        new._init_momentum(gamma, backward, keep_first, fixed_point_bits)
        return new

    def extra_repr(self):
        return self._momentum_extra_repr()

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        batch_first = self.layers[0].self_attn.batch_first
        kwargs = _encoder_layer_kwargs(src, mask, src_key_padding_mask, is_causal, batch_first)
        prefix = f"{self._path}.layers." if self._path else "layers."
        out = self._run_blocks(self.layers, src, (), kwargs, prefix, no_fastpath=True)
        return out if self.norm is None else self.norm(out)


class MomentumTransformerDecoder(_MomentumBlocks, nn.TransformerDecoder):
    """``nn.TransformerDecoder`` whose layers run as a Momentum ResNet.

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False)`` hands ``memory`` and
    every mask to every layer (``memory`` as a keyword argument: with ``backward="exact"`` it gets its
    gradient through the memory-free backward), then applies ``norm``.
    """

    @classmethod
    def from_decoder(cls, decoder, gamma=0.9, backward="exact", keep_first=True, fixed_point_bits=None):
        new = _adopt(cls, decoder)
        new._init_momentum(gamma, backward, keep_first, fixed_point_bits)
        return new

    def extra_repr(self):
        return self._momentum_extra_repr()

    def forward(
        self,
        tgt,
        memory,
        tgt_mask=None,
        memory_mask=None,
        tgt_key_padding_mask=None,
        memory_key_padding_mask=None,
        tgt_is_causal=None,
        memory_is_causal=False,
    ):
        kwargs = {"memory": memory, **_decoder_layer_kwargs(
            tgt, tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal,
            memory_is_causal, self.layers[0].self_attn.batch_first)}
        prefix = f"{self._path}.layers." if self._path else "layers."
        out = self._run_blocks(self.layers, tgt, (), kwargs, prefix, no_fastpath=True)
        return out if self.norm is None else self.norm(out)


# --------------------------------------------------------------------------------------------
# to_momentum
# --------------------------------------------------------------------------------------------
_CONVERTIBLE = (
    "an nn.Sequential of residual blocks, an nn.TransformerEncoder / nn.TransformerDecoder, or "
    "the `layers` ModuleList of one"
)


def _default_layers(model):
    if isinstance(model, nn.Transformer):
        return ["encoder.layers", "decoder.layers"]
    if isinstance(model, (nn.TransformerEncoder, nn.TransformerDecoder)):
        return ["layers"]
    tv = sys.modules.get("torchvision.models")  # a torchvision model implies torchvision is imported
    if tv is not None and isinstance(model, tv.ResNet):
        return ["layer1", "layer2", "layer3", "layer4"]
    raise TypeError(
        f"to_momentum has no default `layers` for a {type(model).__name__}; pass layers=[...] naming "
        f"its sequences of residual blocks ({_CONVERTIBLE}). Defaults exist for torchvision ResNets "
        f"and nn.Transformer / nn.TransformerEncoder / nn.TransformerDecoder."
    )


def _lookup(model, path):
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        children = ", ".join(name for name, _ in model.named_children()) or "none"
        raise ValueError(
            f"layers: {type(model).__name__} has no submodule {path!r} (its top-level children: "
            f"{children}); names are dotted paths as in model.named_modules()."
        ) from None


def _split(path):
    parent, _, name = path.rpartition(".")
    return parent, name


def _target(model, path):
    """The path of the module to replace for the layer name ``path``, and that module."""
    module = _lookup(model, path)
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder, nn.Sequential)):
        return path, module
    if isinstance(module, nn.ModuleList) and path:
        parent_path, name = _split(path)
        parent = _lookup(model, parent_path)
        if name == "layers" and isinstance(parent, (nn.TransformerEncoder, nn.TransformerDecoder)):
            return parent_path, parent
    raise TypeError(
        f"layers: {path!r} is a {type(module).__name__}, which to_momentum cannot convert; it "
        f"converts {_CONVERTIBLE}."
    )


def to_momentum(model, layers=None, gamma=0.9, backward="exact", keep_first=True, fixed_point_bits=None):
    """Copy of ``model`` whose sequences of residual blocks run as Momentum ResNets.

    In each converted sequence of blocks ``B_0..B_{K-1}`` (see the module docstring)::

        x_1 = B_0(x_0)  if keep_first  (else the momentum update starts at B_0)
        v_{k+1} = gamma * v_k + (1 - gamma) * (B_k(x_k) - x_k);   x_{k+1} = x_k + v_{k+1}

    with ``v = 0`` at the start of every sequence. ``gamma = 0`` with ``backward="autograd"``
    reproduces the original model.

    Args:
        model: an ``nn.Module``; it is deep-copied, never modified.
        layers: dotted names (as in ``model.named_modules()``) of ``nn.Sequential`` containers of
            blocks, of ``nn.TransformerEncoder`` / ``nn.TransformerDecoder`` modules or of their
            ``layers`` lists; ``""`` names the model itself. Default: ``["layer1", ..., "layer4"]``
            for torchvision ResNets, ``["encoder.layers", "decoder.layers"]`` for
            ``nn.Transformer``, ``["layers"]`` for an encoder or decoder.
        gamma: momentum in [0, 1] (``> 0`` for ``"exact"`` and ``"float"``), a float or a
            learnable 0-dim ``nn.Parameter`` shared by all converted sequences.
        backward: ``"exact"`` (store no activations inside the converted sequences; gradients
            equal autograd's up to fixed-point rounding), ``"autograd"`` or ``"float"``.
        keep_first: run the first block of each sequence as is (torchvision's first block of a
            stage changes the shape); with ``False`` every block must keep the shape.
        fixed_point_bits: the exact mode's fractional bits (see ``secondorder.MomentumResNet``).

    Returns:
        The converted copy. Keyword arguments given to a converted container (masks, a decoder's
        ``memory``) reach every block.

    Raises:
        ValueError: a name in ``layers`` that does not exist, a name given twice, a bad ``gamma`` or
            ``backward``; at the first forward, a block that changes the shape inside a converted
            sequence (naming the block).
        TypeError: a named module that cannot be converted, or no default ``layers`` for the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    check_choice("backward", backward, BACKWARDS)
    check_any_gamma(gamma, invertible=backward != "autograd")
    if layers is None:
        layers = _default_layers(model)
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    for path in layers:
        if not isinstance(path, str):
            raise TypeError(f"layers must be a list of module names (str), got a {type(path).__name__}.")

    model = copy.deepcopy(model)
    if isinstance(gamma, nn.Parameter):  # deepcopy would give every sequence its own copy otherwise
        gamma = nn.Parameter(gamma.detach().clone())
    targets = {}
    for path in layers:
        target_path, module = _target(model, path)
        if target_path in targets:
            raise ValueError(f"layers: {path!r} names the same module as {targets[target_path]!r}.")
        targets[target_path] = path

    settings = {"gamma": gamma, "backward": backward, "keep_first": keep_first,
                "fixed_point_bits": fixed_point_bits}
    # replace the deepest modules first, so a parent's path still resolves to the original objects
    for target_path in sorted(targets, key=lambda p: -p.count(".") - (p != "")):
        module = _lookup(model, target_path)
        if isinstance(module, nn.TransformerEncoder):
            new = MomentumTransformerEncoder.from_encoder(module, **settings)
        elif isinstance(module, nn.TransformerDecoder):
            new = MomentumTransformerDecoder.from_decoder(module, **settings)
        else:
            new = MomentumSequential(OrderedDict(module._modules), **settings)
        new._path = target_path
        if target_path == "":
            model = new
        else:
            parent_path, name = _split(target_path)
            setattr(_lookup(model, parent_path), name, new)
    return model
