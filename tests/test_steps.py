"""The update rules of secondorder._steps against hand-computed values, and their inverses."""

import torch

from secondorder import _steps as S

D = torch.float64


def _t(*v):
    return torch.tensor(v, dtype=D)


def test_resnet_and_momentum_step_by_hand():
    x, v, fx = _t(1.0, -2.0), _t(0.5, 0.25), _t(4.0, 8.0)
    assert torch.equal(S.resnet_step(x, fx), _t(5.0, 6.0))
    x1, v1 = S.momentum_step(x, v, fx, 0.75)
    # v1 = 0.75 v + 0.25 f = (0.375 + 1, 0.1875 + 2);  x1 = x + v1
    assert torch.equal(v1, _t(1.375, 2.1875))
    assert torch.equal(x1, _t(2.375, 0.1875))
    x0, v0 = S.momentum_step(x, v, fx, 0.0)  # gamma = 0: the ResNet step, v = f
    assert torch.equal(x0, S.resnet_step(x, fx)) and torch.equal(v0, fx)


def test_momentum_inverse_undoes_the_step():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, generator=g, dtype=D)

    def f(z):
        return torch.tanh(z @ W)

    x, v = torch.randn(5, 3, generator=g, dtype=D), torch.randn(5, 3, generator=g, dtype=D)
    for gamma in (0.5, 0.9, 1.0):
        x1, v1 = S.momentum_step(x, v, f(x), gamma)
        xb, vb = S.momentum_inverse(x1, v1, f, gamma)
        torch.testing.assert_close(xb, x, rtol=0, atol=1e-15)
        torch.testing.assert_close(vb, v, rtol=0, atol=1e-14 / gamma)


def test_coupling_step_and_inverse():
    def F(z):
        return 2 * z

    def G(z):
        return z * z

    y1, y2 = S.coupling_step(_t(1.0), _t(3.0), F, G)
    assert torch.equal(y1, _t(7.0)) and torch.equal(y2, _t(52.0))  # y1 = 1 + 6, y2 = 3 + 49
    x1, x2 = S.coupling_inverse(y1, y2, F, G)
    assert torch.equal(x1, _t(1.0)) and torch.equal(x2, _t(3.0))


def test_inverse_pieces_compose_to_the_inverse():
    x, v, fx = _t(2.0, 3.0), _t(0.5, -1.0), _t(1.0, 2.0)
    x1, v1 = S.momentum_step(x, v, fx, 0.5)
    assert torch.equal(S.momentum_unstep_x(x1, v1), x)
    assert torch.equal(S.momentum_unstep_v(v1, fx, 0.5), v)
    a, h = _t(1.5), _t(0.25)
    assert torch.equal(S.half_step(a, h), _t(1.75)) and torch.equal(S.half_unstep(S.half_step(a, h), h), a)
    # on fixed-point integers the pieces are exact for any values (what the exact backward uses)
    A, H = torch.tensor([2**60, -7]), torch.tensor([12345, 2**40])
    assert torch.equal(S.half_unstep(S.half_step(A, H), H), A)
