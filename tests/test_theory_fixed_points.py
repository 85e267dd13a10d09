"""docs/theory.md §5: layer determinants, the heavy-ball window and rate, learning to optimize."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import secondorder as so
from secondorder import data
from theory import fixed_points as fp

D = torch.float64


def _mlp(d_in, d_out, seed):
    torch.manual_seed(seed)
    return fp._MLP(d_in, d_out)


# ------------------------------------------------------------------ determinants
@pytest.mark.parametrize("gamma,d,depth", [(0.9, 4, 1), (0.5, 7, 1), (0.3, 3, 4), (0.99, 5, 2)])
def test_momentum_layer_determinant_is_gamma_to_the_d(gamma, d, depth):
    f = _mlp(d, d, seed=d)
    z = torch.randn(2 * d, dtype=D)
    J = torch.autograd.functional.jacobian(fp.momentum_layer_map(f, gamma, depth), z)
    assert J.shape == (2 * d, 2 * d)
    # float64 LU of a <= 14 x 14 matrix: a few hundred ulps relative
    assert torch.linalg.det(J).item() == pytest.approx(gamma ** (d * depth), rel=1e-12)
    # block structure of one layer: [[I + (1-g) J_f, g I], [(1-g) J_f, g I]]
    if depth == 1:
        Jf = torch.autograd.functional.jacobian(lambda x: f(x.unsqueeze(0))[0], z[:d])
        eye = torch.eye(d, dtype=D)
        expected = torch.cat([torch.cat([eye + (1 - gamma) * Jf, gamma * eye], 1),
                              torch.cat([(1 - gamma) * Jf, gamma * eye], 1)], 0)
        torch.testing.assert_close(J, expected, rtol=1e-14, atol=1e-15)  # same float ops


def test_learnable_gamma_determinant():
    d, g = 4, nn.Parameter(torch.tensor(0.7, dtype=D))
    det = fp.jacobian_det(fp.momentum_layer_map(_mlp(d, d, 1), g), torch.randn(2 * d, dtype=D))
    assert det == pytest.approx(0.7**d, rel=1e-12)  # float64 LU


@pytest.mark.parametrize("d,depth", [(3, 1), (6, 1), (5, 3)])
def test_revnet_coupling_preserves_volume(d, depth):
    F, G = _mlp(d, d, 2), _mlp(d, d, 3)
    z = 3 * torch.randn(2 * d, dtype=D)  # far from 0: strongly nonlinear tanh regime
    assert fp.jacobian_det(fp.revnet_layer_map(F, G, depth), z) == pytest.approx(1.0, abs=1e-12)
    # while a ResNet layer with the same kind of function does not
    f = _mlp(2 * d, 2 * d, 4)
    det = fp.jacobian_det(lambda x: so.ResNet([f])(x.unsqueeze(0))[0], z)
    assert abs(det - 1) > 1e-3


# ------------------------------------------------------------------ heavy ball
@pytest.mark.parametrize("gamma", [0.0, 0.25, 0.5, 0.81, 0.95])
def test_window_and_rate_closed_forms(gamma):
    lo, hi = fp.window(gamma)
    assert lo == pytest.approx(-2 * (1 + gamma) / (1 - gamma)) and hi == 0.0
    for j in np.linspace(1.2 * lo, 0.2, 97):
        M = fp.iteration_matrix(j, gamma)
        rho = np.abs(np.linalg.eigvals(M)).max()
        assert fp.spectral_radius(j, gamma) == pytest.approx(rho, rel=1e-6)  # roots vs eig; ~sqrt(eps) at a double root
        if abs(j - lo) > 1e-3 and abs(j) > 1e-3:  # away from the edges, where rho = 1
            assert (rho < 1) == (lo < j < 0)
    if gamma > 0:
        a, b = fp.underdamped(gamma)
        assert lo < a < b < 0  # the underdamped interval lies inside the window
        for j in np.linspace(a, b, 11)[1:-1]:
            assert fp.spectral_radius(j, gamma) == pytest.approx(math.sqrt(gamma), rel=1e-12)


@pytest.mark.parametrize("gamma,j", [(0.5, -0.99 * 6), (0.5, -1.01 * 6), (0.7, -0.3), (0.7, 0.05),
                                     (0.9, -2.0), (0.2, -0.2)])
def test_iterated_layer_matches_spectral_radius(gamma, j):
    dist = fp.iterate_quadratic([j], gamma, 800)
    rho = fp.spectral_radius(j, gamma)
    # fitted over 400 iterations; the bias (oscillation of log||(x, v)||) measured <= 4e-5
    assert fp.fitted_rate(dist) == pytest.approx(rho, rel=2e-4)
    assert (dist[-1] < dist[0]) == (rho < 1)


def test_underdamped_rate_is_sqrt_gamma():
    gamma = 0.81
    a, b = fp.underdamped(gamma)
    dist = fp.iterate_quadratic(np.linspace(a, b, 9)[1:-1], gamma, 600, seed=3)
    assert fp.fitted_rate(dist, start=20) == pytest.approx(0.9, rel=1e-4)  # measured 1e-5


def test_momentum_layer_is_heavy_ball():
    A, b, x_star = fp.problems("least_squares", 3, 5, seed=4)  # Hessian spectrum ~ [0.25, 2.25]
    grad = lambda x: data.least_squares_gradient(x, A, b)  # noqa: E731
    gamma, alpha, iters = 0.6, 1.0, 200  # j = -alpha h in the window (-8, 0); rate <= ~0.8
    x0 = torch.randn(3, 5, dtype=D)
    hb = fp.heavy_ball_iterates(grad, x0, gamma, alpha, iters)
    xs = so.MomentumResNet([fp._GradStep(grad, alpha)] * iters, gamma=gamma).trajectory(x0)
    torch.testing.assert_close(xs, hb, rtol=0, atol=1e-13)  # rounding of two algebraically equal recursions
    assert (xs[-1] - x_star).norm() < 1e-8


# ------------------------------------------------------------------ learning to optimize
def test_solver_budgets_and_update_rules():
    d, n, depth = 4, 3, 5
    A, b, x_star = fp.problems("least_squares", n, d, seed=0)
    counts = {}
    for kind in fp.MODELS:
        model = fp.Solver(kind, data.least_squares_gradient, d, depth)
        counts[kind] = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            model.f.P.copy_(0.3 * torch.eye(d) + 0.05 * torch.randn(d, d, dtype=D))
        P = model.f.P.detach()
        g = lambda x, P=P: data.least_squares_gradient(x, A, b) @ P.T  # noqa: E731
        x, v = torch.zeros(n, d, dtype=D), torch.zeros(n, d, dtype=D)
        for _ in range(depth):  # the explicit recursions of the docstring
            if kind == "resnet":
                x = x - 1.0 * g(x)
            elif kind == "momentum":
                v = 0.5 * v - 0.5 * g(x)
                x = x + v
            else:
                v = v - g(x)  # z
                x = x + 1.0 * v
        with torch.no_grad():
            torch.testing.assert_close(model(A, b), x, rtol=1e-13, atol=1e-14)  # same ops, reordered
            assert model.trajectory(A, b, depth).shape == (depth + 1, n, d)
    assert counts == {k: d * d + 1 for k in fp.MODELS}
    with pytest.raises(ValueError, match=r"kind == 'lstm', must be one of"):
        fp.Solver("lstm", data.least_squares_gradient, d, depth)


def test_momentum_projection_keeps_gamma_valid():
    model = fp.Solver("momentum", data.least_squares_gradient, 3, 2)
    with torch.no_grad():
        model.gamma.fill_(1.7)
    model.project()
    assert model.gamma.item() == 0.999


def test_claims_pass_quick():
    claims = fp.run(quick=True, seed=0)
    failed = [(c.name, c.measured, c.expected) for c in claims if not c.passed]
    assert not failed
    assert len(claims) == 41  # 40 + the Jacobian block (1 - gamma) df/dx
    table = fp.markdown_table(fp.learning_to_optimize(True, 0)).splitlines()  # cached run
    assert len(table) == 2 + 2 * 2  # header + problems x depths
    assert table[0].startswith("| problem | N | ResNet at N | ResNet at 10N | Momentum at N |")
    assert table[2].startswith("| least squares | 4 | ")


def test_figure_quick():
    # learning_to_optimize is cached: this reuses the run of the test above when run together
    from figures import fixed_points as fig

    out = fig.compute(quick=True, seed=0)
    nums = fig.numbers(out)
    assert all(math.isfinite(v) for v in nums.values())
    n = out["config"]["curve_depth"]
    assert nums[f"least_squares/momentum/error_at_{10 * n}"] < 1e-6 < nums[f"least_squares/revnet/error_at_{10 * n}"]
    f = fig.plot(out)
    assert len(f.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(f)
