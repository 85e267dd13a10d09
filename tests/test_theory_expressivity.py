"""Tests of theory/expressivity.py: the isotonic bound, the crossing check, the data generators,
a reduced training run showing the first-/second-order separation, and the two figures."""

import math

import numpy as np
import pytest
import torch
from problems import Scale

import secondorder as so
from theory import expressivity as E


# --- isotonic bound ----------------------------------------------------------------------------
def test_isotonic_fit_pools_violators():
    # 3 > 2 is the only violation: pooled to their mean 2.5
    np.testing.assert_array_equal(E.isotonic_fit([1.0, 3.0, 2.0, 4.0]), [1.0, 2.5, 2.5, 4.0])
    # a decreasing sequence pools into one block: its mean
    np.testing.assert_array_equal(E.isotonic_fit([3.0, 2.0, 1.0]), [2.0, 2.0, 2.0])
    # already nondecreasing: unchanged
    np.testing.assert_array_equal(E.isotonic_fit([0.0, 0.0, 5.0]), [0.0, 0.0, 5.0])


def test_isotonic_bound_known_values():
    # residuals 0, 0.5, -0.5, 0 -> MSE 0.125 (exact in binary)
    assert E.isotonic_bound([0, 1, 2, 3], [1.0, 3.0, 2.0, 4.0]) == 0.125
    # inputs out of order are sorted first: same sample shuffled
    assert E.isotonic_bound([2, 0, 3, 1], [2.0, 1.0, 4.0, 3.0]) == 0.125
    # tied inputs must take one value: x = 0 twice with y = 0, 2 -> best fit is 1 everywhere,
    # MSE (1 + 1 + 0) / 3 (a per-point fit ignoring the tie would give 1/6)
    assert math.isclose(E.isotonic_bound([0, 0, 1], [0.0, 2.0, 1.0]), 2 / 3, rel_tol=1e-15)


def test_isotonic_bound_of_decreasing_target_is_its_variance():
    x, y = E.cubic_sample(1000, seed=3)
    # y = -x^3 decreases, so the best nondecreasing fit is the constant mean(y)
    var = float(torch.mean((y - y.mean()) ** 2))
    assert math.isclose(E.isotonic_bound(x, y), var, rel_tol=1e-12)  # float64 summation order
    # and that variance estimates E[x^6] = 1/7 (sd sqrt((1/13 - 1/49)/1000) = 0.0075; 4 sd)
    assert abs(var - 1 / 7) < 0.03


def test_isotonic_bound_matches_sklearn():
    isotonic = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 300)
    y = np.sin(4 * x) + 0.3 * rng.normal(size=300)
    fit = isotonic.IsotonicRegression().fit_transform(x, y)
    assert math.isclose(E.isotonic_bound(x, y), float(np.mean((fit - y) ** 2)), rel_tol=1e-10)


def test_isotonic_bound_is_a_lower_bound_for_monotone_maps():
    x, y = E.cubic_sample(200, seed=1)
    b = E.isotonic_bound(x, y)
    for g in (lambda t: 0 * t, lambda t: 0.1 * t, lambda t: torch.tanh(t) - 0.05, lambda t: t**3):
        assert float(torch.mean((g(x) - y) ** 2)) >= b


# --- crossing check ----------------------------------------------------------------------------
def test_crossings_counts_inversions():
    assert E.crossings(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.5, 3.0]])) == 0
    assert E.crossings(torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 1.0, 0.0]])) == 3
    # (layers, n, 1) is accepted
    assert E.crossings(torch.tensor([[0.0, 1.0], [1.0, 0.0]])[..., None]) == 1


def test_crossings_ignores_rounding_level_ties():
    t = torch.tensor([[0.0, 1.0], [0.5, 0.5 - 2**-53]], dtype=torch.float64)  # one ulp apart
    assert E.crossings(t) == 0
    assert E.crossings(t, ulps=0) == 1


def test_crossings_needs_sorted_start():
    with pytest.raises(ValueError, match="sorted"):
        E.crossings(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


# --- data and models ---------------------------------------------------------------------------
def test_cubic_sample():
    x, y = E.cubic_sample(50, seed=0)
    assert x.shape == y.shape == (50, 1) and x.dtype == torch.float64
    assert bool((x[1:] >= x[:-1]).all()) and float(x.abs().max()) <= 1
    assert torch.equal(y, -(x**3))
    assert torch.equal(E.cubic_sample(50, seed=0)[0], x)  # seeded


def test_nested_rings():
    x, labels = E.nested_rings(101, seed=0)
    assert x.shape == (101, 2) and labels.shape == (101,)
    r = x.norm(dim=1)
    assert int((labels == 0).sum()) == 50
    assert float(r[labels == 0].min()) >= 0.5 and float(r[labels == 0].max()) <= 1.0
    assert float(r[labels == 1].min()) >= 1.5 and float(r[labels == 1].max()) <= 2.0


def test_build_models_and_mapping():
    assert math.isclose(E.EPS, 20 / 3, rel_tol=1e-12)
    # the Momentum ResNet is the discretization of the second-order ODE: gamma = 1 - h/eps
    assert math.isclose(so.gamma_from_eps(E.EPS, E.DEPTH, E.T1), E.GAMMA, rel_tol=1e-12)
    f = E.mlp(1)
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)[:, None]
    for name in E.MODELS:
        traj = E.trajectory(E.build(name, f), x)
        assert traj.shape == (E.DEPTH + 1, 7, 1)
        assert torch.equal(traj[0], x)
    # the ResNet is forward Euler of the Neural ODE with F = f / h: same map as an Euler solve
    ode = so.NeuralODE(E._Scaled(f, 1 / E.H), method="euler", options={"step_size": E.H})
    torch.testing.assert_close(ode(x), E.build("resnet", f)(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="model == 'mlp', must be one of"):
        E.build("mlp", f)


# --- training: the separation ------------------------------------------------------------------
def test_neural_ode_stays_above_the_bound_and_does_not_cross():
    r = E.fit_cubic("neural_ode", quick=True, seed=0, steps=150)
    assert r["crossings"] == 0
    # order kept on the evaluation sample => MSE >= isotonic bound (1e-9: float64 sums)
    assert r["mse"] >= r["bound"] * (1 - 1e-9)


def test_resnet_layer_folds_where_f_slope_is_below_minus_one():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)[:, None]
    # x + f(x) = 0.5 x: increasing, never crosses
    assert E.crossings(E.trajectory(E.build("resnet", Scale(-0.5)), x)) == 0
    # x + f(x) = -0.5 x: layer k holds (-0.5)^k x, so the 8 odd layers of 1..15 have all 10
    # neighbour pairs of the input order reversed
    assert E.crossings(E.trajectory(E.build("resnet", Scale(-1.5)), x)) == 10 * 8
    # the Neural ODE with the same f (x' = -22.5 x) is a flow: no crossing whatever the slope
    assert E.crossings(E.trajectory(E.build("neural_ode", Scale(-1.5), quick=False), x)) == 0


def test_second_order_models_cross_and_beat_the_bound():
    r = E.fit_cubic("momentum", quick=True, seed=0)  # 1500 Adam steps, ~2 s
    assert r["crossings"] > 0
    assert r["mse"] < E.MOMENTUM_FRACTION * r["bound"]
    # the ODE, fewer steps (still on the plateau near MSE 0.025): already well below the bound
    r = E.fit_cubic("second_order_ode", quick=True, seed=0, steps=300)
    assert r["crossings"] > 0
    assert r["mse"] < 0.5 * r["bound"]


# --- figures (tiny settings: plumbing and the numbers' format) ---------------------------------
@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(E.CUBIC, True, dict(n_train=32, steps=5, lr=1e-2))
    monkeypatch.setitem(E.RINGS, True, dict(n_train=32, steps=5, lr=1e-2))
    monkeypatch.setitem(E.N_EVAL, True, 40)


def test_dynamics_1d_figure(tiny):
    import matplotlib.pyplot as plt

    from figures import FIGURES, dynamics_1d

    assert FIGURES["dynamics_1d"] == "dynamics_1d"
    data = dynamics_1d.compute(quick=True, seed=0)
    nums = dynamics_1d.numbers(data)
    assert set(nums["mse"]) == {"resnet", "neural_ode", "momentum", "second_order_ode"}
    assert all(isinstance(v, float) for v in nums["mse"].values())
    plt.close(dynamics_1d.plot(data))


def test_nested_rings_figure(tiny):
    import matplotlib.pyplot as plt

    from figures import FIGURES, nested_rings

    assert FIGURES["nested_rings"] == "nested_rings"
    data = nested_rings.compute(quick=True, seed=0)
    nums = nested_rings.numbers(data)
    assert set(nums["accuracy"]) == {"resnet", "neural_ode", "momentum", "second_order_ode"}
    assert all(0 <= v <= 1 for v in nums["accuracy"].values())
    plt.close(nested_rings.plot(data))
