"""Fixed-point arithmetic and the bit store: bit-exact round trips at any depth."""

import copy
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import mlp
from torch import nn

import secondorder as so
from secondorder.exact import BitStore, FixedPoint, floor_divmod, rational_gamma


@given(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=40), st.integers(1, 2**31))
@settings(max_examples=60, deadline=None)
def test_floor_divmod(values, m):
    a = torch.tensor(values, dtype=torch.int64)
    q, r = floor_divmod(a, m)
    assert all(0 <= int(ri) < m for ri in r)
    assert [int(qi) * m + int(ri) for qi, ri in zip(q, r)] == values
    assert [int(qi) for qi in q] == [v // m for v in values]  # Python's // is floor division


@given(
    st.lists(st.integers(-(2**60), 2**60), min_size=1, max_size=30),
    st.fractions(min_value=Fraction(1, 2**29), max_value=1, max_denominator=2**31),
    st.integers(1, 700),
)
@settings(max_examples=40, deadline=None)
def test_bitstore_round_trip_is_bit_exact(values, gamma, layers):
    V0 = torch.tensor(values, dtype=torch.int64)
    store = BitStore(V0, gamma)
    V = V0
    for _ in range(layers):
        W = store.mul(V)
        # each product is within one quantum of V * n/d
        exact = [Fraction(int(v)) * gamma for v in V]
        assert all(-1 < int(w) - e < 1 for w, e in zip(W, exact))
        V = W
    for _ in range(layers):
        V = store.div(V)
    assert torch.equal(V, V0)
    assert int(store.S.abs().max()) == 0 and store.spills == []


@given(st.lists(st.integers(-(2**53) + 1, 2**53 - 1), min_size=1, max_size=40), st.integers(3, 2**31))
@settings(max_examples=60, deadline=None)
def test_floor_divmod_float_route(values, m):
    # below 2**53 the float64 route is exact: compare with Python's floor division
    a = torch.tensor(values, dtype=torch.int64)
    q, r = floor_divmod(a, m | 1, bound=2**53)
    assert [int(qi) for qi in q] == [v // (m | 1) for v in values]
    assert [int(ri) for ri in r] == [v % (m | 1) for v in values]


def test_bitstore_rejects_tiny_gamma():
    with pytest.raises(ValueError, match="too small for exact arithmetic"):
        BitStore(torch.zeros(3, dtype=torch.int64), Fraction(1, 2**31))


def test_store_spills_and_memory_per_layer():
    V0 = torch.randint(-(2**50), 2**50, (1000,))
    store = BitStore(V0, rational_gamma(0.9))
    V = V0
    for _ in range(2000):
        V = store.mul(V)
    # log2(10/9) = 0.152 bits per layer; the worst-case bound reaches 2**53 / 10 after ~311 layers
    # from an empty store, then each int32 spill of 31 bits buys 31 / 0.152 = 204 more layers
    assert len(store.spills) == 1 + (2000 - 311) // 203
    assert 200 <= store.spills[1] - store.spills[0] <= 206
    assert store.nbytes == 1000 * (8 + 4 * len(store.spills))
    for _ in range(2000):
        V = store.div(V)
    assert torch.equal(V, V0)


def test_rational_gamma():
    assert rational_gamma(0.9) == Fraction(9, 10)
    assert rational_gamma(0.99) == Fraction(99, 100)
    assert rational_gamma(0.5) == Fraction(1, 2)
    g = 0.8937262512
    assert abs(float(rational_gamma(g)) - g) < 1e-15
    assert rational_gamma(g).denominator <= 2**31
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        rational_gamma(0.0)


def test_fixed_point_quantize_dequantize():
    fp = FixedPoint(torch.float32)
    x = torch.randn(1000)
    # float32 keeps float32 accuracy: the 2**-32 quantum is below one ulp for |x| > 2**-9
    big = x.abs() > 2**-9
    assert torch.equal(fp.dequantize(fp.quantize(x))[big], x[big])
    fp64 = FixedPoint(torch.float64)
    y = torch.randn(1000, dtype=torch.float64)
    assert float((fp64.dequantize(fp64.quantize(y)) - y).abs().max()) <= 2.0**-47
    with pytest.raises(TypeError, match="floating-point"):
        FixedPoint(torch.int32)


def _mlp(depth, d, dtype, dropout=0.0):
    torch.manual_seed(1)
    return [mlp(d, dtype=dtype, dropout=dropout) for _ in range(depth)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99, 0.8937262512])
def test_momentum_round_trip_bit_exact_deep(dtype, gamma):
    # 1500 layers: several spills at gamma 0.5 (1 bit per layer) and 0.9
    net = so.MomentumResNet(_mlp(1500, 4, dtype, dropout=0.2), gamma, backward="exact")
    x = torch.randn(5, 4, dtype=dtype)
    v0 = torch.randn(5, 4, dtype=dtype)
    r = so.exact_roundtrip(net, x, v0=v0)
    assert r["bit_exact"]
    if gamma == 0.5:
        assert len(r["spills"]) >= 20
    fp = FixedPoint(dtype)
    assert torch.equal(r["x0"], fp.dequantize(fp.quantize(x)))
    assert torch.equal(r["v0"], fp.dequantize(fp.quantize(v0)))
    # the round trip's forward output is the model's own exact forward (same RNG, same masks)
    torch.manual_seed(7)
    a = so.exact_roundtrip(net, x, v0=v0)["x_N"]
    torch.manual_seed(7)
    with torch.no_grad():
        b = net(x, v0=v0)
    assert torch.equal(a, b)


def test_revnet_round_trip_bit_exact_conv():
    torch.manual_seed(0)
    F = [nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Tanh()) for _ in range(200)]
    G = [nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh()) for _ in range(200)]
    net = so.RevNet(F, G, backward="exact")
    x = torch.randn(2, 4, 6, 6)
    r = so.exact_roundtrip(net, x)
    assert r["bit_exact"]
    # the forward updated the BatchNorm statistics once; the inverse pass did not touch them again
    assert all(int(m.num_batches_tracked) == 1 for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_format_ladder_keeps_small_values_fine_and_large_values_in_range():
    class Grow(nn.Module):
        """A residual function that pushes the state to |x| ~ 3000 (beyond the 52-bit range 512)."""

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4).double()
            self.bn = nn.BatchNorm1d(4).double()
            self.drop = nn.Dropout(0.3)

        def forward(self, x):
            return 60.0 + self.drop(torch.tanh(self.bn(self.lin(x))))

    torch.manual_seed(0)
    fs = [Grow() for _ in range(50)]
    x = torch.randn(8, 4, dtype=torch.float64)
    small = so.exact_roundtrip(so.MomentumResNet(_mlp(20, 4, torch.float64), 0.9, backward="exact"), x)
    assert small["bits"] == 52 and small["bit_exact"]
    torch.manual_seed(1)
    big = so.exact_roundtrip(so.MomentumResNet(fs, 0.9, backward="exact"), x)
    assert big["bits"] == 46 and big["bit_exact"] and float(big["x_N"].abs().max()) > 512

    def run(backward):
        torch.manual_seed(2)
        net = so.MomentumResNet(copy.deepcopy(fs), 0.9, backward=backward)  # same starting buffers
        net.zero_grad()
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        (out.sin().sum()).backward()
        after = torch.rand(2)  # the retry restored the RNG: the stream continues as with autograd
        return torch.cat([xi.grad.flatten()] + [p.grad.flatten() for p in net.parameters()]), after, [b.clone() for b in net.buffers()]

    g_ref, r_ref, b_ref = run("autograd")
    g, r, b = run("exact")
    assert torch.equal(r, r_ref)
    for u, w in zip(b, b_ref):  # BatchNorm statistics updated once, as by autograd
        torch.testing.assert_close(u, w, rtol=1e-12, atol=1e-12)
    # 46-bit quantum 1.4e-14 on states ~3000 over 50 layers
    assert float((g - g_ref).norm() / g_ref.norm()) <= 1e-9


def test_float32_velocity_range_moves_down_the_ladder():
    # float32: |V| must stay below 2**53 quanta (|v| < 2**21 at 32 bits) for the float64 divisions
    fs = _mlp(30, 4, torch.float32)
    x = torch.randn(3, 4)
    v0 = torch.full((3, 4), 3.0e6)  # above 2**21 = 2.1e6: the 32-bit rung overflows, 26 bits hold it
    net = so.MomentumResNet(fs, 0.9, backward="exact")
    r = so.exact_roundtrip(net, x, v0=v0)
    assert r["bits"] == 26 and r["bit_exact"]
    with pytest.raises(so.FixedPointOverflowError, match=r"the initial velocity v0 at layer 0 reached \|value\| = 3e\+06"):
        so.MomentumResNet(fs, 0.9, backward="exact", fixed_point_bits=32)(x, v0=v0)
