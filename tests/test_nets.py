"""Discrete models: forward rules against closed forms, every backward mode against autograd."""

import math

import pytest
import torch
from problems import Scale, mlp_functions, rel_err
from torch import nn

import secondorder as so
from secondorder._steps import momentum_step


def loss_and_grads(net, x, *args, v0=None, **kwargs):
    """Gradients of a loss that uses both outputs, w.r.t. x, v0 and every parameter."""
    net.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    if isinstance(net, so.RevNet):
        out = net(x, *args, **kwargs)
        loss = (out**2).sum() + out.sin().sum()
        loss.backward()
        return [x.grad] + [p.grad.clone() for p in net.parameters()]
    v = None if v0 is None else v0.detach().clone().requires_grad_(True)
    out, vN = net(x, *args, v0=v, return_velocity=True, **kwargs)
    loss = (out**2).sum() + (vN * out.cos()).sum()
    loss.backward()
    gs = [x.grad] + ([v.grad] if v is not None else [])
    return gs + [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]


# -- forward rules -------------------------------------------------------------------------------
def test_linear_momentum_matches_matrix_power():
    # docs/theory.md §2.5: f_n(x) = h lam x  =>  (x_N, v_N) = M^N (x_0, 0), M = [[1+c, g], [c, g]]
    N, lam, gamma = 37, -1.7, 0.8
    h = 1.0 / N
    fs = [Scale(h * lam) for _ in range(N)]
    x0 = torch.tensor([[0.3], [-1.2]], dtype=torch.float64)
    xN, vN = so.MomentumResNet(fs, gamma)(x0, return_velocity=True)
    c = (1 - gamma) * h * lam
    M = torch.tensor([[1 + c, gamma], [c, gamma]], dtype=torch.float64)
    ref = torch.linalg.matrix_power(M, N) @ torch.stack([x0[:, 0], torch.zeros(2, dtype=torch.float64)])
    torch.testing.assert_close(xN[:, 0], ref[0], rtol=1e-13, atol=0)  # float64 rounding x depth
    torch.testing.assert_close(vN[:, 0], ref[1], rtol=1e-12, atol=1e-15)


def test_gamma_zero_is_resnet_and_trajectory_matches_forward():
    fs = mlp_functions(9)
    x = torch.randn(4, 6, dtype=torch.float64)
    res, last = so.ResNet(fs)(x, return_velocity=True)
    mom, v = so.MomentumResNet(fs, gamma=0.0)(x, return_velocity=True)
    assert torch.equal(res, mom) and torch.equal(last, v)
    net = so.MomentumResNet(fs, gamma=0.7)
    xs, vs = net.trajectory(x, return_velocity=True)
    assert xs.shape == (10, 4, 6) and vs.shape == (10, 4, 6)
    out, vN = net(x, return_velocity=True)
    assert torch.equal(xs[-1], out) and torch.equal(vs[-1], vN) and torch.equal(xs[0], x)
    assert torch.equal(so.ResNet(fs).trajectory(x)[-1], res)


def test_init_velocity_and_v0():
    fs = mlp_functions(5)
    x = torch.randn(3, 6, dtype=torch.float64)
    init = nn.Linear(6, 6).double()
    a = so.MomentumResNet(fs, 0.9, init_velocity=init)(x)
    b = so.MomentumResNet(fs, 0.9)(x, v0=init(x))
    assert torch.equal(a, b)
    # v0 given explicitly wins over init_velocity
    v0 = torch.randn_like(x)
    assert torch.equal(so.MomentumResNet(fs, 0.9, init_velocity=init)(x, v0=v0), so.MomentumResNet(fs, 0.9)(x, v0=v0))


# -- memory-free backward against autograd -------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_exact_gradients_match_autograd_deep_float64(gamma):
    # float64 fixed point: quantum 2**-46 = 1.4e-14 per layer, ~1 quantum from the gamma product,
    # accumulated over 2000 layers and amplified by <= 1/(1-gamma): observed <= 5e-11; bound 1e-9
    depth = 2000
    fs = mlp_functions(depth, d=4, h=8, scale=0.3)
    x = torch.randn(3, 4, dtype=torch.float64)
    v0 = 0.1 * torch.randn(3, 4, dtype=torch.float64)
    ref = loss_and_grads(so.MomentumResNet(fs, gamma), x, v0=v0)
    got = loss_and_grads(so.MomentumResNet(fs, gamma, backward="exact"), x, v0=v0)
    assert rel_err(got, ref) <= 1e-9


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_exact_gradients_match_autograd_deep_float32(gamma):
    # float32: the exact path's fixed point (2**-32) is finer than float32 itself, so the gap to
    # autograd is autograd's own float32 rounding over 3000 layers (measured 4e-6..6e-6, the same
    # size as float32 autograd's error against float64); bound 1e-4 from the contract
    fs = mlp_functions(3000, d=4, h=8, dtype=torch.float32, scale=0.3)
    x = torch.randn(3, 4)
    ref = loss_and_grads(so.MomentumResNet(fs, gamma), x)
    got = loss_and_grads(so.MomentumResNet(fs, gamma, backward="exact"), x)
    assert rel_err(got, ref) <= 1e-4


def test_exact_float32_where_float_fails():
    # docs/theory.md §6.2: the float inverse loses 1/gamma per layer: 0.9**-1000 ~ 1e46 >> 1/eps32
    depth, gamma = 1000, 0.9
    fs = mlp_functions(depth, d=4, h=8, dtype=torch.float32, scale=0.3)
    x = torch.randn(3, 4)
    ref = loss_and_grads(so.MomentumResNet(fs, gamma), x)
    exact = loss_and_grads(so.MomentumResNet(fs, gamma, backward="exact"), x)
    assert rel_err(exact, ref) <= 1e-4  # float32 rounding of the forward, not of the inverse
    # the float inverse's reconstruction is NaN by then: its self-check refuses to return gradients
    with pytest.raises(so.ReconstructionError, match="float backward reconstructed.*NaN"):
        loss_and_grads(so.MomentumResNet(fs, gamma, backward="float"), x)


def test_float_inverse_error_grows_like_inverse_gamma_power():
    # reconstruction error of the float inverse ~ eps * gamma**-N: fit the growth rate over depth
    gamma = 0.8
    errs, depths = [], [20, 40, 60, 80, 100]
    fs_all = mlp_functions(max(depths), d=8, h=8, dtype=torch.float32, scale=0.5)
    x = torch.randn(64, 8)
    for N in depths:
        net = so.MomentumResNet(fs_all[:N], gamma)
        with torch.no_grad():
            xN, vN = net(x, return_velocity=True)
            x0, _ = net.inverse(xN, vN)
        errs.append(float((x0 - x).abs().max()))
    slope = torch.tensor([math.log(e) for e in errs]).diff().mean() / 20
    # slope of log error per layer: log(1/gamma) = 0.223 (band: rounding noise on 5 points)
    assert 0.15 < float(slope) < 0.3
    assert errs[0] < 1e-3 < errs[-1]


def test_float_mode_matches_autograd_when_shallow():
    fs = mlp_functions(20)
    x = torch.randn(3, 6, dtype=torch.float64)
    ref = loss_and_grads(so.MomentumResNet(fs, 0.9), x)
    got = loss_and_grads(so.MomentumResNet(fs, 0.9, backward="float"), x)
    assert rel_err(got, ref) <= 1e-12  # float64 inverse over 20 layers: eps * 0.9**-20 ~ 1e-15


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_weight_tying_accumulates(backward):
    f = mlp_functions(1)[0]
    g = mlp_functions(1, seed=1)[0]
    fs = [f, g, f, f, g, f] * 5
    x = torch.randn(3, 6, dtype=torch.float64)
    ref = loss_and_grads(so.MomentumResNet(fs, 0.9), x)
    got = loss_and_grads(so.MomentumResNet(fs, 0.9, backward=backward), x)
    assert len(ref) == 1 + 4 + 4  # x, then f's and g's parameters, each once
    assert rel_err(got, ref) <= 1e-10  # 30 layers of float64 fixed point (2**-46)


@pytest.mark.parametrize("backward", ["autograd", "exact", "float"])
def test_learnable_gamma_gradient(backward):
    fs = mlp_functions(50)
    x = torch.randn(3, 6, dtype=torch.float64)

    def grad_gamma(mode):
        gamma = nn.Parameter(torch.tensor(0.85, dtype=torch.float64))
        net = so.MomentumResNet(fs, gamma, backward=mode)
        out, v = net(x, return_velocity=True)
        ((out**2).sum() + v.sum()).backward()
        return gamma.grad

    ref = grad_gamma("autograd")
    got = grad_gamma(backward)
    assert got is not None and ref.abs() > 1e-3
    # exact: gamma 0.85 = 17/20 exactly; fixed-point rounding over 50 layers
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=0)
    # and against central finite differences of the autograd forward
    def loss(g):
        out, v = so.MomentumResNet(fs, g)(x, return_velocity=True)
        return float(((out**2).sum() + v.sum()).detach())

    fd = (loss(0.85 + 1e-6) - loss(0.85 - 1e-6)) / 2e-6
    assert abs(float(ref) - fd) <= 1e-6 * abs(fd)  # O(h^2) truncation + 1e-10 rounding


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_gradcheck_small(backward):
    fs = mlp_functions(4, d=3, h=4)
    gamma = torch.tensor(0.75, dtype=torch.float64, requires_grad=True)
    net = so.MomentumResNet(fs, nn.Parameter(gamma.detach().clone()), backward=backward)

    def fn(x, v0, *params):
        with torch.no_grad():
            for p, q in zip(net.parameters(), params):
                p.copy_(q)
        return net(x, v0=v0, return_velocity=True)

    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    v0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    # check gradients w.r.t. the inputs (parameters are checked against autograd elsewhere);
    # fixed-point quantum 1.4e-14 is far below gradcheck's eps 1e-6 and atol 1e-5
    assert torch.autograd.gradcheck(lambda a, b: net(a, v0=b, return_velocity=True), (x, v0))


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_extra_args_and_kwargs_reach_every_function(backward):
    class Gated(nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.lin = mlp_functions(1, seed=seed)[0]

        def forward(self, x, context, *, mask=None):
            out = self.lin(x + context)
            return out if mask is None else out * mask

    fs = [Gated(i) for i in range(12)]
    x = torch.randn(5, 6, dtype=torch.float64)
    context = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(5, 6) > 0.3).double()

    def run(mode):
        context.grad = None
        net = so.MomentumResNet(fs, 0.9, backward=mode)
        gs = loss_and_grads(net, x, context, mask=mask)
        return gs + [context.grad.clone()]

    ref, got = run("autograd"), run(backward)
    assert rel_err(got, ref) <= 1e-10
    # the mask is not dropped: changing it changes the output
    net = so.MomentumResNet(fs, 0.9, backward=backward)
    assert not torch.allclose(net(x, context, mask=mask), net(x, context))


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_dropout_masks_are_replayed(backward):
    fs = [nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Dropout(0.4), nn.Linear(12, 6)).double() for _ in range(30)]
    x = torch.randn(8, 6, dtype=torch.float64)
    torch.manual_seed(123)
    ref = loss_and_grads(so.MomentumResNet(fs, 0.9), x)
    after_ref = torch.rand(3)
    torch.manual_seed(123)
    got = loss_and_grads(so.MomentumResNet(fs, 0.9, backward=backward), x)
    after_got = torch.rand(3)
    assert rel_err(got, ref) <= 1e-10  # same masks; fixed-point rounding only
    assert torch.equal(after_ref, after_got)  # the backward leaves the global RNG where autograd does


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_batchnorm_statistics_updated_once_and_gradients_match(backward):
    def make():
        torch.manual_seed(5)
        return [nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh()).double() for _ in range(6)]

    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    ref_net = so.MomentumResNet(make(), 0.9)
    got_net = so.MomentumResNet(make(), 0.9, backward=backward)
    ref, got = loss_and_grads(ref_net, x), loss_and_grads(got_net, x)
    assert rel_err(got, ref) <= 1e-10
    for a, b in zip(ref_net.buffers(), got_net.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert int(got_net.functions[0][1].num_batches_tracked) == 1


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_second_backward_with_retain_graph(backward):
    net = so.MomentumResNet(mlp_functions(30), 0.9, backward=backward)
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    out = net(x).sum()
    (g1,) = torch.autograd.grad(out, x, retain_graph=True)
    (g2,) = torch.autograd.grad(out, x)
    assert torch.equal(g1, g2)


def test_no_grad_and_depth_zero():
    x = torch.randn(2, 6, dtype=torch.float64)
    net = so.MomentumResNet(mlp_functions(10), 0.9, backward="exact")
    with torch.no_grad():
        a = net(x)
    b = net(x.requires_grad_(True))
    assert torch.equal(a, b.detach())  # same fixed-point forward with or without a graph
    empty = so.MomentumResNet([], 0.9, backward="exact")
    # depth 0: the input rounded to the fixed-point quantum 2**-46 (round to nearest)
    torch.testing.assert_close(empty(x), x.detach(), rtol=0, atol=2.0**-47)


# -- RevNet ----------------------------------------------------------------------------------------
def coupling_functions(depth, d1, d2, seed=0):
    g = torch.Generator().manual_seed(seed)
    F = [nn.Sequential(nn.Linear(d2, 8), nn.Tanh(), nn.Linear(8, d1)).double() for _ in range(depth)]
    G = [nn.Sequential(nn.Linear(d1, 8), nn.Tanh(), nn.Linear(8, d2)).double() for _ in range(depth)]
    with torch.no_grad():
        for m in F + G:
            for p in m.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return F, G


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_revnet_gradients_and_inverse(backward):
    F, G = coupling_functions(300, 3, 4)  # odd split: x1 has 3 features, x2 has 4
    x = torch.randn(5, 7, dtype=torch.float64)
    ref = loss_and_grads(so.RevNet(F, G), x)
    got = loss_and_grads(so.RevNet(F, G, backward=backward), x)
    assert rel_err(got, ref) <= 1e-9
    net = so.RevNet(F, G)
    with torch.no_grad():
        y = net(x)
        torch.testing.assert_close(net.inverse(y), x, rtol=0, atol=1e-9)
        assert torch.equal(net.trajectory(x)[-1], y)


def test_revnet_dim_for_sequences():
    F, G = coupling_functions(4, 2, 2)
    x = torch.randn(3, 5, 4, dtype=torch.float64)  # (N, L, D): split the feature dimension
    y = so.RevNet(F, G, dim=-1)(x)
    x1, x2 = x[..., :2], x[..., 2:]
    for f, g in zip(F, G):
        x1 = x1 + f(x2)
        x2 = x2 + g(x1)
    torch.testing.assert_close(y, torch.cat([x1, x2], -1), rtol=0, atol=0)


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1.5, -0.1, float("nan")])
def test_gamma_out_of_range(gamma):
    with pytest.raises(ValueError, match=r"gamma == .*must be in \[0, 1\]"):
        so.MomentumResNet(mlp_functions(2), gamma)


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_gamma_zero_with_invertible_backward(backward):
    with pytest.raises(ValueError, match="gamma == 0 cannot be inverted"):
        so.MomentumResNet(mlp_functions(2), 0.0, backward=backward)


def test_learned_gamma_leaving_range_is_caught():
    gamma = nn.Parameter(torch.tensor(0.9))
    net = so.MomentumResNet(mlp_functions(2, dtype=torch.float32), gamma)
    with torch.no_grad():
        gamma.fill_(1.2)
    with pytest.raises(ValueError, match=r"gamma == 1.2.*must be in \[0, 1\]"):
        net(torch.randn(2, 6))


def test_unknown_backward():
    with pytest.raises(ValueError, match=r"backward == 'exakt', must be one of 'autograd', 'exact', 'float'"):
        so.MomentumResNet(mlp_functions(2), 0.9, backward="exakt")
    with pytest.raises(ValueError, match="backward =="):
        so.RevNet(*coupling_functions(1, 2, 2), backward="reversible")


@pytest.mark.parametrize("backward", ["autograd", "exact", "float"])
def test_shape_change_names_layer(backward):
    fs = mlp_functions(3) + [nn.Linear(6, 5).double()] + mlp_functions(2)
    with pytest.raises(ValueError, match=r"residual function 3 returned shape \(2, 5\) for an input of shape \(2, 6\)"):
        so.MomentumResNet(fs, 0.9, backward=backward)(torch.randn(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"residual function 3 returned shape"):
        so.ResNet(fs)(torch.randn(2, 6, dtype=torch.float64))
    F, G = coupling_functions(3, 2, 2)
    G[1] = nn.Linear(2, 3).double()
    with pytest.raises(ValueError, match=r"G function 1 returned shape"):
        so.RevNet(F, G, backward=backward)(torch.randn(2, 4, dtype=torch.float64))


def test_exact_path_nan_and_overflow():
    fs = mlp_functions(5)
    x = torch.randn(2, 6, dtype=torch.float64)
    x[0, 0] = float("nan")
    with pytest.raises(so.FixedPointOverflowError, match="non-finite"):
        so.MomentumResNet(fs, 0.9, backward="exact")(x)

    class Blowup(nn.Module):
        def forward(self, x):
            return 100.0 * x + 1.0

    net = so.MomentumResNet([Blowup() for _ in range(10)], 0.5, backward="exact")
    with pytest.raises(so.FixedPointOverflowError, match=r"layer \d+ reached \|value\| = .*fixed_point_bits"):
        net(torch.ones(2, 3, dtype=torch.float64))
    # the knob works: fewer fractional bits give more range
    out = so.MomentumResNet([Blowup() for _ in range(3)], 0.5, backward="exact", fixed_point_bits=20)(torch.ones(2, 3, dtype=torch.float64))
    assert torch.isfinite(out).all()


def test_other_argument_errors():
    fs = mlp_functions(2)
    x = torch.randn(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"v0 has shape \(2, 5\)"):
        so.MomentumResNet(fs, 0.9)(x, v0=torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="ResNet has no velocity"):
        so.ResNet(fs)(x, v0=torch.zeros_like(x))
    with pytest.raises(NotImplementedError, match="no closed-form inverse"):
        so.ResNet(fs).inverse(x)
    with pytest.raises(ValueError, match="RevNet has no velocity"):
        so.RevNet(*coupling_functions(1, 3, 3))(x, return_velocity=True)
    with pytest.raises(ValueError, match="same length"):
        so.RevNet(*coupling_functions(2, 3, 3)[:1], coupling_functions(3, 3, 3)[1])
    with pytest.raises(TypeError, match=r"functions\[1\] is a builtin_function_or_method; residual functions must be nn.Module"):
        so.MomentumResNet([fs[0], torch.tanh])
    with pytest.raises(ValueError, match="fixed_point_bits == 70"):
        so.MomentumResNet(fs, 0.9, backward="exact", fixed_point_bits=70)


def test_momentum_step_is_the_rule():
    x, v, fx = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    x1, v1 = momentum_step(x, v, fx, 0.25)
    assert float(v1) == 0.25 * 2 + 0.75 * 3 and float(x1) == 1 + float(v1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_exact_matches_autograd():
    fs = [f.cuda() for f in mlp_functions(500, d=4, h=8)]
    x = torch.randn(3, 4, dtype=torch.float64, device="cuda")
    ref = loss_and_grads(so.MomentumResNet(fs, 0.9), x)
    got = loss_and_grads(so.MomentumResNet(fs, 0.9, backward="exact"), x)
    assert rel_err(got, ref) <= 1e-9
