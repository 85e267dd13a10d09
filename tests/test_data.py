"""Problem families of secondorder.data: shapes, determinism, zero gradient at the minimisers."""

import pytest
import torch

from secondorder import data


def _num_grad(loss, x, A, b, h=1e-6):
    """Central differences of ``loss`` (summed over the batch) in float64."""
    g = torch.zeros_like(x)
    for i in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, i] = h
        g[:, i] = (loss(x + e, A, b) - loss(x - e, A, b)) / (2 * h)
    return g


@pytest.mark.parametrize("make", [data.least_squares_problems, data.logistic_problems])
def test_shapes_dtype_determinism(make):
    A, b, x = make(5, 3, seed=7)
    assert A.shape == (5, 6, 3) and b.shape == (5, 6) and x.shape == (5, 3)  # m = 2 d by default
    assert A.dtype == b.dtype == x.dtype == torch.float64
    A2, b2, x2 = make(5, 3, seed=7)
    assert torch.equal(A, A2) and torch.equal(b, b2) and torch.equal(x, x2)
    A3, _, _ = make(5, 3, seed=8)
    assert not torch.equal(A, A3)
    A4, b4, x4 = make(2, 4, seed=0, m=9, dtype=torch.float32)
    assert A4.shape == (2, 9, 4) and A4.dtype == b4.dtype == x4.dtype == torch.float32


def test_least_squares_minimiser_has_zero_gradient():
    A, b, x = data.least_squares_problems(64, 8, seed=0)
    g = data.least_squares_gradient(x, A, b)
    # QR solve in float64: residual ~ eps * cond(A)^2 * |A^T b|, cond(A)^2 <= ~100 here
    assert g.norm(dim=-1).max() < 1e-12
    # the minimiser beats a perturbation by exactly 1/2 |A e|^2 (the loss is quadratic)
    e = 1e-3 * torch.randn_like(x, dtype=torch.float64)
    gain = data.least_squares_loss(x + e, A, b) - data.least_squares_loss(x, A, b)
    expected = 0.5 * (A @ e.unsqueeze(-1)).squeeze(-1).pow(2).sum(-1)
    torch.testing.assert_close(gain, expected, rtol=1e-6, atol=1e-15)  # cancellation of O(1) losses


def test_logistic_minimiser_has_zero_gradient_and_labels():
    A, b, x = data.logistic_problems(64, 8, seed=0)
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    g = data.logistic_gradient(x, A, b)
    assert g.norm(dim=-1).max() <= 1e-12  # Newton's stopping rule
    # strongly convex with weight l2: L(x + e) - L(x) >= l2/2 |e|^2
    e = 1e-2 * torch.randn(x.shape, dtype=torch.float64)
    gain = data.logistic_loss(x + e, A, b) - data.logistic_loss(x, A, b)
    assert (gain >= 0.5 * data.LOGISTIC_L2 * e.pow(2).sum(-1) - 1e-14).all()  # rounding of O(1) losses


@pytest.mark.parametrize("which", ["least_squares", "logistic"])
def test_gradients_match_finite_differences(which):
    make = getattr(data, f"{which}_problems")
    loss, grad = getattr(data, f"{which}_loss"), getattr(data, f"{which}_gradient")
    A, b, _ = make(3, 4, seed=1)
    x = torch.randn(3, 4, dtype=torch.float64)
    # central differences, h = 1e-6: truncation h^2 |L'''| ~ 1e-12, rounding eps/h ~ 1e-10
    torch.testing.assert_close(grad(x, A, b), _num_grad(loss, x, A, b), rtol=1e-7, atol=1e-8)
    # and autograd agrees to rounding
    xr = x.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(loss(xr, A, b).sum(), xr)
    torch.testing.assert_close(grad(x, A, b), g_auto, rtol=1e-12, atol=1e-14)


def test_logistic_l2_changes_the_minimiser():
    A, b, x1 = data.logistic_problems(4, 3, seed=2, l2=1.0)
    _, _, x2 = data.logistic_problems(4, 3, seed=2, l2=0.01)
    assert data.logistic_gradient(x1, A, b, l2=1.0).norm(dim=-1).max() <= 1e-12
    assert data.logistic_gradient(x2, A, b, l2=0.01).norm(dim=-1).max() <= 1e-12
    assert x1.norm() < x2.norm()  # a heavier ridge shrinks the solution


def test_errors():
    with pytest.raises(ValueError, match=r"n == 0, must be an integer >= 1"):
        data.least_squares_problems(0, 3)
    with pytest.raises(TypeError, match=r"d must be an integer, got float"):
        data.logistic_problems(2, 3.0)
    with pytest.raises(ValueError, match=r"seed == -1, must be an integer >= 0"):
        data.least_squares_problems(2, 3, seed=-1)
    with pytest.raises(ValueError, match=r"m == 2 < d == 3: least squares needs m >= d"):
        data.least_squares_problems(2, 3, m=2)
    with pytest.raises(ValueError, match=r"l2 == 0.0, must be a finite number > 0"):
        data.logistic_problems(2, 3, l2=0)
    with pytest.raises(ValueError, match=r"flip == 1.5, must be in \[0, 1\]"):
        data.logistic_problems(2, 3, flip=1.5)
    A, b, x = data.least_squares_problems(2, 3)
    with pytest.raises(ValueError, match=r"shapes x \(2, 4\), A \(2, 6, 3\), b \(2, 6\) do not match"):
        data.least_squares_gradient(torch.zeros(2, 4, dtype=A.dtype), A, b)
    with pytest.raises(ValueError, match=r"do not match; expected x \(n, d\)"):
        data.logistic_loss(x, A, b[:, :5])
