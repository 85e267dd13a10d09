"""gamma <-> eps <-> depth, discretize / to_ode, the linear closed form and the order of convergence."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from problems import Lin, rel_err
from torch import nn

import secondorder as so
from secondorder import StepFunction, min_depth

D = torch.float64




def _A(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -0.5 * torch.eye(d, dtype=D) + 0.6 * torch.randn(d, d, generator=g, dtype=D) / math.sqrt(d)


def test_gamma_eps_maps():
    assert so.gamma_from_eps(1.0, 10) == pytest.approx(0.9, abs=1e-15)
    assert so.gamma_from_eps(0.5, 4, t1=2.0) == 0.0  # h = 0.5 = eps
    assert so.gamma_from_eps(0.1, 10) == 0.0  # 1 - 0.1/0.1 in float64: rounding snapped to 0
    assert so.gamma_from_eps(0.0, 7) == 0.0  # the first-order model: ResNet / forward Euler
    assert so.eps_from_gamma(0.9, 10) == pytest.approx(1.0, rel=1e-14)
    for eps, depth, t1 in [(0.3, 4, 1.0), (2.0, 17, 3.0), (10.0, 1, 1.0)]:
        g = so.gamma_from_eps(eps, depth, t1)
        assert so.eps_from_gamma(g, depth, t1) == pytest.approx(eps, rel=1e-13)  # float64 round trip
    assert min_depth(0.3) == 4 and min_depth(0.1) == 10 and min_depth(0.0) == 1


def test_gamma_eps_errors():
    with pytest.raises(ValueError, match=r"depth == 9 is too small for eps == 0.1.*depth >= ceil\(t1/eps\) = 10"):
        so.gamma_from_eps(0.1, 9)
    with pytest.raises(ValueError, match=r"Use depth >= ceil\(t1/eps\) = 4"):
        so.gamma_from_eps(0.3, 3)
    with pytest.raises(ValueError, match="eps == -0.5, must be a finite number >= 0"):
        so.gamma_from_eps(-0.5, 10)
    with pytest.raises(ValueError, match="depth == 0, must be an integer >= 1"):
        so.gamma_from_eps(1.0, 0)
    with pytest.raises(ValueError, match="t1 == -1.0, must be a finite number > 0"):
        so.gamma_from_eps(1.0, 3, t1=-1.0)
    with pytest.raises(ValueError, match="gamma == 1 has no ODE limit"):
        so.eps_from_gamma(1.0, 10)
    with pytest.raises(ValueError, match=r"gamma == 1.5, must be in \[0, 1\]"):
        so.eps_from_gamma(1.5, 10)
    F = Lin(_A())
    with pytest.raises(ValueError, match=r"ceil\(t1/eps\) = 20"):
        so.discretize(so.SecondOrderODE(F, eps=0.05), 19)
    with pytest.raises(TypeError, match="ode must be a NeuralODE or SecondOrderODE"):
        so.discretize(F, 10)


def test_discretize_structure_and_parameter_sharing():
    class TF(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3).to(D)

        def forward(self, t, x):
            return torch.sin(3 * t) + self.lin(x)

    F = TF()
    ode = so.SecondOrderODE(F, eps=0.5, t1=2.0)
    net = so.discretize(ode, 8)
    assert isinstance(net, so.MomentumResNet) and len(net.functions) == 8
    assert net.gamma == pytest.approx(1 - 0.25 / 0.5, abs=1e-15)
    assert [id(p) for p in net.parameters()] == [id(p) for p in F.parameters()]  # shared, once
    x = torch.randn(5, 3, dtype=D)
    for n, f in enumerate(net.functions):
        expect = 0.25 * F(torch.tensor(0.25 * n, dtype=D), x)
        assert torch.equal(f(x), expect)
    with torch.no_grad():
        F.lin.bias.add_(1.0)  # a change to F is seen by the network
    assert torch.equal(net.functions[3](x), 0.25 * F(torch.tensor(0.75, dtype=D), x))


@pytest.mark.parametrize("eps,depth", [(1.0, 10), (0.3, 16), (5.0, 40)])
def test_linear_closed_form_matrix_power(eps, depth):
    """(x_N, v_N) = M^N (x_0, 0), M = [[I + C, gamma I], [C, gamma I]], C = (1 - gamma) h A."""
    A = _A()
    net = so.discretize(so.SecondOrderODE(Lin(A), eps=eps), depth)
    g, h = net.gamma, 1.0 / depth
    C = (1 - g) * h * A.numpy()
    eye = np.eye(3)
    M = np.block([[eye + C, g * eye], [C, g * eye]])
    x0 = torch.randn(4, 3, dtype=D)
    xN, vN = net(x0, return_velocity=True)
    y = np.concatenate([x0.numpy(), np.zeros((4, 3))], 1) @ np.linalg.matrix_power(M, depth).T
    # float64: rounding ~1e-16 per operation over <= 40 layers of O(1) values
    np.testing.assert_allclose(xN.detach().numpy(), y[:, :3], atol=1e-13)
    np.testing.assert_allclose(vN.detach().numpy(), y[:, 3:], atol=1e-13)


def test_eps_zero_is_forward_euler():
    F = Lin(_A())
    net = so.discretize(so.NeuralODE(F), 20)
    assert net.gamma == 0.0
    x0 = torch.randn(4, 3, dtype=D)
    x = x0
    for _ in range(20):
        x = x + 0.05 * F(x)
    torch.testing.assert_close(net(x0), x, rtol=0, atol=1e-14)  # same ops, reordered at most
    eul = so.NeuralODE(F, method="euler", options={"step_size": 0.05})(x0)
    torch.testing.assert_close(net(x0), eul, rtol=0, atol=1e-13)  # torchdiffeq's grid rounding


def test_order_one_convergence_x_and_velocity():
    """Fitted slope of the error at t1 against depth: -1 for x and for v/h (with v0 != 0)."""
    A = _A()
    eps = 0.5
    x0 = torch.randn(4, 3, dtype=D)
    u0 = torch.randn(4, 3, dtype=D)
    B = np.block([[np.zeros((3, 3)), np.eye(3)], [A.numpy() / eps, -np.eye(3) / eps]])
    y1 = np.concatenate([x0.numpy(), u0.numpy()], 1) @ scipy.linalg.expm(B).T
    x1, u1 = torch.from_numpy(y1[:, :3]), torch.from_numpy(y1[:, 3:])
    ode = so.SecondOrderODE(Lin(A), eps=eps)
    # h/eps <= 1/16 over N = 32..512: the error is in its asymptotic C/N range (5 resolutions)
    Ns = [32, 64, 128, 256, 512]
    ex, ev = [], []
    for N in Ns:
        xN, vN = so.discretize(ode, N)(x0, v0=u0 / N, return_velocity=True)
        ex.append(rel_err(xN.detach(), x1))
        ev.append(rel_err(vN.detach() * N, u1))
    sx = np.polyfit(np.log(Ns), np.log(ex), 1)[0]
    sv = np.polyfit(np.log(Ns), np.log(ev), 1)[0]
    # first-order method: slope -1; the O(h^2) remainder moves it by < 0.05 over this band
    assert sx == pytest.approx(-1.0, abs=0.05)
    assert sv == pytest.approx(-1.0, abs=0.05)


def test_to_ode_round_trip_and_learnable():
    F = Lin(_A())
    ode = so.SecondOrderODE(F, eps=0.25, t1=2.0)
    back = so.to_ode(so.discretize(ode, 64), t1=2.0, rtol=1e-9)
    assert isinstance(back, so.SecondOrderODE) and back.F is F
    assert back.eps == pytest.approx(0.25, rel=1e-14) and back.t1 == 2.0 and back.rtol == 1e-9
    assert so.to_ode(so.discretize(so.NeuralODE(F), 8)).eps == 0.0
    assert so.to_ode(so.ResNet([StepFunction(F, n / 4, 0.25, False) for n in range(4)])).eps == 0.0
    # a learnable eps: the network holds that same eps and recomputes gamma = 1 - h/eps from it
    e = nn.Parameter(torch.tensor(0.5, dtype=D))
    net = so.discretize(so.SecondOrderODE(F, eps=e), 10)
    assert net.eps is e and sum(p is e for p in net.parameters()) == 1
    assert float(net.gamma.detach()) == pytest.approx(0.8)
    ode2 = so.to_ode(net)
    assert ode2.eps is e
    net(torch.ones(2, 3, dtype=D)).sum().backward()
    assert e.grad is not None and e.grad.abs() > 0
    with torch.no_grad():
        e.fill_(0.25)
    assert float(net.gamma.detach()) == pytest.approx(0.6)  # follows eps
    # a plain MomentumResNet with a learnable gamma still maps to a new, untied learnable eps
    g = nn.Parameter(torch.tensor(0.8, dtype=D))
    ode3 = so.to_ode(so.MomentumResNet(list(net.functions), gamma=g))
    assert isinstance(ode3.eps, nn.Parameter) and float(ode3.eps.detach()) == pytest.approx(0.5)


def test_to_ode_errors():
    F = Lin(_A())
    with pytest.raises(ValueError, match="residual function 1 is a Linear, not a StepFunction"):
        so.to_ode(so.MomentumResNet([StepFunction(F, 0, 0.5, False), nn.Linear(3, 3)]))
    with pytest.raises(ValueError, match="residual function 1 wraps a different F"):
        so.to_ode(so.MomentumResNet([StepFunction(F, 0, 0.5, False),
                                     StepFunction(Lin(_A()), 0.5, 0.5, False)]))
    net = so.discretize(so.SecondOrderODE(F, eps=1.0, t1=2.0), 8)
    with pytest.raises(ValueError, match=r"pass the t1 the network was discretized with \(2\)"):
        so.to_ode(net, t1=1.0)
    with pytest.raises(ValueError, match="gamma == 1 has no ODE limit"):
        so.to_ode(so.MomentumResNet([StepFunction(F, n / 4, 0.25, False) for n in range(4)], gamma=1.0))
    with pytest.raises(TypeError, match="net must be a MomentumResNet or ResNet"):
        so.to_ode(F)


def test_exact_backward_matches_autograd():
    """backward='exact' on the discretized ODE: gradients of the same network as autograd's."""
    torch.manual_seed(0)
    F = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(D)
    ode = so.SecondOrderODE(F, eps=1.0)
    x0 = torch.randn(6, 3, dtype=D)
    grads = []
    for backward in ("autograd", "exact"):
        net = so.discretize(ode, 64, backward=backward)  # gamma = 63/64, an exact rational
        F.zero_grad()
        (net(x0) ** 2).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in F.parameters()]))
    # DESIGN.md's exactness contract for float64: relative error <= 1e-10
    assert rel_err(grads[1], grads[0]) < 1e-10
