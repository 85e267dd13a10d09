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
    with pytest.raises(ValueError, match="gamma == 0 cannot be inverted"):
        MomentumNet(functions(), 0.0, use_backprop=False)
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
