"""Per-feature and learnable damping: per-feature eps in SecondOrderODE, per-feature gamma in
MomentumResNet (three backwards), gamma tied to a learnable eps by discretize (issue 15)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import secondorder as so
from secondorder._perfeature import TensorBitStore, rational_gammas
from secondorder._tied import TiedMomentumResNet

D = torch.float64


class Diag(nn.Module):
    """F(x) = -k * x (k per feature): each feature is its own scalar linear ODE."""

    def __init__(self, k):
        super().__init__()
        self.k = nn.Parameter(torch.as_tensor(k, dtype=D).clone())

    def forward(self, x):
        return -self.k * x


class Field(nn.Module):
    """A small nonlinear, time-dependent field F(t, x)."""

    def __init__(self, d, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(d, d).double()

    def forward(self, t, x):
        return torch.tanh(self.lin(x)) * (1 + 0.5 * t)


def _rel(grads, ref):
    num = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(grads, ref, strict=True)))
    return num / math.sqrt(sum(float(b.pow(2).sum()) for b in ref))


def _closed_form(eps, k, x0, v0, t):
    """x(t) of eps x'' + x' + k x = 0, x(0) = x0, x'(0) = v0 (distinct roots of eps r^2 + r + k)."""
    disc = np.sqrt(complex(1 - 4 * eps * k))
    r1, r2 = (-1 + disc) / (2 * eps), (-1 - disc) / (2 * eps)
    c2 = (v0 - r1 * x0) / (r2 - r1)
    c1 = x0 - c2
    return float((c1 * np.exp(r1 * t) + c2 * np.exp(r2 * t)).real)


# --------------------------------------------------------------------------------------------
# 1. per-feature eps in SecondOrderODE
# --------------------------------------------------------------------------------------------
def test_per_feature_eps_matches_closed_form_per_feature():
    eps = torch.tensor([0.05, 0.3, 2.0], dtype=D)  # overdamped, underdamped, strongly underdamped
    k = torch.tensor([1.0, 4.0, 3.0], dtype=D)
    x0 = torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.7, -1.0]], dtype=D)
    v0 = torch.tensor([[0.0, 1.0, -0.5], [2.0, 0.0, 0.25]], dtype=D)
    ode = so.SecondOrderODE(Diag(k), eps=eps, t1=1.5, rtol=1e-11, atol=1e-13)
    ts = torch.linspace(0, 1.5, 7, dtype=D)
    xs, us = ode.trajectory(x0, ts, v0=v0)
    for b in range(2):
        for i in range(3):
            want = [_closed_form(float(eps[i]), float(k[i]), float(x0[b, i]), float(v0[b, i]), float(t)) for t in ts]
            assert np.allclose(xs[:, b, i].detach().numpy(), want, rtol=0, atol=1e-8)
    # the same as the scalar model, feature by feature
    for i in range(3):
        scalar = so.SecondOrderODE(Diag(k[i]), eps=float(eps[i]), t1=1.5, rtol=1e-11, atol=1e-13)
        xi = scalar(x0[:, i:i + 1], v0=v0[:, i:i + 1])
        assert torch.allclose(ode(x0, v0)[:, i:i + 1], xi, rtol=0, atol=1e-8)


@pytest.mark.parametrize("adjoint", [False, True])
def test_per_feature_eps_gradient(adjoint):
    """d loss / d eps (per feature) against central finite differences, with and without the
    adjoint (eps is then one of the adjoint parameters)."""
    F = Field(3)
    x0 = torch.tensor([[0.5, -1.0, 0.25], [1.0, 0.2, -0.3]], dtype=D)
    eps0 = torch.tensor([0.2, 0.5, 1.5], dtype=D)
    eps = nn.Parameter(eps0.clone())
    ode = so.SecondOrderODE(F, eps=eps, rtol=1e-11, atol=1e-12, adjoint=adjoint)
    assert any(p is eps for p in ode.parameters())
    g = torch.autograd.grad(ode(x0).pow(2).sum(), [eps])[0]
    assert g.shape == (3,)

    def loss(e):
        with torch.no_grad():
            return float(so.SecondOrderODE(F, eps=e, rtol=1e-11, atol=1e-12)(x0).pow(2).sum())

    fd = torch.zeros(3, dtype=D)
    for i in range(3):
        de = torch.zeros(3, dtype=D)
        de[i] = 1e-5
        fd[i] = (loss(eps0 + de) - loss(eps0 - de)) / 2e-5
    assert float((g - fd).norm() / fd.norm()) < 1e-6


def test_per_feature_eps_broadcast_shapes_and_dtype():
    F = Field(4)
    x0 = torch.randn(2, 3, 4, dtype=D, generator=torch.Generator().manual_seed(0))
    for shape in [(4,), (1, 4), (3, 1), (1, 3, 4)]:
        eps = torch.full(shape, 0.7, dtype=D)
        assert torch.allclose(so.SecondOrderODE(F, eps=eps)(x0), so.SecondOrderODE(F, eps=0.7)(x0), rtol=0, atol=1e-12)
    # a float64 eps does not promote a float32 state
    F32 = Field(4).float()
    out = so.SecondOrderODE(F32, eps=torch.full((4,), 0.7, dtype=D))(x0.float())
    assert out.dtype == torch.float32


def test_per_feature_eps_errors():
    F = Field(3)
    with pytest.raises(ValueError, match="first-order model"):
        so.SecondOrderODE(F, eps=torch.tensor([0.5, 0.0, 1.0], dtype=D))
    with pytest.raises(ValueError, match=r"outside \(0, inf\)"):
        so.SecondOrderODE(F, eps=nn.Parameter(torch.tensor([0.5, -1.0, 1.0], dtype=D)))
    with pytest.raises(ValueError, match=r"outside \(0, inf\)"):
        so.SecondOrderODE(F, eps=torch.tensor([0.5, float("nan"), 1.0], dtype=D))
    with pytest.raises(TypeError, match="floating-point tensor"):
        so.SecondOrderODE(F, eps=torch.tensor([1, 2, 3]))
    ode = so.SecondOrderODE(F, eps=torch.tensor([0.5, 1.0], dtype=D))
    with pytest.raises(ValueError, match=r"eps has shape \(2,\), which does not broadcast"):
        ode(torch.ones(4, 3, dtype=D))
    e = nn.Parameter(torch.tensor([0.5, 1.0, 2.0], dtype=D))
    ode = so.SecondOrderODE(F, eps=e)
    with torch.no_grad():
        e[1] = -0.1  # drifted during training
    with pytest.raises(ValueError, match="must stay > 0"):
        ode(torch.ones(4, 3, dtype=D))


# --------------------------------------------------------------------------------------------
# 2. per-feature gamma in MomentumResNet
# --------------------------------------------------------------------------------------------
def _blocks(d, depth, seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(d, d), nn.Tanh()).double() for _ in range(depth)]


GAMMAS = [0.9, 0.5, 0.77, 0.3141592653589793, 1.0]  # short decimals, an irrational, 1


@pytest.mark.parametrize("backward", ["float", "exact"])
@pytest.mark.parametrize("shape", [(5,), (1, 5)])
def test_per_feature_gamma_gradients_match_autograd(backward, shape):
    fs = _blocks(5, 12)
    params = [p for f in fs for p in f.parameters()]
    x = torch.randn(7, 5, dtype=D, generator=torch.Generator().manual_seed(1))
    v0 = 0.1 * torch.randn(7, 5, dtype=D, generator=torch.Generator().manual_seed(2))
    grads = {}
    for mode in ["autograd", backward]:
        g = nn.Parameter(torch.tensor(GAMMAS, dtype=D).reshape(shape))
        xi = x.clone().requires_grad_(True)
        vi = v0.clone().requires_grad_(True)
        xN, vN = so.MomentumResNet(fs, gamma=g, backward=mode)(xi, v0=vi, return_velocity=True)
        loss = xN.pow(2).sum() + (vN * xN.detach()).sum()
        grads[mode] = torch.autograd.grad(loss, [xi, vi, g, *params])
    assert grads[backward][2].shape == shape
    # exact: reconstruction bit-exact, gradients equal up to summation order; float: the inverse
    # amplifies rounding by 1/gamma per layer (docs/theory.md §6.2): 0.314**-12 * 2**-52 ~ 2e-10
    tol = 1e-12 if backward == "exact" else 2**-52 * min(GAMMAS) ** -12
    assert _rel(grads[backward], grads["autograd"]) < tol
    assert _rel(grads[backward][2:3], grads["autograd"][2:3]) < tol  # d loss / d gamma alone


def test_per_feature_gamma_broadcast_over_channels_and_float32():
    """gamma of shape (C, 1) for x of shape (B, C, L); float32 states with a float64 gamma."""
    torch.manual_seed(0)
    f = [nn.Sequential(nn.Conv1d(3, 3, 3, padding=1), nn.Tanh()) for _ in range(6)]
    x = torch.randn(2, 3, 8)
    grads = {}
    for mode in ["autograd", "exact"]:
        g = nn.Parameter(torch.tensor([[0.9], [0.6], [0.99]], dtype=D))
        out = so.MomentumResNet(f, gamma=g, backward=mode)(x)
        assert out.dtype == torch.float32
        grads[mode] = torch.autograd.grad(out.pow(2).sum(), [g, *[p for m in f for p in m.parameters()]])
    assert grads["exact"][0].dtype == D and grads["exact"][0].shape == (3, 1)
    assert _rel(grads["exact"], grads["autograd"]) < 1e-5  # float32 rounding of the forward


def test_constant_per_feature_gamma_is_bit_identical_to_scalar():
    fs = _blocks(4, 10)
    x = torch.randn(3, 4, dtype=D, generator=torch.Generator().manual_seed(3))
    outs = []
    for gamma in [0.9, torch.full((4,), 0.9, dtype=D)]:
        xi = x.clone().requires_grad_(True)
        out = so.MomentumResNet(fs, gamma=gamma, backward="exact")(xi)
        outs.append((out.detach(), torch.autograd.grad(out.pow(2).sum(), xi)[0]))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_feature_exact_roundtrip_bit_exact_with_spills(dtype):
    """Small entries make the store grow by up to log2(1/0.01) ~ 6.6 bits per layer: the worst-case
    bound over the entries must spill in time, and the walk back must be bit-exact."""
    fs = [m.to(dtype) for m in _blocks(5, 40)]
    gamma = torch.tensor([0.01, 0.9, 0.5, 1.0, 0.3141592653589793], dtype=D)
    net = so.MomentumResNet(fs, gamma=gamma, backward="exact")
    x = torch.randn(6, 5, dtype=dtype, generator=torch.Generator().manual_seed(4))
    r = so.exact_roundtrip(net, x, v0=0.3 * x)
    assert r["bit_exact"]
    assert len(r["spills"]) >= 3  # 40 layers * 6.6 bits >> 53 bits
    assert torch.equal(r["x_N"], net(x, v0=0.3 * x))


def test_tensor_bit_store_algebra():
    """mul is within one quantum of V * n_i/d_i; k muls then k divs give back V and an empty store."""
    gen = torch.Generator().manual_seed(5)
    gamma = torch.tensor([0.9, 0.01, 0.3141592653589793, 1.0, 0.5], dtype=D)
    n, d, pairs = rational_gammas(gamma, D)
    nd = [(int(a), int(b)) for a, b in zip(n, d)]
    assert [nd[i] for i in (0, 1, 3, 4)] == [(9, 10), (1, 100), (1, 1), (1, 2)] and sorted(set(nd)) == pairs
    assert abs(int(n[2]) / int(d[2]) - math.pi / 10) < 1e-17
    V0 = torch.randint(-2**50, 2**50, (64, 5), generator=gen)
    store = TensorBitStore(V0, n, d, pairs)
    V, history = V0, []
    for _ in range(30):
        W = store.mul(V)
        exact = V.double() * (n.double() / d.double())
        assert float((W.double() - exact).abs().max()) <= 1.0 + 1e-6 * float(exact.abs().max())
        history.append(V)
        V = W
    assert store.spills  # the 0.01 entry adds ~6.6 bits per layer
    for k in reversed(range(30)):
        V = store.div(V)
        assert torch.equal(V, history[k])
    assert not bool(store.S.any())


def test_per_feature_gamma_errors():
    fs = _blocks(3, 2)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        so.MomentumResNet(fs, gamma=torch.tensor([0.5, 1.2, 0.9], dtype=D))
    with pytest.raises(ValueError, match="cannot be inverted"):
        so.MomentumResNet(fs, gamma=torch.tensor([0.5, 0.0, 0.9], dtype=D), backward="exact")
    so.MomentumResNet(fs, gamma=torch.tensor([0.5, 0.0, 0.9], dtype=D))  # autograd: gamma = 0 is fine
    with pytest.raises(TypeError, match="floating-point tensor"):
        so.MomentumResNet(fs, gamma=torch.tensor([1, 1, 1]))
    net = so.MomentumResNet(fs, gamma=torch.tensor([0.5, 0.9], dtype=D), backward="exact")
    with pytest.raises(ValueError, match=r"gamma has shape \(2,\), which does not broadcast"):
        net(torch.ones(4, 3, dtype=D))
    g = nn.Parameter(torch.tensor([0.5, 0.9, 0.8], dtype=D))
    net = so.MomentumResNet(fs, gamma=g, backward="exact")
    with torch.no_grad():
        g[0] = -0.01  # a learned gamma drifted
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        net(torch.ones(4, 3, dtype=D))


# --------------------------------------------------------------------------------------------
# 3. discretize with a learnable eps: gamma tied to eps
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps0", [torch.tensor(0.5, dtype=D), torch.tensor([0.3, 0.5, 2.0], dtype=D)])
def test_discretize_learnable_eps_gradients_every_backward(eps0):
    F = Field(3)
    x = torch.randn(4, 3, dtype=D, generator=torch.Generator().manual_seed(6))
    depth = 16
    grads = {}
    for mode in ["autograd", "float", "exact"]:
        eps = nn.Parameter(eps0.clone())
        ode = so.SecondOrderODE(F, eps=eps)
        net = so.discretize(ode, depth, backward=mode)
        assert isinstance(net, TiedMomentumResNet) and net.eps is eps and so.to_ode(net).eps is eps
        grads[mode] = torch.autograd.grad(net(x).pow(2).sum(), [eps, *F.parameters()])
    assert grads["exact"][0].shape == eps0.shape
    for mode in ["float", "exact"]:
        assert _rel(grads[mode], grads["autograd"]) < 1e-12
        assert _rel(grads[mode][:1], grads["autograd"][:1]) < 1e-12

    def loss(e):
        with torch.no_grad():
            return float(so.discretize(so.SecondOrderODE(F, eps=e), depth)(x).pow(2).sum())

    flat = eps0.reshape(-1)
    fd = torch.zeros_like(flat)
    for i in range(flat.numel()):
        de = torch.zeros_like(flat)
        de[i] = 1e-6
        fd[i] = (loss((flat + de).reshape(eps0.shape)) - loss((flat - de).reshape(eps0.shape))) / 2e-6
    assert float((grads["exact"][0].reshape(-1) - fd).norm() / fd.norm()) < 1e-7


def test_discretize_per_feature_eps_converges_to_ode():
    """The per-feature discretization is first order in h, like the scalar one."""
    eps = torch.tensor([0.2, 0.5, 1.5], dtype=D)
    k = torch.tensor([1.0, 4.0, 3.0], dtype=D)
    x0 = torch.tensor([[1.0, -0.5, 2.0]], dtype=D)
    want = torch.tensor([[_closed_form(float(eps[i]), float(k[i]), float(x0[0, i]), 0.0, 1.0) for i in range(3)]], dtype=D)
    Ns = [64, 128, 256, 512]
    errs = [float((so.discretize(so.SecondOrderODE(Diag(k), eps=eps), N)(x0) - want).detach().norm()) for N in Ns]
    slope = np.polyfit(np.log(Ns), np.log(errs), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.05)
    gamma = so.gamma_from_eps(eps, 64)
    assert torch.allclose(gamma, 1 - (1 / 64) / eps, rtol=0, atol=1e-15)
    assert torch.allclose(so.eps_from_gamma(gamma, 64), eps, rtol=1e-13, atol=0)
    back = so.to_ode(so.discretize(so.SecondOrderODE(Diag(k), eps=eps), 64))
    assert torch.allclose(back.eps, eps, rtol=1e-13, atol=0) and not isinstance(back.eps, nn.Parameter)


def test_discretize_learnable_eps_errors():
    F = Field(3)
    with pytest.raises(ValueError, match=r"ceil\(t1/min\(eps\)\) = 10"):
        so.discretize(so.SecondOrderODE(F, eps=torch.tensor([0.5, 0.1, 1.0], dtype=D)), 5)
    eps = nn.Parameter(torch.tensor([0.5, 0.3, 1.0], dtype=D))
    net = so.discretize(so.SecondOrderODE(F, eps=eps), 8, backward="exact")
    with pytest.raises(AttributeError, match="tied to eps"):
        net.gamma = 0.5
    with torch.no_grad():
        eps[1] = 0.1  # below h = 1/8
    with pytest.raises(ValueError, match="eps must stay > h"):
        net(torch.ones(2, 3, dtype=D))
    assert "eps" in dict(net.named_parameters()) and "gamma" not in net.state_dict()


@pytest.mark.parametrize("backward", ["autograd", "exact"])
def test_training_moves_eps_towards_the_data(backward):
    """Fit the per-feature damping of eps x'' + x' = -x: eps starts at 0.8 for both features,
    the data come from eps = (0.4, 1.5). Sixty Adam steps lower the loss by 1000x and bring each
    eps to within 0.05 of its own target (one down, one up)."""
    target_eps = torch.tensor([0.4, 1.5], dtype=D)
    x0 = torch.tensor([[1.0, 1.0], [-0.5, 0.8]], dtype=D)
    v0 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=D) / 32  # the network's velocity is h x'
    F = Diag([1.0, 1.0])
    F.k.requires_grad_(False)
    with torch.no_grad():
        y = so.discretize(so.SecondOrderODE(F, eps=target_eps), 32)(x0, v0=v0)
    eps = nn.Parameter(torch.full((2,), 0.8, dtype=D))
    net = so.discretize(so.SecondOrderODE(F, eps=eps), 32, backward=backward)
    opt = torch.optim.Adam([eps], lr=0.05)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (net(x0, v0=v0) - y).pow(2).sum()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 1e-3 * losses[0]
    assert torch.allclose(eps.detach(), target_eps, rtol=0, atol=0.05)


def test_per_feature_gamma_from_a_graph_gets_its_gradient():
    """gamma = sigmoid(w) (a non-leaf per-feature tensor, e.g. from a hypernetwork): the exact
    backward's gradient reaches w as autograd's does."""
    fs = _blocks(4, 8)
    x = torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(7))
    grads = {}
    for mode in ["autograd", "exact"]:
        w = torch.tensor([2.0, 0.5, -0.3, 4.0], dtype=D, requires_grad=True)
        net = so.MomentumResNet(fs, gamma=torch.sigmoid(w), backward=mode)
        grads[mode] = torch.autograd.grad(net(x).pow(2).sum(), [w])
    assert _rel(grads["exact"], grads["autograd"]) < 1e-12
