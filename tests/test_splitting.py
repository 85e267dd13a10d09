"""The Strang splitting scheme: order 2 against a tight reference, exact reversal, gradients."""

import math

import numpy as np
import pytest
import torch
from problems import mlp_functions, rel_err
from torch import nn

import secondorder as so
from scripts.problems import TimeMLP, reference
from secondorder import StepFunction
from secondorder._splitting import strang_eps, strang_gamma

D = torch.float64


def TimeField(d=3, width=8, seed=0):  # noqa: N802 - used like the class it returns
    """A time-dependent neural field (d -> d) that varies fast enough in time for the order tests
    to see where ``F`` is evaluated."""
    return TimeMLP(d, width, seed, c_scale=2.0)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def slope(Ns, errs):
    return float(np.polyfit(np.log(Ns), np.log(errs), 1)[0])


@torch.no_grad()
def errors(F, eps, x0, u0, Ns, scheme, t1=1.0):
    ref = reference(F, eps, x0, u0, t1)
    ode = so.SecondOrderODE(F, eps=eps, t1=t1)
    ex, ev = [], []
    for N in Ns:
        h = t1 / N
        xN, vN = so.discretize(ode, N, scheme=scheme)(x0, v0=h * u0, return_velocity=True)
        ex.append(rel(xN, ref[0]))
        ev.append(rel(vN / h, ref[1]))
    return ex, ev


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    return TimeField(seed=seed), torch.randn(4, 3, generator=g, dtype=D), torch.randn(4, 3, generator=g, dtype=D)


# -- order ---------------------------------------------------------------------------------------
NS = [16, 32, 64, 128, 256]


@pytest.mark.parametrize("eps", [0.1, 1.0, 10.0])
def test_order_two_in_x_and_velocity(eps):
    # h = 1/16 .. 1/256; errors 1e-3 .. 1e-8, far above DOP853's 1e-13
    F, x0, u0 = problem()
    ex, ev = errors(F, eps, x0, u0, NS, "strang")
    sx, sv = slope(NS, ex), slope(NS, ev)
    assert -2.1 <= sx <= -1.9, (sx, ex)
    assert -2.1 <= sv <= -1.9, (sv, ev)
    # at 16 layers the splitting is already more accurate than the Euler scheme at 256
    assert ex[0] < errors(F, eps, x0, u0, [256], "euler")[0][0]


def test_euler_scheme_is_order_one_on_the_same_problem():
    F, x0, u0 = problem()
    Ns = [32, 64, 128, 256]  # h <= eps = 0.1 needs N >= 10
    for eps in (0.1, 1.0):
        ex, ev = errors(F, eps, x0, u0, Ns, "euler")
        assert -1.1 <= slope(Ns, ex) <= -0.9 and -1.1 <= slope(Ns, ev) <= -0.9


def test_one_step_is_the_splitting_and_the_chain_is_a_momentum_resnet():
    # x <- x + h/2 u; u <- g u + (1 - g) F(t_{1/2}, x); x <- x + h/2 u, written out by hand
    F, x0, u0 = problem()
    eps, t1, N = 0.3, 0.8, 5
    h, g = t1 / N, math.exp(-t1 / N / eps)
    x, u = x0.clone(), u0.clone()
    with torch.no_grad():
        for n in range(N):
            x = x + h / 2 * u
            u = g * u + (1 - g) * F(torch.tensor((n + 0.5) * h, dtype=D), x)
            x = x + h / 2 * u
        net = so.discretize(so.SecondOrderODE(F, eps=eps, t1=t1), N, scheme="strang")
        xN, vN = net(x0, v0=h * u0, return_velocity=True)
        assert isinstance(net, so.StrangMomentumResNet) and net.gamma == g
        assert rel(xN, x) < 1e-14 and rel(vN / h, u) < 1e-14
        # the chain on z = x + v/2 is a plain MomentumResNet over the same functions
        zN, vN2 = so.MomentumResNet(net.functions, g)(x0 + h * u0 / 2, v0=h * u0, return_velocity=True)
        assert torch.equal(vN2, vN) and torch.equal(zN - vN2 / 2, xN)
        # trajectory's last state is forward's; inverse undoes it (float, shallow)
        xs, vs = net.trajectory(x0, v0=h * u0, return_velocity=True)
        assert xs.shape == (N + 1, *x0.shape) and torch.equal(xs[0], x0)
        assert rel(xs[-1], xN) < 1e-15 and rel(vs[-1], vN) < 1e-15
        xb, vb = net.inverse(xN, vN)
        assert rel(xb, x0) < 1e-12 and rel(vb, h * u0) < 1e-12


def test_init_velocity_is_applied_to_x0_before_the_half_drift():
    fs = mlp_functions(6, d=3, h=5)
    init = nn.Linear(3, 3).to(D)
    x = torch.randn(2, 3, dtype=D)
    with torch.no_grad():
        a = so.StrangMomentumResNet(fs, 0.8, init_velocity=init)(x, return_velocity=True)
        b = so.StrangMomentumResNet(fs, 0.8)(x, v0=init(x), return_velocity=True)
        c = so.MomentumResNet(fs, 0.8)(x + init(x) / 2, v0=init(x), return_velocity=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0], c[0] - c[1] / 2) and torch.equal(a[1], c[1])


# -- gradients and exact reversal -----------------------------------------------------------------
def grads(net, x, v0):
    net.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    v0 = v0.detach().clone().requires_grad_(True)
    xN, vN = net(x, v0=v0, return_velocity=True)
    ((xN**2).sum() + (vN * xN.cos()).sum()).backward()
    return [x.grad, v0.grad] + [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("depth", [1, 7, 200])
@pytest.mark.parametrize("backward", ["exact", "float"])
def test_memory_free_gradients_equal_autograd(depth, backward):
    # learnable eps -> learnable gamma: its gradient is compared too
    F, x0, u0 = problem(1)
    ode = so.SecondOrderODE(F, eps=nn.Parameter(torch.tensor(0.2, dtype=D)))
    ref_net = so.discretize(ode, depth, scheme="strang")
    net = so.discretize(ode, depth, backward=backward, scheme="strang")
    with torch.no_grad():
        net.gamma.copy_(ref_net.gamma)
    h = 1.0 / depth
    ref = grads(ref_net, x0, h * u0)
    got = grads(net, x0, h * u0)
    assert len(got) == 2 + 5 + 1  # x, v0, F's 5 parameters, gamma
    # exact: the chain's fixed-point rounding (2**-46 per layer); float: the inverse's rounding
    assert rel_err(got, ref) <= 1e-10


def test_standalone_net_deep_exact_equals_autograd():
    fs = mlp_functions(300, d=4, h=8, scale=0.3)
    x, v0 = torch.randn(3, 4, dtype=D), 0.1 * torch.randn(3, 4, dtype=D)
    ref = grads(so.StrangMomentumResNet(fs, 0.9), x, v0)
    got = grads(so.StrangMomentumResNet(fs, 0.9, backward="exact"), x, v0)
    assert rel_err(got, ref) <= 1e-9


def test_exact_roundtrip_is_bit_exact():
    # inputs on a coarse dyadic grid (2**-28), so that the float half drifts and the fixed-point
    # quantization are exact and the reconstructed positions can be compared bit for bit too
    F, x0, u0 = problem(2)
    net = so.discretize(so.SecondOrderODE(F, eps=0.05), 300, scheme="strang")
    x = torch.round(x0 * 2**20) / 2**20
    v0 = torch.round(u0 * 2**20) / 2**28
    out = so.exact_roundtrip(net, x, v0=v0)
    assert out["bit_exact"]
    # the chain's reconstructed (z_0, v_0) equal the quantized input bit for bit
    assert torch.equal(out["z0"], x + v0 / 2) and torch.equal(out["v0"], v0)
    assert torch.equal(out["x0"], x)
    with torch.no_grad():
        xN, vN = net(x, v0=v0, return_velocity=True)
    assert rel(out["x_N"], xN) < 1e-12 and rel(out["v_N"], vN) < 1e-12
    # a non-deterministic function breaks the chain's check: reported, never hidden

    class Noisy(nn.Module):  # draws from its own generator, which no RNG replay restores
        def __init__(self, seed):
            super().__init__()
            self.gen = torch.Generator().manual_seed(seed)

        def forward(self, z):
            return 0.1 * z + 1e-3 * torch.randn(z.shape, generator=self.gen, dtype=z.dtype)

    assert not so.exact_roundtrip(so.StrangMomentumResNet([Noisy(i) for i in range(3)], 0.9), x)["bit_exact"]


def saved_bytes(net, x, v0):
    """Bytes autograd saves for backward during ``net``'s forward (saved_tensors_hooks)."""
    total = [0]

    def pack(t):
        total[0] += t.untyped_storage().nbytes()
        return t

    x = x.detach().clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, v0=v0)
    return total[0]


def test_exact_mode_stores_no_activations():
    F = TimeField(d=16, width=64)
    x, u0 = torch.randn(64, 16, dtype=D), torch.randn(64, 16, dtype=D)
    stored = {}
    for backward in ("autograd", "exact"):
        for depth in (10, 200):
            net = so.discretize(so.SecondOrderODE(F, eps=0.5), depth, backward=backward, scheme="strang")
            stored[backward, depth] = saved_bytes(net, x, u0 / depth)
    # autograd keeps every layer's activations (grows ~20x); exact keeps nothing per layer
    assert stored["autograd", 200] > 15 * stored["autograd", 10] > 0
    assert stored["exact", 200] == stored["exact", 10] < stored["autograd", 10]


# -- eps -> 0 -------------------------------------------------------------------------------------
def test_eps_to_zero_with_h_fixed_is_stable_and_first_order():
    # eps = 1e-4, h = 0.1 .. 0.0125 (h / eps >= 125): gamma = exp(-h/eps) underflows to ~0 and the
    # scheme is forward Euler on z = x + v/2 (docs/theory.md §8): bounded, order 1 against the
    # stiff reference (Radau); the Euler scheme refuses these depths (h > eps)
    F, x0, u0 = problem(3)
    eps = 1e-4
    xref, _ = reference(F, eps, x0, u0, method="Radau", rtol=1e-10, atol=1e-12)
    ode = so.SecondOrderODE(F, eps=eps)
    Ns = [10, 20, 40, 80]
    errs = []
    with torch.no_grad():
        for N in Ns:
            xs = so.discretize(ode, N, scheme="strang").trajectory(x0, v0=u0 / N)
            assert bool(torch.isfinite(xs).all()) and float(xs.abs().max()) < 10 * float(x0.abs().max() + 1)
            errs.append(rel(xs[-1], xref))
    assert -1.15 <= slope(Ns, errs) <= -0.85, errs
    with pytest.raises(ValueError, match="too small for eps"):
        so.discretize(ode, 10)


def test_eps_zero_is_the_gamma_zero_limit():
    F, x0, _ = problem()
    ode0 = so.SecondOrderODE(F, eps=0.0)
    N = 8
    net = so.discretize(ode0, N, scheme="strang")
    assert net.gamma == 0.0
    with torch.no_grad():
        # the same as a tiny eps (gamma underflows), and Euler on z at midpoint times
        assert torch.equal(net(x0), so.discretize(so.SecondOrderODE(F, eps=1e-6), N, scheme="strang")(x0))
        z, h = x0.clone(), 1.0 / N
        for n in range(N):
            fz = h * F(torch.tensor((n + 0.5) * h, dtype=D), z)
            z = z + fz
        assert rel(net(x0), z - fz / 2) < 1e-15
    with pytest.raises(ValueError, match=r"gamma = exp\(-h/eps\) == 0.*backward='autograd'"):
        so.discretize(ode0, N, backward="exact", scheme="strang")


# -- maps and errors ------------------------------------------------------------------------------
def test_to_ode_inverts_discretize():
    F = TimeField()
    for eps in (0.05, 0.7, 3.0):
        net = so.discretize(so.SecondOrderODE(F, eps=eps, t1=2.0), 12, scheme="strang")
        ode = so.to_ode(net, t1=2.0)
        assert ode.F is F and math.isclose(ode.eps, eps, rel_tol=1e-13)
    assert so.to_ode(so.discretize(so.SecondOrderODE(F, eps=0.0), 5, scheme="strang")).eps == 0.0
    eps = nn.Parameter(torch.tensor(0.4, dtype=D))
    learn = so.discretize(so.SecondOrderODE(F, eps=eps), 9, scheme="strang")
    # a learnable eps is tied: gamma = exp(-h/eps) is recomputed from the ODE's own eps
    assert isinstance(learn, so.StrangMomentumResNet) and isinstance(learn, so.TiedMomentumResNet)
    assert learn.eps is eps and math.isclose(float(learn.gamma.detach()), math.exp(-1 / 9 / 0.4), rel_tol=1e-15)
    assert so.to_ode(learn).eps is eps
    assert math.isclose(strang_eps(strang_gamma(0.37, 0.01), 0.01), 0.37, rel_tol=1e-12)
    # an euler-made net is not read as a strang one and vice versa (t_n differs)
    euler = so.discretize(so.SecondOrderODE(F, eps=0.5), 4)
    with pytest.raises(ValueError, match="t_n"):
        so.to_ode(so.StrangMomentumResNet(euler.functions, 0.5))
    with pytest.raises(ValueError, match="gamma == 1 has no ODE"):
        so.to_ode(so.StrangMomentumResNet(net.functions, 1.0), t1=2.0)


def test_default_scheme_unchanged_and_bad_input():
    F, x0, _ = problem()
    ode = so.SecondOrderODE(F, eps=0.5)
    a, b = so.discretize(ode, 20), so.discretize(ode, 20, scheme="euler")
    assert type(a) is so.MomentumResNet and type(b) is so.MomentumResNet and a.gamma == b.gamma == 0.9
    assert [f.t_n for f in a.functions] == [n * (1.0 / 20) for n in range(20)]
    with pytest.raises(ValueError, match="scheme == 'rk4', must be one of 'euler', 'strang'"):
        so.discretize(ode, 20, scheme="rk4")
    with pytest.raises(ValueError, match="depth"):
        so.discretize(ode, 0, scheme="strang")
    with pytest.raises(TypeError, match="ode must be"):
        so.discretize(F, 3, scheme="strang")
    with pytest.raises(ValueError, match="backward"):
        so.discretize(ode, 3, backward="fast", scheme="strang")
    with pytest.raises(ValueError, match="must be in"):
        so.StrangMomentumResNet([nn.Identity()], gamma=1.5)
    with pytest.raises(ValueError, match="v0 has shape"):
        so.StrangMomentumResNet([nn.Identity()], gamma=0.5)(x0, v0=x0[:1])
    with pytest.raises(ValueError, match="h =="):
        strang_gamma(0.1, 0.0)
    with pytest.raises(ValueError, match="eps =="):
        strang_gamma(-1.0, 0.1)
    assert StepFunction is type(so.discretize(ode, 2, scheme="strang").functions[0])


@pytest.mark.parametrize("backward", ["exact", "float"])
def test_learnable_per_feature_eps_gets_the_exact_gradient(backward):
    # per-feature learnable eps through the Strang scheme: gamma_i = exp(-h/eps_i) tied to eps;
    # d loss / d eps of the memory-free backward equals autograd's through the same network
    F = TimeField()
    x0 = torch.randn(5, 3, dtype=D, generator=torch.Generator().manual_seed(3))
    grads = {}
    for mode in ("autograd", backward):
        eps = nn.Parameter(torch.tensor([0.05, 0.4, 2.0], dtype=D))
        net = so.discretize(so.SecondOrderODE(F, eps=eps), 40, backward=mode, scheme="strang")
        F.zero_grad()
        (net(x0) ** 2).sum().backward()
        grads[mode] = [eps.grad.clone()] + [p.grad.clone() for p in F.parameters()]
    assert float(grads["autograd"][0].abs().min()) > 0
    # exact: fixed-point rounding only; float: the inverse amplifies rounding by 1/gamma per layer
    # (smallest gamma exp(-0.5) over 40 layers: 2**-52 * e**20 ~ 1e-7)
    tol = 1e-10 if backward == "exact" else 2.0**-52 * math.exp(0.5) ** 40
    assert rel_err(grads[backward], grads["autograd"]) <= tol
    # a fixed per-feature eps: the per-feature gamma = exp(-h/eps) and to_ode maps it back
    fixed = so.discretize(so.SecondOrderODE(F, eps=torch.tensor([0.05, 0.4, 2.0], dtype=D)), 40, scheme="strang")
    torch.testing.assert_close(fixed.gamma, torch.exp(-1 / 40 / torch.tensor([0.05, 0.4, 2.0], dtype=D)),
                               rtol=1e-15, atol=0)
    torch.testing.assert_close(so.to_ode(fixed).eps, torch.tensor([0.05, 0.4, 2.0], dtype=D), rtol=1e-12, atol=0)
