"""to_momentum on real networks: torchvision ResNets and torch Transformers.

Checks: gamma = 0 reproduces the original, state dict keys and strict loading, exact vs autograd
gradients (train-mode BatchNorm, dropout, padding masks, a decoder's memory), the recursion with
f = B(x) - x against a hand-written loop, and every documented error.
"""

import io

import pytest
import torch
from problems import rel_err
from torch import nn

import secondorder as so
from secondorder._convert import (
    MomentumSequential,
    MomentumTransformerDecoder,
    MomentumTransformerEncoder,
)

D = torch.float64
# gamma = 0 computes x + (B(x) - x) instead of B(x): two extra roundings per block, each
# <= eps * |x|; over <= 16 blocks with O(1) activations, relative to max|y|:
TOL_GAMMA0_F64 = 1e-12
TOL_GAMMA0_F32 = 1e-5
# exact vs autograd: the exact forward rounds every state to 2**-46 ~ 1.4e-14 (float64); BatchNorm's
# batch statistics and 8 converted blocks amplify this by at most ~1e3 -> gradients within 1e-10,
# measured 1.4e-10 worst parameter for resnet18 (train mode); bound with a 7x margin:
TOL_EXACT_F64 = 1e-9


def _max_param_rel(model_a, model_b):
    ga = dict(model_a.named_parameters())
    return max(rel_err(p.grad, ga[k].grad) for k, p in model_b.named_parameters())


# --------------------------------------------------------------------------------------------
# torchvision ResNets
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tv():
    return pytest.importorskip("torchvision")


def _randomize_bn(model, seed=1):
    """Non-trivial running statistics and affine parameters, as in a trained network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


def test_resnet18_structure_and_keys(tv):
    m = tv.models.resnet18(weights=None, num_classes=10)
    c = so.to_momentum(m)
    for name in ["layer1", "layer2", "layer3", "layer4"]:
        assert isinstance(getattr(c, name), MomentumSequential)
        assert type(getattr(m, name)) is nn.Sequential  # the original is not modified
    assert list(c.state_dict()) == list(m.state_dict())
    assert isinstance(c.layer2[0], tv.models.resnet.BasicBlock)  # indexing unchanged
    sliced = c.layer3[1:]
    assert isinstance(sliced, MomentumSequential) and sliced.gamma == 0.9 and len(sliced) == 1
    assert "gamma=0.9, backward='exact', keep_first=True" in repr(c.layer1)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_resnet18_gamma0_reproduces_original(tv, mode):
    m = _randomize_bn(tv.models.resnet18(weights=None, num_classes=10)).to(D)
    c = so.to_momentum(m, gamma=0.0, backward="autograd")
    getattr(m, mode)()
    getattr(c, mode)()
    x = torch.randn(2, 3, 32, 32, dtype=D)
    y0, y1 = m(x).detach(), c(x).detach()
    assert float((y1 - y0).abs().max() / y0.abs().max()) <= TOL_GAMMA0_F64
    if mode == "train":  # running statistics updated once, identically
        for (k, b0), b1 in zip(m.named_buffers(), c.buffers(), strict=True):
            assert torch.allclose(b0.double(), b1.double(), rtol=0, atol=1e-12), k


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_deeper_resnets_gamma0_and_strict_load(tv, arch):
    m = _randomize_bn(getattr(tv.models, arch)(weights=None, num_classes=10)).eval()
    c = so.to_momentum(m, gamma=0.0, backward="autograd").eval()
    assert list(c.state_dict()) == list(m.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y0, y1 = m(x), c(x)
    assert float((y1 - y0).abs().max() / y0.abs().max()) <= TOL_GAMMA0_F32


def test_pretrained_weights_load_strict(tv):
    """Weights saved from a (trained-looking) original load into a converted fresh model."""
    trained = _randomize_bn(tv.models.resnet18(weights=None, num_classes=10), seed=3).eval()
    buf = io.BytesIO()
    torch.save(trained.state_dict(), buf)
    buf.seek(0)
    fresh = so.to_momentum(tv.models.resnet18(weights=None, num_classes=10), gamma=0.0, backward="autograd")
    result = fresh.load_state_dict(torch.load(buf), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    fresh.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert float((fresh(x) - trained(x)).abs().max() / trained(x).abs().max()) <= TOL_GAMMA0_F32
    # and the reverse: a converted model's weights load back into a plain ResNet
    back = tv.models.resnet18(weights=None, num_classes=10)
    back.load_state_dict(so.to_momentum(trained, gamma=0.9).state_dict(), strict=True)
    assert torch.equal(back.layer3[1].conv1.weight, trained.layer3[1].conv1.weight)


def test_resnet18_exact_matches_autograd_train_bn(tv):
    m = _randomize_bn(tv.models.resnet18(weights=None, num_classes=10)).to(D)
    x = torch.randn(2, 3, 32, 32, dtype=D)
    runs = {}
    for backward in ["autograd", "exact"]:
        c = so.to_momentum(m, gamma=0.9, backward=backward).train()
        out = c(x)
        (out**2).sum().backward()
        runs[backward] = (c, out)
    (ca, oa), (ce, oe) = runs["autograd"], runs["exact"]
    assert rel_err(oe, oa) <= TOL_EXACT_F64
    assert _max_param_rel(ca, ce) <= TOL_EXACT_F64
    # BatchNorm running statistics: updated once by the forward (not again by the recomputation)
    for (k, ba), be in zip(ca.named_buffers(), ce.buffers(), strict=True):
        if k.endswith("num_batches_tracked"):
            assert int(be) == 1, k
        else:
            assert torch.allclose(ba, be, rtol=0, atol=1e-10), k


def test_resnet_errors(tv):
    m = tv.models.resnet18(weights=None, num_classes=10)
    with pytest.raises(ValueError, match="has no submodule 'layer5'"):
        so.to_momentum(m, layers=["layer1", "layer5"])
    with pytest.raises(TypeError, match="'fc' is a Linear, which to_momentum cannot convert"):
        so.to_momentum(m, layers=["fc"])
    with pytest.raises(ValueError, match="names the same module"):
        so.to_momentum(m, layers=["layer1", "layer1"])
    with pytest.raises(ValueError, match=r"gamma == 0 cannot be inverted"):
        so.to_momentum(m, gamma=0.0, backward="exact")
    with pytest.raises(ValueError, match=r"gamma == 1.5, must be in \[0, 1\]"):
        so.to_momentum(m, gamma=1.5)
    with pytest.raises(ValueError, match="backward == 'fast', must be one of"):
        so.to_momentum(m, backward="fast")
    c = so.to_momentum(m, keep_first=False)
    with pytest.raises(ValueError, match=r"block layer2\.0 changes the shape \(1, 64, 8, 8\) -> \(1, 128, 4, 4\)"):
        c(torch.randn(1, 3, 32, 32))


# --------------------------------------------------------------------------------------------
# Generic sequences: the recursion itself, keyword arguments, learnable gamma, errors
# --------------------------------------------------------------------------------------------
class ScaledBlock(nn.Module):
    """``B(x, scale) = tanh(W x) * scale`` (not of the form x + f(x))."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x, scale=1.0):
        return torch.tanh(self.lin(x)) * scale


class Model(nn.Module):
    """Its forward loops over the blocks itself (a plain nn.Sequential passes no kwargs); the
    tests call the converted container ``c.blocks`` directly."""

    def __init__(self, d=4, depth=5):
        super().__init__()
        self.blocks = nn.Sequential(*[ScaledBlock(d) for _ in range(depth)])
        self.head = nn.Linear(d, 1)

    def forward(self, x, scale=1.0):
        for b in self.blocks:
            x = b(x, scale=scale)
        return self.head(x)


def _by_hand(blocks, x, gamma, keep_first, scale):
    """The documented recursion, written out: x_1 = B_0(x_0); v <- gamma v + (1-gamma)(B(x) - x)."""
    blocks = list(blocks)
    if keep_first:
        x, blocks = blocks[0](x, scale=scale), blocks[1:]
    v = torch.zeros_like(x)
    for b in blocks:
        v = gamma * v + (1 - gamma) * (b(x, scale=scale) - x)
        x = x + v
    return x


@pytest.mark.parametrize("keep_first", [True, False])
@pytest.mark.parametrize("backward", ["autograd", "exact", "float"])
def test_sequence_recursion_and_kwargs(backward, keep_first):
    m = Model().to(D)
    c = so.to_momentum(m, layers=["blocks"], gamma=0.7, backward=backward, keep_first=keep_first)
    x = torch.randn(6, 4, dtype=D)
    scale = torch.tensor(0.8, dtype=D, requires_grad=True)  # a tensor kwarg needing a gradient
    out = c.blocks(x, scale=scale)
    ref_scale = scale.detach().clone().requires_grad_(True)
    ref = _by_hand(m.blocks, x, 0.7, keep_first, ref_scale)
    # exact: states rounded to 2**-46 over 5 layers; float: the inverse divides by 0.7 five times
    tol = {"autograd": 1e-14, "exact": 1e-12, "float": 1e-12}[backward]
    assert rel_err(out, ref) <= tol
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    assert abs(float(scale.grad - ref_scale.grad)) <= tol * abs(float(ref_scale.grad))
    for pc, pm in zip(c.blocks.parameters(), m.blocks.parameters(), strict=True):
        assert rel_err(pc.grad, pm.grad) <= 100 * tol


def test_learnable_gamma_is_shared_and_saved():
    gamma = nn.Parameter(torch.tensor(0.8))
    m = Model()
    c = so.to_momentum(m, layers=["blocks"], gamma=gamma, backward="exact")
    assert isinstance(c.blocks.gamma, nn.Parameter) and c.blocks.gamma is not gamma
    assert set(c.state_dict()) - set(m.state_dict()) == {"blocks.gamma"}
    c.blocks(torch.randn(3, 4)).sum().backward()
    assert c.blocks.gamma.grad is not None and float(c.blocks.gamma.grad.abs()) > 0


@pytest.mark.parametrize("backward", ["autograd", "exact"])
def test_gamma_from_a_graph_keeps_its_gradient(backward):
    # a gamma computed from other parameters (a hypernetwork, a schedule) reaches them, as it does
    # for MomentumResNet: the converted container stores gamma the same way
    raw = torch.tensor(0.5, dtype=D, requires_grad=True)
    m = Model().to(D)
    c = so.to_momentum(m, layers=["blocks"], gamma=torch.sigmoid(raw) + 0.2, backward=backward)
    x = torch.randn(3, 4, dtype=D)
    c.blocks(x).pow(2).sum().backward()
    raw_ref = raw.detach().clone().requires_grad_(True)
    _by_hand(m.blocks, x, torch.sigmoid(raw_ref) + 0.2, True, 1.0).pow(2).sum().backward()
    assert raw.grad is not None and float(raw_ref.grad.abs()) > 0
    assert abs(float(raw.grad - raw_ref.grad)) <= 1e-9 * abs(float(raw_ref.grad))


def test_generic_errors():
    with pytest.raises(TypeError, match="no default `layers` for a Model"):
        so.to_momentum(Model())
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        so.to_momentum([nn.Linear(2, 2)])
    holder = nn.Module()
    holder.blocks = nn.ModuleList([nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="'blocks' is a ModuleList, which to_momentum cannot convert"):
        so.to_momentum(holder, layers=["blocks"])
    with pytest.raises(ValueError, match="has no submodule 'blocks.9'"):
        so.to_momentum(Model(), layers=["blocks.9"])
    with pytest.raises(TypeError, match="keep_first must be a bool"):
        so.to_momentum(Model(), layers=["blocks"], keep_first=1)
    # a shape-changing block inside a converted sequence, named by its path
    seq = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3))
    c = so.to_momentum(seq, layers=[""], backward="autograd")
    with pytest.raises(ValueError, match=r"block 2 changes the shape \(2, 4\) -> \(2, 3\)"):
        c(torch.randn(2, 4))


# --------------------------------------------------------------------------------------------
# torch Transformers with padding masks
# --------------------------------------------------------------------------------------------
def _transformer(dropout=0.0, nested=True):
    torch.manual_seed(0)
    m = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=3, num_decoder_layers=3,
                       dim_feedforward=32, dropout=dropout, batch_first=True)
    if not nested:
        m.encoder.enable_nested_tensor = m.encoder.use_nested_tensor = False
    return m.to(D)


def _batch():
    g = torch.Generator().manual_seed(5)
    src = torch.randn(3, 7, 16, generator=g, dtype=D)
    tgt = torch.randn(3, 5, 16, generator=g, dtype=D)
    src_pad = torch.zeros(3, 7, dtype=torch.bool)
    src_pad[1, 5:] = True
    src_pad[2, 3:] = True
    tgt_pad = torch.zeros(3, 5, dtype=torch.bool)
    tgt_pad[2, 4:] = True
    kwargs = dict(src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                  memory_key_padding_mask=src_pad,
                  tgt_mask=torch.ones(5, 5, dtype=torch.bool).triu(1), tgt_is_causal=True)
    return src, tgt, kwargs


def test_transformer_structure_and_keys():
    m = _transformer()
    c = so.to_momentum(m)
    assert isinstance(c.encoder, MomentumTransformerEncoder) and isinstance(c.decoder, MomentumTransformerDecoder)
    assert isinstance(c.encoder, nn.TransformerEncoder)  # still one, for code that checks
    assert type(m.encoder) is nn.TransformerEncoder
    assert list(c.state_dict()) == list(m.state_dict())
    c.load_state_dict(m.state_dict(), strict=True)
    # the encoder or decoder on its own, and naming the container instead of its layers
    enc = so.to_momentum(m.encoder)
    assert isinstance(enc, MomentumTransformerEncoder) and list(enc.state_dict()) == list(m.encoder.state_dict())
    assert isinstance(so.to_momentum(m, layers=["decoder"]).decoder, MomentumTransformerDecoder)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch's own, in the original
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_transformer_gamma0_reproduces_original(mode):
    m = _transformer()
    c = so.to_momentum(m, gamma=0.0, backward="autograd")
    getattr(m, mode)()
    getattr(c, mode)()
    src, tgt, kw = _batch()
    with torch.no_grad():  # no_grad: the original may take its fused inference path in eval mode
        y0, y1 = m(src, tgt, **kw), c(src, tgt, **kw)
    assert float((y1 - y0).abs().max() / y0.abs().max()) <= TOL_GAMMA0_F64


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch's own, in the original
@pytest.mark.parametrize("nested", [True, False])
def test_encoder_eval_padding(nested):
    """Eval mode with a padding mask: the original's nested-tensor path returns 0 at padded
    positions; the converted encoder agrees at every other position (and everywhere when
    ``enable_nested_tensor=False``)."""
    m = _transformer(nested=nested).eval()
    c = so.to_momentum(m, gamma=0.0, backward="autograd").eval()
    src, _, kw = _batch()
    pad = kw["src_key_padding_mask"]
    with torch.no_grad():
        y0 = m.encoder(src, src_key_padding_mask=pad)
        y1 = c.encoder(src, src_key_padding_mask=pad)
    keep = ~pad
    assert float((y1 - y0)[keep].abs().max() / y0.abs().max()) <= TOL_GAMMA0_F64
    if nested:
        assert float(y0[pad].abs().max()) == 0.0 and float(y1[pad].abs().max()) > 0
    else:
        assert float((y1 - y0).abs().max() / y0.abs().max()) <= TOL_GAMMA0_F64


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_transformer_exact_matches_autograd(mode):
    """Dropout 0.1 in train mode (masks replayed); eval mode must not use the fused kernels."""
    m = _transformer(dropout=0.1)
    src, tgt, kw = _batch()
    runs = {}
    for backward in ["autograd", "exact"]:
        c = so.to_momentum(m, gamma=0.8, backward=backward, keep_first=False)
        getattr(c, mode)()
        torch.manual_seed(1)
        s = src.clone().requires_grad_(True)
        out = c(s, tgt, **kw)
        out.sin().sum().backward()
        runs[backward] = (c, out, s.grad)
    (ca, oa, ga), (ce, oe, ge) = runs["autograd"], runs["exact"]
    # 2**-46 rounding over 6 layers, amplified by attention and LayerNorm: measured ~1e-13
    assert rel_err(oe, oa) <= 1e-11
    assert rel_err(ge, ga) <= 1e-11  # reaches the encoder input through the decoder's memory
    assert _max_param_rel(ca, ce) <= 1e-10


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_decoder_memory_gradient(backward):
    torch.manual_seed(0)
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 3).to(D)
    g = torch.Generator().manual_seed(2)
    tgt = torch.randn(3, 5, 16, generator=g, dtype=D)
    mem = torch.randn(3, 7, 16, generator=g, dtype=D)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    grads = {}
    for b in ["autograd", backward]:
        d = so.to_momentum(dec, gamma=0.8, backward=b, keep_first=False)
        mm = mem.clone().requires_grad_(True)
        d(tgt, mm, memory_key_padding_mask=pad).sin().sum().backward()
        grads[b] = mm.grad
    assert float(grads["autograd"][1, 4:].abs().max()) == 0.0  # padded memory gets no gradient
    # exact: 2**-46 rounding; float: 3 divisions by 0.8 of float64 rounding
    assert rel_err(grads[backward], grads["autograd"]) <= 1e-11
