"""NeuralODE / SecondOrderODE against closed forms, gradients, counters and errors."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from problems import Lin, mlp
from torch import nn

from secondorder._ode import NeuralODE, SecondOrderODE

D = torch.float64


def _matrix(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -0.5 * torch.eye(d, dtype=D) + 0.6 * torch.randn(d, d, generator=g, dtype=D) / math.sqrt(d)




def _closed_form(A, eps, x0, v0, t):
    """x(t), x'(t) of eps x'' + x' = A x from the first-order system's matrix exponential."""
    d = A.shape[0]
    A = A.detach().numpy()
    if eps == 0:
        xt = x0.numpy() @ scipy.linalg.expm(t * A).T
        return xt, xt @ A.T
    B = np.block([[np.zeros((d, d)), np.eye(d)], [A / eps, -np.eye(d) / eps]])
    y = np.concatenate([x0.numpy(), v0.numpy()], -1) @ scipy.linalg.expm(t * B).T
    return y[..., :d], y[..., d:]


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0, 10.0])
def test_linear_closed_form(eps):
    A = _matrix()
    x0 = torch.randn(5, 3, dtype=D)
    v0 = torch.zeros_like(x0) if eps == 0 else torch.randn(5, 3, dtype=D)
    ode = SecondOrderODE(Lin(A), eps=eps, t1=1.0, method="dopri5", rtol=1e-10, atol=1e-12)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=D)
    xs, vs = ode.trajectory(x0, t, v0=None if eps == 0 else v0)
    assert xs.shape == vs.shape == (4, 5, 3)
    for k, tk in enumerate(t.tolist()):
        xe, ve = _closed_form(A, eps, x0, v0, tk)
        # dopri5 at rtol 1e-10 over t <= 1 with O(1) states: global error ~ 1e-9
        np.testing.assert_allclose(xs[k].detach().numpy(), xe, atol=1e-8)
        np.testing.assert_allclose(vs[k].detach().numpy(), ve, atol=1e-8)
    x1 = ode(x0, None if eps == 0 else v0)
    np.testing.assert_allclose(x1.detach().numpy(), _closed_form(A, eps, x0, v0, 1.0)[0], atol=1e-8)


def test_eps_zero_is_neural_ode():
    A = _matrix()
    F = Lin(A)
    x0 = torch.randn(4, 3, dtype=D)
    a = SecondOrderODE(F, eps=0.0)(x0)
    b = NeuralODE(F)(x0)
    assert torch.equal(a, b)  # same field, same solver: bit-identical
    assert SecondOrderODE(F, eps=0).order == 1 and SecondOrderODE(F, eps=0.5).order == 2


def test_small_eps_tends_to_first_order():
    # |x_eps(1) - x_0(1)| = O(eps): a boundary layer of width eps from x'(0) = 0
    F = Lin(_matrix())
    x0 = torch.randn(4, 3, dtype=D)
    ref = NeuralODE(F, rtol=1e-10, atol=1e-12)(x0)
    errs = [(SecondOrderODE(F, eps=e, rtol=1e-10, atol=1e-12)(x0) - ref).abs().max().item()
            for e in (1e-2, 1e-3)]
    assert 5 < errs[0] / errs[1] < 20  # ratio 10 for an O(eps) error, with slack for O(eps^2)


def test_time_dependent_F_and_forms():
    # x' = cos(t) -> x(1) = x0 + sin(1), whichever way F is written
    x0 = torch.tensor([0.5], dtype=D)
    expect = 0.5 + math.sin(1.0)

    class TX(nn.Module):
        def forward(self, t, x):
            return torch.cos(t) * torch.ones_like(x)

    def star(*args):
        return torch.cos(args[0]) * torch.ones_like(args[1])

    for F in (TX(), lambda t, x: torch.cos(t) * torch.ones_like(x), star):
        ode = NeuralODE(F, rtol=1e-10, atol=1e-12)
        assert ode.takes_time
        assert ode(x0).item() == pytest.approx(expect, abs=1e-9)  # rtol 1e-10

    class X(nn.Module):
        def forward(self, x, scale=2.0):  # one required positional -> F(x)
            return -scale * x

    for F in (X(), lambda x: -2.0 * x, nn.Sequential(nn.Identity())):
        assert not NeuralODE(F).takes_time
    assert NeuralODE(X(), rtol=1e-10, atol=1e-12)(x0).item() == pytest.approx(
        0.5 * math.exp(-2.0), abs=1e-9)  # rtol 1e-10


def test_fixed_step_methods_and_nfe():
    # euler with step 0.1: (1 + h lam)^10 exactly; rk4: (1 + z + z^2/2 + z^3/6 + z^4/24)^10
    lam, h = -1.5, 0.1
    x0 = torch.tensor([1.0], dtype=D)
    z = h * lam
    e = NeuralODE(lambda x: lam * x, method="euler", options={"step_size": h})
    assert e(x0).item() == pytest.approx((1 + z) ** 10, rel=1e-13)  # float64 rounding x 10 steps
    assert e.nfe == 10
    r = NeuralODE(lambda x: lam * x, method="rk4", options={"step_size": h})
    assert r(x0).item() == pytest.approx((1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** 10, rel=1e-13)
    assert r.nfe == 40
    s = SecondOrderODE(lambda x: lam * x, eps=0.5, method="midpoint", options={"step_size": h})
    s(x0)
    assert s.nfe == 20


def test_unknown_method_and_bad_arguments():
    F = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="method == 'nope', must be one of .*'dopri5'"):
        NeuralODE(F, method="nope")
    with pytest.raises(ValueError, match="eps == -1.0, must be a finite number >= 0"):
        SecondOrderODE(F, eps=-1.0)
    with pytest.raises(ValueError, match="learnable eps must start > 0"):
        SecondOrderODE(F, eps=nn.Parameter(torch.tensor(0.0)))
    with pytest.raises(ValueError, match="t1 == 0.0, must be a finite number > 0"):
        NeuralODE(F, t1=0.0)
    with pytest.raises(ValueError, match="rtol == 0.0, must be a finite number > 0"):
        NeuralODE(F, rtol=0)
    with pytest.raises(TypeError, match="options must be a dict"):
        NeuralODE(F, options=[1])
    with pytest.raises(TypeError, match="requires 3 positional arguments"):
        NeuralODE(lambda a, b, c: a)
    with pytest.raises(TypeError, match="F must be callable"):
        NeuralODE(3)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="v0 was given to a first-order model"):
        NeuralODE(F)(x, torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"v0 has shape \(4, 3\), must have the shape of x0 \(4, 2\)"):
        SecondOrderODE(F)(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"F returned \(4, 3\) for x of shape \(4, 2\)"):
        SecondOrderODE(nn.Linear(2, 3))(x)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        NeuralODE(F)(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="t must be a 1-D grid of at least 2 times"):
        NeuralODE(F).trajectory(x, torch.tensor([0.0]))
    p = nn.Parameter(torch.tensor(0.5))
    ode = SecondOrderODE(F, eps=p)
    with torch.no_grad():
        p.fill_(-0.1)
    with pytest.raises(ValueError, match=r"eps == -0.1.* \(learnable\), must stay > 0"):
        ode(x)


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_adjoint_matches_direct_backprop(eps):
    """Moderate eps: the reverse-time solve is stable and both gradients agree at solver tol."""
    grads = []
    for adjoint in (False, True):
        F = mlp(3, hidden=8, seed=1)
        e = nn.Parameter(torch.tensor(eps, dtype=D)) if eps else 0.0
        ode = SecondOrderODE(F, eps=e, rtol=1e-10, atol=1e-12, adjoint=adjoint)
        x0 = torch.linspace(-1, 1, 12, dtype=D).reshape(4, 3).requires_grad_()
        v0 = None if not eps else (0.3 * torch.ones(4, 3, dtype=D)).requires_grad_()
        loss = (ode(x0, v0) ** 2).sum()
        loss.backward()
        g = [p.grad for p in F.parameters()] + [x0.grad]
        if eps:
            g += [e.grad.reshape(1), v0.grad]
        grads.append(torch.cat([t.reshape(-1) for t in g]))
        assert ode.nfe > 0
        # direct backprop calls no F in backward; the adjoint's reverse solve does
        assert (ode.nfe_backward > 0) if adjoint else (ode.nfe_backward == 0)
    # both solves at rtol 1e-10, O(1) gradients: agreement ~1e-8; 1e-6 leaves margin
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-6)


def test_learnable_eps_gradient_matches_finite_difference():
    # fixed-step rk4: the output is a smooth function of eps, so central differences are O(d^2)
    F = mlp(3, hidden=8, seed=1)
    e = nn.Parameter(torch.tensor(0.7, dtype=D))
    ode = SecondOrderODE(F, eps=e, method="rk4", options={"step_size": 0.05})
    x0 = torch.linspace(-1, 1, 12, dtype=D).reshape(4, 3)
    ode(x0).sum().backward()
    d = 1e-5
    with torch.no_grad():
        e.fill_(0.7 + d)
        up = ode(x0).sum().item()
        e.fill_(0.7 - d)
        dn = ode(x0).sum().item()
    # central difference error ~ d^2 * f''' ~ 1e-10, plus rounding 1e-16 / d ~ 1e-11
    assert e.grad.item() == pytest.approx((up - dn) / (2 * d), abs=1e-8)


def test_call_used_by_linear_module():
    # the call theory/representability.py makes to check secondorder.linear.Psi: F a module
    # taking x only, tight dopri5
    A = _matrix(2)
    ode = SecondOrderODE(Lin(A), eps=0.3, t1=1.0, method="dopri5", rtol=1e-9, atol=1e-11)
    x0 = torch.eye(2, dtype=D)
    np.testing.assert_allclose(ode(x0).detach().numpy(),
                               _closed_form(A, 0.3, x0, torch.zeros_like(x0), 1.0)[0],
                               atol=1e-8)  # rtol 1e-9
