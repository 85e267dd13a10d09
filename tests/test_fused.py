"""The fused (torch.compile) fixed-point kernels give the same bits as the eager exact arithmetic.

Every comparison is ``torch.equal``: outputs, gradients, the bit store (``S`` and its spills) and
the fixed-point format the overflow ladder chose. The kernels compile once per process per
(kernel, division plan, dtype); the module fixture pays that once and the shapes stay small.
"""

import warnings

import pytest
import torch
from torch import nn

import secondorder as so
from secondorder import _fused
from secondorder._reversible import _ExactMomentum
from secondorder.exact import BitStore, FixedPoint, rational_gamma, set_fused


@pytest.fixture(scope="module", autouse=True)
def fused_everywhere():
    """Fused kernels for every size (the automatic mode skips small tensors), restored afterwards."""
    old = _fused.MIN_NUMEL, _fused.MIN_NUMEL_COUPLING
    _fused.MIN_NUMEL = _fused.MIN_NUMEL_COUPLING = 0
    yield
    _fused.MIN_NUMEL, _fused.MIN_NUMEL_COUPLING = old
    set_fused(None)


@pytest.fixture(scope="module")
def compiler():
    """Skip when torch.compile cannot build the kernels on this machine."""
    set_fused(None)
    _fused.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = torch.zeros(8, dtype=torch.int64)
        try:
            ok = _fused.call("coupling_sub", X, torch.zeros(8), torch.tensor(1.0), torch.tensor(1.0), torch.float32) is not None
        except RuntimeWarning:
            ok = False
    if not ok:
        pytest.skip("torch.compile does not work here")


needs_compiler = pytest.mark.usefixtures("compiler")


class _NaNs(nn.Module):
    def forward(self, z):
        return z * float("nan")


def _run(make_net, x, fused, v0=None):
    """Output(s), input gradient and parameter gradients of one step, and the arithmetic used."""
    set_fused(fused)
    try:
        net = make_net()
        xi = x.clone().requires_grad_(True)
        out = net(xi) if v0 is None else net(xi, v0=v0)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in out)
        loss.backward()
        return [o.detach() for o in out] + [xi.grad] + [p.grad for p in net.parameters()]
    finally:
        set_fused(None)


def _assert_same(a, b):
    assert len(a) == len(b)
    for i, (u, w) in enumerate(zip(a, b)):
        assert torch.equal(u, w), f"tensor {i} differs"


def _mlp(d, dtype, depth, gamma, seed=0, tied=True, bits=None):
    def make():
        torch.manual_seed(seed)
        f = nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, d)).to(dtype)
        fs = [f] * depth if tied else [nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, d)).to(dtype)
                                       for _ in range(depth)]
        return so.MomentumResNet(fs, gamma, backward="exact", fixed_point_bits=bits)

    return make


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.9, 0.99, 0.75, 0.3141592])
def test_momentum_fused_equals_eager(dtype, gamma):
    torch.manual_seed(1)
    x = torch.randn(6, 5, dtype=dtype)
    make = _mlp(5, dtype, 12, gamma)
    _assert_same(_run(make, x, True), _run(make, x, False))


@needs_compiler
def test_fused_kernels_are_bit_identical_to_the_store():
    # the store alone at depth 400, gamma 0.9, float32: spills happen (~0.15 bits per layer from a
    # full 2**53 store) and every step's V, X, S must match the eager BitStore bit for bit
    torch.manual_seed(2)
    x = torch.randn(3, 5, 7)
    arith = {}
    for fused in (True, False):
        set_fused(fused)
        a = _ExactMomentum(0.9, x, None)
        a.encode(x, torch.zeros_like(x))
        states = []
        for n in range(400):
            fx = torch.tanh(a.x_float()) * 3
            a.step(n, fx)
            states.append((a.X.clone(), a.V.clone(), a.store.S.clone()))  # fused steps write in place
        a.finish_forward()
        spills = a.store.spills
        back = []
        a.unstep_x()
        for n in reversed(range(400)):
            fx = torch.tanh(a.x_float()) * 3
            a.unstep(n, fx) if fused else (a.unstep_v(n, fx), n > 0 and a.unstep_x())
            back.append((a.X.clone(), a.V.clone(), a.store.S.clone()))
        arith[fused] = (a, states, back, spills)
    set_fused(None)
    (af, sf, bf, spf), (_, se, be, spe) = arith[True], arith[False]
    assert spf == spe and len(spf) >= 1
    for u, w in zip(sf + bf, se + be):
        assert all(torch.equal(p, q) for p, q in zip(u, w))
    X0 = FixedPoint(torch.float32).quantize(x)
    assert torch.equal(af.X, X0) and not af.V.any() and not af.store.S.any()


@needs_compiler
def test_deep_float32_with_spills():
    torch.manual_seed(3)
    x = torch.randn(4, 8)
    make = _mlp(8, torch.float32, 400, 0.9)
    _assert_same(_run(make, x, True), _run(make, x, False))
    set_fused(True)
    r = so.exact_roundtrip(make(), x)
    set_fused(None)
    assert r["bit_exact"] and len(r["spills"]) >= 1


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ladder_rungs(dtype):
    # inputs x3000 leave the finest format's range: both paths must pick the same coarser rung
    torch.manual_seed(4)
    x = torch.randn(5, 6, dtype=dtype) * (3000 if dtype == torch.float64 else 3e9)
    make = _mlp(6, dtype, 8, 0.9)
    _assert_same(_run(make, x, True), _run(make, x, False))
    bits = {}
    for fused in (True, False):
        set_fused(fused)
        bits[fused] = so.exact_roundtrip(make(), x)["bits"]
    set_fused(None)
    assert bits[True] == bits[False] < so.exact.DEFAULT_BITS[dtype]
    # a forced format
    forced = _mlp(6, dtype, 8, 0.9, bits=20)
    _assert_same(_run(forced, x, True), _run(forced, x, False))


@needs_compiler
@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), (0, 4)])
def test_odd_shapes(shape):
    torch.manual_seed(5)
    x = torch.randn(*shape)

    def make():
        torch.manual_seed(0)
        return so.MomentumResNet([nn.Tanh()] * 5 + [nn.Softplus()] * 5, 0.9, backward="exact")

    _assert_same(_run(make, x, True), _run(make, x, False))


@needs_compiler
def test_conv_block_and_initial_velocity():
    torch.manual_seed(6)
    x = torch.randn(2, 3, 5, 5)
    v0 = torch.randn(2, 3, 5, 5) * 0.1

    def make():
        torch.manual_seed(0)
        f = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1))
        return so.MomentumResNet([f] * 6, 0.9, backward="exact")

    _assert_same(_run(make, x, True, v0=v0), _run(make, x, False, v0=v0))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_revnet_fused_equals_eager(dtype):
    torch.manual_seed(7)
    x = torch.randn(4, 6, dtype=dtype)

    def make():
        torch.manual_seed(0)
        F = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype) for _ in range(5)]
        G = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype) for _ in range(5)]
        return so.RevNet(F, G, backward="exact")

    _assert_same(_run(make, x, True), _run(make, x, False))
    set_fused(True)
    assert so.exact_roundtrip(make(), x)["bit_exact"]
    set_fused(None)


@needs_compiler
def test_overflow_and_nan_are_reported_the_same():
    x = torch.randn(4, 6) * 1e15  # beyond every float32 rung (the coarsest holds 1.4e14)
    for fused in (True, False):
        set_fused(fused)
        with pytest.raises(so.exact.FixedPointOverflowError, match="the input x at layer 0"):
            _mlp(6, torch.float32, 3, 0.9)()(x)
    msgs = {}
    for fused in (True, False):
        set_fused(fused)
        net = so.MomentumResNet([nn.Identity(), _NaNs()], 0.9, backward="exact")
        with pytest.raises(so.exact.FixedPointOverflowError) as e:
            net(torch.randn(4, 6))
        msgs[fused] = str(e.value)
    set_fused(None)
    assert msgs[True] == msgs[False] and "non-finite" in msgs[True]


@needs_compiler
def test_new_shapes_and_gammas_do_not_recompile():
    # shapes and gamma are runtime values of the compiled graphs: once a network has compiled its
    # kernels, other shapes and other gammas with the same division plan (float32: d = 2**24 and an
    # n that is not a power of two) compile nothing, also through dynamo's guards (reset() drops
    # the direct calls); a new plan (gamma = 1/2: n = 1) compiles once, and not again for 1/4
    torch.manual_seed(4)

    def run(shape, gamma):
        _fused.reset()
        x = torch.randn(*shape, requires_grad=True)
        lin = torch.nn.Linear(shape[-1], shape[-1])
        net = so.MomentumResNet([torch.nn.Sequential(lin, torch.nn.Tanh())] * 3, gamma, backward="exact")
        net(x).square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()

    set_fused(True)
    try:
        run((6, 5), 0.9)
        first = _fused.compile_count()
        for shape in [(3, 7), (2,), (11, 3, 5), (1000,), (4, 1, 9)]:
            for gamma in (0.9, 0.8, 0.3141592):
                run(shape, gamma)
        assert _fused.compile_count() == first
        run((6, 5), 0.5)  # a new plan (unless an earlier test compiled it): compiles at most once
        second = _fused.compile_count()
        run((4, 3), 0.25)
        run((7,), 0.5)
        assert _fused.compile_count() == second
    finally:
        set_fused(None)
        _fused.reset()


def test_automatic_mode_skips_small_tensors(monkeypatch):
    monkeypatch.setattr(_fused, "MIN_NUMEL", 100)
    set_fused(None)
    assert not _fused.enabled(torch.zeros(99)) and _fused.enabled(torch.zeros(100))
    set_fused(True)  # forced: every size but the 0- and 1-element ones dynamo specializes
    assert _fused.enabled(torch.zeros(2)) and not _fused.enabled(torch.zeros(1))
    set_fused(False)
    assert not _fused.enabled(torch.zeros(10**4))
    set_fused(None)


def test_fallback_when_compilation_fails(monkeypatch):
    # a compiler that fails: the automatic mode warns once and gives the eager bits
    def broken(name, p):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(_fused, "_get_compiled", broken)
    _fused.reset()
    torch.manual_seed(8)
    x = torch.randn(5, 4)
    make = _mlp(4, torch.float32, 6, 0.9)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        auto = _run(make, x, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per kernel: no second warning
        auto2 = _run(make, x, None)
    eager = _run(make, x, False)
    _assert_same(auto, eager)
    _assert_same(auto2, eager)
    # forcing the fused path raises instead of falling back
    set_fused(True)
    try:
        with pytest.raises(RuntimeError, match="unavailable|no compiler"):
            make()(x)
    finally:
        set_fused(None)
        _fused.reset()


def test_set_fused_validates_and_environment(monkeypatch):
    with pytest.raises(TypeError, match="True, False or None"):
        set_fused(1)
    monkeypatch.setenv("SECONDORDER_FUSED", "0")
    assert so.exact.fused_mode() is False
    monkeypatch.setenv("SECONDORDER_FUSED", "maybe")
    with pytest.raises(ValueError, match="SECONDORDER_FUSED"):
        so.exact.fused_mode()
    monkeypatch.setenv("SECONDORDER_FUSED", "auto")
    assert so.exact.fused_mode() is None
    set_fused(False)
    assert so.exact.fused_mode() is False
    set_fused(None)


@pytest.mark.parametrize("m", [3, 7, 10, 2**31 - 1, 15099494])
def test_divmod_estimate_and_corrections_are_exact(m):
    # the traceable division (run eagerly here) against Python's floor division, at the edges of
    # the bounds each plan is used for
    edges = [0, 1, -1, m - 1, m, -m, 2**53 - 1, -(2**53) + 1, 2**62, -(2**62), 2**62 - 1]
    torch.manual_seed(m % 1000)
    a = torch.cat([torch.tensor(edges), torch.randint(-(2**62), 2**62, (2000,))])
    for how, lim in (("big", 2**62), ("small", 2**53)):
        sel = a[a.abs() <= lim]
        q, r = _fused._divmod(sel, torch.tensor(m), torch.tensor(1.0 / m, dtype=torch.float64), torch.tensor(0), how)
        assert [int(v) for v in q] == [int(v) // m for v in sel]
        assert [int(v) for v in r] == [int(v) % m for v in sel]


def test_plan_matches_store_bounds():
    st = BitStore(torch.zeros(3, dtype=torch.int64), rational_gamma(0.9, dyadic=True), 2**53)
    assert _fused.plan(st.n, st.d, st.v_bound) == (("pow2", "small", "pow2"), ("small", "pow2", "small"))
    for g in (0.3141592, 0.9):
        st = BitStore(torch.zeros(3, dtype=torch.int64), rational_gamma(g), 2**63)
        low = "big" if st.n * st.d > 2**53 else "small"
        assert _fused.plan(st.n, st.d, st.v_bound) == (("big", "small", low), ("big", "small" if st.d >= 3 else "pow2", low))


@needs_compiler
def test_second_backward_with_retain_graph():
    # the fused kernels write the walking state in place: the forward's final state, which a second
    # backward starts from again, must not be touched
    torch.manual_seed(9)
    x = torch.randn(6, 5)
    set_fused(True)
    try:
        net = _mlp(5, torch.float32, 10, 0.9)()
        out = net(x.requires_grad_(True))
        loss = (out**2).sum()
        g1 = torch.autograd.grad(loss, [x, *net.parameters()], retain_graph=True)
        g2 = torch.autograd.grad(loss, [x, *net.parameters()])
    finally:
        set_fused(None)
    _assert_same(list(g1), list(g2))
    set_fused(False)
    try:
        ref = torch.autograd.grad((net(x) ** 2).sum(), [x, *net.parameters()])
    finally:
        set_fused(None)
    _assert_same(list(g1), list(ref))


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_feature_gamma_runs_eager_with_the_fused_kernels_bits(dtype):
    """A per-feature gamma takes the eager integer path (the kernels take scalar constants): with
    fused kernels forced, a constant per-feature gamma gives the scalar network's fused bits, and a
    varying one gives the same bits fused or not."""
    torch.manual_seed(1)
    x = torch.randn(6, 5, dtype=dtype)
    const = torch.full((5,), 0.75, dtype=dtype)
    _assert_same(_run(_mlp(5, dtype, 12, const), x, True), _run(_mlp(5, dtype, 12, 0.75), x, True))
    varying = torch.tensor([0.9, 0.99, 0.75, 0.3141592, 0.5], dtype=dtype)
    _assert_same(_run(_mlp(5, dtype, 12, varying), x, True), _run(_mlp(5, dtype, 12, varying), x, False))
