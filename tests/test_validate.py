"""The one validation rule, across the public API: wrong type -> TypeError, bad value ->
ValueError, what precision cannot do -> secondorder.NumericalError (a RuntimeError)."""

import pytest
import torch
from problems import mlp_functions
from torch import nn

import secondorder as so

F = nn.Linear(2, 2).double()


def test_error_hierarchy():
    for cls in (so.ReconstructionError, so.FixedPointOverflowError):
        assert issubclass(cls, so.NumericalError)
    assert issubclass(so.NumericalError, RuntimeError)
    assert not issubclass(so.NumericalError, ValueError)
    assert issubclass(so.NotRepresentableError, ValueError)  # a value with no preimage


@pytest.mark.parametrize(
    "call",
    [
        lambda bad: so.MomentumResNet(mlp_functions(2), gamma=bad),
        lambda bad: so.SecondOrderODE(F, eps=bad),
        lambda bad: so.SecondOrderODE(F, t1=bad),
        lambda bad: so.NeuralODE(F, rtol=bad),
        lambda bad: so.gamma_from_eps(bad, 4),
        lambda bad: so.gamma_from_eps(0.5, 4, t1=bad),
        lambda bad: so.eps_from_gamma(bad, 4),
        lambda bad: so.min_depth(bad),
        lambda bad: so.linear.m_eps(bad),
        lambda bad: so.data.logistic_problems(2, 3, l2=bad),
    ],
)
def test_wrong_type_is_type_error_bad_value_is_value_error(call):
    for wrong_type in ("0.5", None, [0.5], True):
        with pytest.raises(TypeError, match="must be a real number"):
            call(wrong_type)
    for bad_value in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError, match="must be"):
            call(bad_value)


@pytest.mark.parametrize(
    "call",
    [
        lambda bad: so.discretize(so.SecondOrderODE(F, eps=0.5), bad),
        lambda bad: so.gamma_from_eps(0.5, bad),
        lambda bad: so.eps_from_gamma(0.5, bad),
        lambda bad: so.data.least_squares_problems(bad, 3),
    ],
)
def test_counts(call):
    for wrong_type in (2.0, "2", None, True):
        with pytest.raises(TypeError, match="must be an integer"):
            call(wrong_type)
    for bad_value in (0, -3):
        with pytest.raises(ValueError, match="must be an integer >= 1"):
            call(bad_value)


def test_velocity_checked_once_with_one_wording():
    x = torch.zeros(3, 2, dtype=torch.float64)
    net = so.MomentumResNet(mlp_functions(2, d=2), gamma=0.5)
    with pytest.raises(TypeError, match="v0 must be a tensor, got list"):
        net(x, v0=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"v0 has shape \(3, 3\), must have the shape of x \(3, 2\)"):
        net(x, v0=torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"v0 has shape \(3, 3\), must have the shape of x0 \(3, 2\)"):
        so.SecondOrderODE(F)(x, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="v0 must be a tensor, got list"):
        so.SecondOrderODE(F)(x, [0.0])


def test_numerical_failure_is_numerical_error():
    net = so.MomentumResNet(mlp_functions(2, d=2), gamma=0.5, backward="exact")
    x = torch.full((3, 2), 1e300, dtype=torch.float64, requires_grad=True)
    with pytest.raises(so.NumericalError, match="fixed_point_bits|range"):
        net(x)
