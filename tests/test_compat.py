"""secondorder.compat: the momentumnet 0.10 interface, checked against its rule and, when the
official package is installed, against the package itself."""

import copy

import pytest
import torch
from torch import nn

from secondorder.compat import MomentumNet, transform_to_momentumnet


def functions(depth=6, d=5, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, d)).double() for _ in range(depth)]


def official_rule(fs, x, gamma, is_residual=True, v=None):
    # momentumnet 0.10's documented update: v <- gamma v + (1-gamma) f, x <- x + v
    v = torch.zeros_like(x) if v is None else v
    for f in fs:
        fx = f(x) if is_residual else f(x) - x
        v = gamma * v + (1 - gamma) * fx
        x = x + v
    return x


@pytest.mark.parametrize("is_residual", [True, False])
def test_forward_rule_and_keys(is_residual):
    fs = functions()
    x = torch.randn(3, 5, dtype=torch.float64)
    net = MomentumNet(fs, gamma=0.8, is_residual=is_residual)
    assert torch.equal(net(x), official_rule(fs, x, 0.8, is_residual))
    assert list(net.state_dict())[:2] == ["network.0.0.weight", "network.0.0.bias"]
    init = nn.Linear(5, 5).double()
    net = MomentumNet(fs, 0.8, init_speed=True, init_function=init)
    assert torch.equal(net(x), official_rule(fs, x, 0.8, v=init(x)))
    assert "network.init.weight" in net.state_dict()


def test_memory_free_mode_gradients():
    fs = functions(depth=300)
    x = torch.randn(3, 5, dtype=torch.float64)
    grads = []
    for use_backprop in (True, False):
        gamma = nn.Parameter(torch.tensor(0.9, dtype=torch.float64))
        net = MomentumNet(fs, gamma, use_backprop=use_backprop)
        for p in net.parameters():
            p.grad = None
        (net(x) ** 2).sum().backward()
        grads.append([gamma.grad] + [p.grad.clone() for p in net.network.parameters()])
    # learnable gamma gets its gradient in the memory-saving mode too; fixed-point rounding only
    # (quantum 2**-46 over 300 layers): norm-wise relative error <= 1e-9 for every tensor
    for a, b in zip(*grads):
        assert a is not None
        assert float((a - b).norm() / b.norm()) <= 1e-9


def test_errors():
    with pytest.raises(ValueError, match=r"gamma == 1.5, must be in \[0, 1\]"):
        MomentumNet(functions(), 1.5)
    with pytest.raises(ValueError, match="init_speed=True needs an init_function"):
        MomentumNet(functions(), 0.5, init_speed=True)
    model = nn.Sequential(nn.Sequential(*functions(3)))
    with pytest.raises(ValueError, match="has no submodule 'layer9'"):
        transform_to_momentumnet(model, sub_layers=["layer9"])


def test_transform_torchvision_resnet():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(weights=None, num_classes=10).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    m0 = transform_to_momentumnet(model, gamma=0.0, use_backprop=True).eval()
    torch.testing.assert_close(m0(x), model(x), rtol=1e-12, atol=1e-12)  # x + (B(x) - x) rounding
    m = transform_to_momentumnet(model, gamma=0.9, use_backprop=False)
    assert "layer1.1.0.network.0.conv1.weight" in m.state_dict()  # the official key layout
    assert m(x).shape == (2, 10)


def test_against_official_package():
    mn = pytest.importorskip("momentumnet")
    fs = functions(depth=8)
    x = torch.randn(4, 5, dtype=torch.float64)
    ours = MomentumNet(fs, gamma=0.9, is_residual=False)
    theirs = mn.MomentumNet(copy.deepcopy(fs), gamma=0.9, is_residual=False)
    ours.load_state_dict(theirs.state_dict())  # strict: same keys
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_learnable_gamma_state_dict_matches_the_official_layout():
    fs = functions(depth=4)
    gamma = nn.Parameter(torch.tensor(0.8, dtype=torch.float64))
    net = MomentumNet(fs, gamma, use_backprop=False)
    keys = set(net.state_dict())
    assert {"gamma", "network.gamma"} <= keys  # the official package registers it twice
    assert sum(p is gamma for p in net.parameters()) == 1  # ...but it is one parameter
    x = torch.randn(3, 5, dtype=torch.float64)
    (net(x) ** 2).sum().backward()
    assert gamma.grad is not None and gamma.grad != 0
    mn = pytest.importorskip("momentumnet")
    theirs = mn.MomentumNet(copy.deepcopy(fs), nn.Parameter(torch.tensor(0.3, dtype=torch.float64)))
    theirs.load_state_dict(net.state_dict())  # strict, both ways
    assert float(theirs.gamma.detach()) == 0.8
    ours = MomentumNet(functions(depth=4, seed=1), nn.Parameter(torch.tensor(0.1, dtype=torch.float64)))
    ours.load_state_dict(theirs.state_dict())
    assert float(ours.gamma.detach()) == 0.8
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_gamma_zero_without_backprop_stores_activations_and_warns_once(monkeypatch):
    import secondorder.compat as compat

    monkeypatch.setattr(compat, "_warned_gamma_zero", False)
    fs = functions()
    x = torch.randn(3, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match="gamma=0, use_backprop=False.*no memory is saved"):
        net = MomentumNet(fs, 0.0, use_backprop=False, is_residual=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        MomentumNet(fs, 0.0, use_backprop=False)
    assert torch.equal(net(x), official_rule(fs, x, 0.0, is_residual=False))
    ref = MomentumNet(fs, 0.0, use_backprop=True, is_residual=False)
    g = [torch.autograd.grad((m(x) ** 2).sum(), list(m.parameters())) for m in (net, ref)]
    for a, b in zip(*g):
        assert torch.equal(a, b)  # the same stored-activation backward


def test_residual_layers_spelling():
    model = nn.Sequential()
    model.add_module("blocks", nn.Sequential(*functions(4)))
    a = transform_to_momentumnet(model, residual_layers=["blocks"], gamma=0.5, is_residual=True, keep_first_layer=False)
    b = transform_to_momentumnet(model, sub_layers=["blocks"], gamma=0.5, is_residual=True, keep_first_layer=False)
    assert list(a.state_dict()) == list(b.state_dict())
    assert list(a.state_dict())[:2] == ["blocks.0.network.0.0.weight", "blocks.0.network.0.0.bias"]
    x = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    with pytest.raises(TypeError, match="sub_layers or residual_layers"):
        transform_to_momentumnet(model, ["blocks"], residual_layers=["blocks"])


def _transformer(seed=0, layers=3, d=16):
    torch.manual_seed(seed)
    return nn.Transformer(d, 2, layers, layers, 32, dropout=0.0).double()


@pytest.mark.parametrize("use_backprop", [True, False])
@pytest.mark.parametrize("keep_first_layer", [False, True])
def test_transformer_conversion_runs_trains_and_follows_the_rule(use_backprop, keep_first_layer):
    net = _transformer()
    src = torch.randn(7, 2, 16, dtype=torch.float64)
    tgt = torch.randn(5, 2, 16, dtype=torch.float64)
    mask = net.generate_square_subsequent_mask(5, dtype=torch.float64)
    gamma = 0.9
    m = transform_to_momentumnet(net, ["encoder.layers", "decoder.layers"], gamma=gamma,
                                 use_backprop=use_backprop, keep_first_layer=keep_first_layer)
    out = m(src, tgt, tgt_mask=mask)

    def stack(layers, x, *args, **kwargs):
        start = 0
        if keep_first_layer:
            x, start = layers[0](x, *args, **kwargs), 1
        v = torch.zeros_like(x)
        for layer in layers[start:]:
            v = gamma * v + (1 - gamma) * (layer(x, *args, **kwargs) - x)
            x = x + v
        return x

    with torch.no_grad():
        memory = net.encoder.norm(stack(net.encoder.layers, src, src_mask=None, is_causal=False))
        ref = net.decoder.norm(stack(net.decoder.layers, tgt, memory, tgt_mask=mask, tgt_is_causal=True))
    # float64, 3 layers each: the exact path's fixed-point rounding (2**-52) and float reordering
    torch.testing.assert_close(out.detach(), ref, rtol=1e-10, atol=1e-10)
    # it trains: gradients equal those of the stored-activation conversion
    (out**2).sum().backward()
    ref_m = transform_to_momentumnet(net, ["encoder.layers", "decoder.layers"], gamma=gamma,
                                     use_backprop=True, keep_first_layer=keep_first_layer)
    (ref_m(src, tgt, tgt_mask=mask) ** 2).sum().backward()
    num = sum(float((p.grad - q.grad).pow(2).sum()) for p, q in zip(m.parameters(), ref_m.parameters()))
    den = sum(float(q.grad.pow(2).sum()) for q in ref_m.parameters())
    assert (num / den) ** 0.5 <= 1e-10
    # the official key layout
    key = "encoder.layers.1.0.network.0.self_attn.in_proj_weight" if keep_first_layer else "encoder.layers.0.network.0.self_attn.in_proj_weight"
    assert key in m.state_dict()
