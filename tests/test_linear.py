"""secondorder.linear: psi, Psi, m_eps, represent, is_representable (docs/theory.md §3)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.linalg import block_diag

import secondorder as so
from scripts.problems import ivp_psi
from secondorder.linear import (
    NotRepresentableError,
    Psi,
    dpsi,
    is_representable,
    m_eps,
    psi,
    psi_inverse_real,
    represent,
)

# ---------------------------------------------------------------------------------- psi


@pytest.mark.parametrize("eps", [0.02, 0.3, 1.0, 5.0])
@pytest.mark.parametrize("lam", [-40.0, -11.0, -3.0, -0.25, 0.0, 0.7, 2.0])
@pytest.mark.parametrize("t1", [1.0, 2.5])
def test_psi_matches_solve_ivp(lam, eps, t1):
    # DOP853 at rtol 1e-12 over at most ~100 oscillations: 1e-9 relative to max(1, |psi|)
    assert psi(lam, eps, t1) == pytest.approx(ivp_psi(lam, eps, t1), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("eps", [1e-6, 0.1, 1.0, 1e6])
def test_psi_closed_forms(eps):
    a = 1 / (2 * eps)
    # at lam = -1/(4 eps) (s = 0): (1 + a) e^{-a}; float64 rounding of a few operations
    assert psi(-1 / (4 * eps), eps) == pytest.approx((1 + a) * math.exp(-a), rel=1e-13, abs=1e-300)
    # below it, the oscillating form e^{-a} (cos(a w) + sin(a w)/w), w = sqrt(-1 - 4 eps lam)
    lam = -(1 + 9.0) / (4 * eps)  # w = 3
    assert psi(lam, eps) == pytest.approx(math.exp(-a) * (math.cos(3 * a) + math.sin(3 * a) / 3),
                                          rel=1e-11, abs=1e-300)
    # above it, the two-exponential form with s = sqrt(1 + 4 eps lam) = 1 + 4 eps (a (s-1) = 2)
    s = 1 + 4 * eps
    lam = (s * s - 1) / (4 * eps)  # a (s - 1) = 2 lam / (1 + s), the cancellation-free form
    want = 0.5 * (1 + 1 / s) * math.exp(2 * lam / (1 + s)) + 0.5 * (1 - 1 / s) * math.exp(-a * (1 + s))
    assert psi(lam, eps) == pytest.approx(want, rel=1e-13)


def test_psi_eps_zero_is_exp_and_limit_order_one():
    lam = np.linspace(-3, 2, 11)
    np.testing.assert_allclose(psi(lam, 0.0), np.exp(lam), rtol=1e-15)
    np.testing.assert_allclose(psi(lam, 0.0, t1=2.0), np.exp(2 * lam), rtol=1e-15)
    errs = [np.abs(psi(lam, e) - np.exp(lam)).max() for e in (1e-3, 1e-4, 1e-5)]
    # O(eps): the error ratio per decade of eps is 10 (+/- 5% from the next order)
    assert errs[0] / errs[1] == pytest.approx(10, rel=0.05)
    assert errs[1] / errs[2] == pytest.approx(10, rel=0.05)


def test_psi_tiny_and_huge_eps_are_finite_and_right():
    lam = np.array([-5.0, -1.0, 0.0, 1.0, 3.0])
    # eps = 1e-6: psi = exp(2 lam/(1+s)) (1 + O(eps)); the O(eps lam^2) correction bounds the gap
    np.testing.assert_allclose(psi(lam, 1e-6), np.exp(lam), rtol=3e-5)
    # eps = 1e6: x'' ~ lam x / eps, x(1) ~ 1 + lam/(2 eps) up to O(1/eps^2)
    np.testing.assert_allclose(psi(lam, 1e6) - 1, lam / 2e6, rtol=1e-6, atol=1e-15)
    # extreme arguments never give NaN
    big = np.array([-1e12, -1e6, 1e2, 700.0])
    for eps in (1e-9, 1e-6, 1.0, 1e6, 1e9):
        assert np.all(~np.isnan(psi(big, eps)))


def test_psi_vectorised_torch_numpy_complex():
    lam = np.array([-30.0, -11.0, -0.25, 0.0, 1.5])
    t = torch.tensor(lam, dtype=torch.float64)
    out = psi(t, 0.7)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), psi(lam, 0.7), rtol=1e-14)
    assert isinstance(psi(1.0, 0.7), float | np.floating)
    # complex: real axis agrees, conjugate symmetry, and the complex ODE agrees
    z = np.array([1 + 2j, -30 + 1j, -0.25 + 0.01j])
    np.testing.assert_allclose(psi(lam + 0j, 0.7).real, psi(lam, 0.7), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(psi(z.conj(), 0.7), psi(z, 0.7).conj(), rtol=1e-14)
    lam_c = 1 + 2j
    sol = solve_ivp(lambda t, y: [y[1], (lam_c * y[0] - y[1]) / 0.7], [0, 1],
                    np.array([1, 0], dtype=complex), method="DOP853", rtol=1e-12, atol=1e-14)
    assert psi(lam_c, 0.7) == pytest.approx(sol.y[0, -1], rel=1e-9)
    tc = torch.tensor(z)
    np.testing.assert_allclose(psi(tc, 0.7).numpy(), psi(z, 0.7), rtol=1e-14)


def test_psi_torch_gradient():
    lam = torch.tensor([-30.0, -11.0, -0.25, -0.2499999, 0.3, 2.0], dtype=torch.float64,
                       requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: psi(x, 1.0), (lam,))
    g, = torch.autograd.grad(psi(lam, 1.0).sum(), lam)
    # the closed-form derivative used by the inversion agrees with autograd (float64 rounding)
    np.testing.assert_allclose(g.numpy(), dpsi(lam.detach().numpy(), 1.0), rtol=1e-9, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(st.floats(-60, 4), st.floats(0.01, 50), st.floats(0.3, 3))
def test_psi_time_scaling(lam, eps, t1):
    # psi(lam, eps, t1) = psi(t1 lam, eps/t1): both sides are the same float computation
    assert psi(lam, eps, t1) == pytest.approx(psi(t1 * lam, eps / t1), rel=1e-12, abs=1e-300)


# ---------------------------------------------------------------------------------- Psi


def _eig_Psi(theta, eps, t1=1.0):
    w, V = np.linalg.eig(theta)
    return (V @ np.diag(psi(w, eps, t1)) @ np.linalg.inv(V)).real


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-3, 0.05, 1.0, 1e6])
@pytest.mark.parametrize("t1", [1.0, 0.5])
def test_Psi_diagonalizable_matches_eigen_formula(eps, t1):
    theta = np.random.default_rng(0).standard_normal((4, 4))
    # expm / eigen formula differ by rounding amplified by cond(V) (~10 here) and |theta|
    np.testing.assert_allclose(Psi(theta, eps, t1), _eig_Psi(theta, eps, t1), atol=1e-12)
    th = torch.tensor(theta)
    out = Psi(th, eps, t1)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), _eig_Psi(theta, eps, t1), atol=1e-12)


@pytest.mark.parametrize("eps", [1e-6, 0.01, 0.5, 1.0, 1e6])
def test_Psi_jordan_block_closed_form(eps):
    # Psi(lam I + N) = psi(lam) I + psi'(lam) N for the 2x2 Jordan block
    for lam in (-20.0, -2.0, 0.5):
        P = Psi(np.array([[lam, 1.0], [0.0, lam]]), eps)
        # float64 rounding of expm / the stiff closed form, relative to max(1, |psi|)
        assert P[0, 0] == pytest.approx(psi(lam, eps), rel=1e-12, abs=1e-13)
        assert P[0, 1] == pytest.approx(dpsi(lam, eps), rel=1e-10, abs=1e-13)
        assert P[1, 0] == 0.0


def test_Psi_matches_matrix_ode():
    theta = np.array([[0.3, -2.0, 0.1], [1.5, -0.4, 0.0], [0.2, 0.7, -1.0]])
    eps, t1, d = 0.4, 1.3, 3

    def rhs(t, y):
        x, u = y[:d], y[d:]
        return np.concatenate([u, (theta @ x - u) / eps])

    cols = [solve_ivp(rhs, [0, t1], np.concatenate([e, np.zeros(d)]), method="DOP853",
                      rtol=1e-12, atol=1e-14).y[:d, -1] for e in np.eye(d)]
    # DOP853 at rtol 1e-12
    np.testing.assert_allclose(Psi(theta, eps, t1), np.stack(cols, 1), atol=1e-10)


def test_Psi_batched_and_gradcheck():
    theta = torch.randn(2, 3, 3, dtype=torch.float64)
    P = Psi(theta, 0.5)
    for i in range(2):
        torch.testing.assert_close(P[i], Psi(theta[i], 0.5), rtol=0, atol=1e-14)
    th = theta[0].clone().requires_grad_(True)
    for eps in (0.0, 1e-3, 0.5):
        assert torch.autograd.gradcheck(lambda t, e=eps: Psi(t, e), (th,))


def test_Psi_errors():
    with pytest.raises(ValueError, match=r"theta must be a square matrix"):
        Psi(np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match=r"eps == -1.0, must be a finite number >= 0"):
        Psi(np.eye(2), -1.0)
    with pytest.raises(ValueError, match=r"t1 == 0.0, must be a finite number > 0"):
        Psi(np.eye(2), 1.0, t1=0.0)
    with pytest.raises(ValueError, match=r"eps == nan"):
        psi(1.0, float("nan"))


# ---------------------------------------------------------------------------------- m_eps


def test_m_eps_sanity_value_and_bounds():
    m, lam = m_eps(1.0)
    # docs/theory.md §3.2 gives 6 significant digits
    assert m == pytest.approx(-0.613499, abs=5e-7)
    assert lam == pytest.approx(-11.0478, abs=5e-5)
    assert m_eps(0.0) == (0.0, -math.inf)
    prev = 0.0
    for eps in (0.05, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0):
        m, lam = m_eps(eps)
        a = 1 / (2 * eps)
        assert -(1 + a) * math.exp(-a) < m <= -math.exp(-a)
        assert m < prev  # decreases strictly with eps
        prev = m
        # it is the minimum on a fine grid of the real line, attained at lam
        grid = np.linspace(lam - 60 * eps - 50, 5, 200001)
        assert psi(grid, eps).min() >= m - 1e-12
        assert psi(lam, eps) == pytest.approx(m, rel=1e-14)
    # t1: the minimum value depends on eps/t1, its location scales as 1/t1
    m2, lam2 = m_eps(2.0, t1=2.0)
    assert m2 == pytest.approx(m_eps(1.0)[0], rel=1e-14)
    assert lam2 == pytest.approx(m_eps(1.0)[1] / 2, rel=1e-14)


# ---------------------------------------------------------------------------------- represent


def _roundtrip(D, eps, t1=1.0):
    theta = represent(D, eps, t1=t1)
    assert theta.dtype == np.float64 and np.isrealobj(theta)
    # the construction checks 1e-9 x |theta|; well-conditioned cases reach rounding x |theta|
    np.testing.assert_allclose(Psi(theta, eps, t1), D, atol=1e-11 * max(1.0, np.abs(theta).max()))
    return theta


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.1, 1.0, 1e6])
def test_represent_roundtrips(eps):
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    cases = [
        np.diag([2.0, 0.5, 1.0]),
        np.array([[0.0, -0.8], [0.8, 0.0]]),  # complex pair
        -np.eye(2),  # repeated negative: complex-conjugate pair of preimages
        np.array([[1.0, 1.0], [0.0, 1.0]]),  # Jordan block on the positive branch
        Q @ np.diag([3.0, 0.2, 0.7]) @ Q.T,
        Psi(max(1.0, eps) * rng.standard_normal((3, 3)), eps),  # anything in the image
    ]
    for D in cases:
        _roundtrip(D, eps)
    _roundtrip(np.diag([2.0, 0.5]), eps, t1=2.5)


@pytest.mark.parametrize("eps", [0.1, 1.0, 3.0])
def test_represent_eps_positive_reaches_negative_and_singular(eps):
    m = m_eps(eps)[0]
    _roundtrip(np.diag([0.9 * m, 1.0]), eps)  # simple negative eigenvalue above m_eps
    _roundtrip(np.diag([m, 2.0]), eps)  # exactly at the trough
    _roundtrip(np.zeros((2, 2)), eps)  # the first zero of psi
    _roundtrip(np.diag([-3.0, -3.0, 0.5]), eps)  # repeated eigenvalue below m_eps: a pair
    _roundtrip(np.array([[-0.5 * abs(m), 1], [0, -0.5 * abs(m)]]), eps)  # Jordan block, negative


def test_represent_not_representable_errors():
    with pytest.raises(NotRepresentableError, match=r"eigenvalue -1 of D .*Culver 1966"):
        represent(np.diag([-1.0, 1.0]), 0.0)
    with pytest.raises(NotRepresentableError, match=r"D is singular"):
        represent(np.diag([0.0, 1.0]), 0.0)
    with pytest.raises(NotRepresentableError, match=r"eigenvalue -1 of D .* below m_eps = -0.613499"):
        represent(np.diag([-1.0, 1.0]), 1.0)
    with pytest.raises(NotRepresentableError, match=r"no positive multiple c D"):
        represent(np.diag([-1.0, 1.0]), 0.0, scale="auto")
    with pytest.raises(NotRepresentableError, match=r"equals m_eps .* blocks of size >= 2"):
        m = m_eps(1.0)[0]
        represent(np.array([[m, 1.0], [0.0, m]]), 1.0)
    with pytest.raises(NotRepresentableError, match=r"m_eps = -0.0 underflows"):
        represent(np.diag([-1.0, 1.0]), 1e-6, scale="auto")
    assert issubclass(NotRepresentableError, ValueError)
    assert so.NotRepresentableError is NotRepresentableError


def test_represent_input_errors():
    with pytest.raises(ValueError, match=r"D must be a square matrix"):
        represent(np.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"D must be real"):
        represent(np.eye(2) * 1j, 1.0)
    with pytest.raises(ValueError, match=r"non-finite values .* in D"):
        represent(np.array([[np.nan, 0], [0, 1.0]]), 1.0)
    with pytest.raises(ValueError, match=r"D must be a square matrix \(d, d\), got shape \(2, 3\)"):
        is_representable(np.ones((2, 3)), 1.0)
    with pytest.raises(ValueError, match=r"eps == -0.5, must be a finite number >= 0"):
        is_representable(np.eye(2), -0.5)
    assert is_representable(torch.eye(2), 1.0)
    with pytest.raises(ValueError, match=r"scale == 'big', must be one of None, 'auto'"):
        represent(np.eye(2), 1.0, scale="big")
    # a nilpotent part at the rank threshold (4e-7 ~ 1e-7 |D| d): ill-posed, caught by the check
    S = np.eye(4) + 0.4 * np.random.default_rng(1).standard_normal((4, 4))
    D = S @ np.kron(np.eye(2), [[-2.0, 4e-7], [0.0, -2.0]]) @ np.linalg.inv(S)
    with pytest.raises(so.NumericalError, match=r"the constructed theta misses D by"):
        represent(D, 1.0)


def test_represent_no_starting_theta(monkeypatch):
    # the perturbation route for a defective D off the paired route needs a diagonalizable
    # start; without one (forced here: no real eigenbasis is ever found) it says so
    import secondorder.linear._construct as lin

    monkeypatch.setattr(lin, "_real_form", lambda *args: None)
    with pytest.raises(so.NumericalError, match=r"could not build a starting theta"):
        represent(np.array([[1.0, 1.0], [0.0, 1.0]]), 1.0)


def test_represent_scale_auto_any_matrix():
    rng = np.random.default_rng(4)
    eps = 1.0
    m = m_eps(eps)[0]
    cases = [
        np.diag([-1.0, 1.0]),  # reflection, det < 0
        np.diag([-5.0, 2.0, -0.1]),
        rng.standard_normal((5, 5)),
        np.array([[0.0, 1.0], [0.0, 0.0]]),  # nilpotent
        np.array([[-2.0, 1.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 1.0]]),  # Jordan, negative
    ]
    for D in cases:
        c, theta = represent(D, eps, scale="auto")
        # c = 1 when D is representable, else 0.99 m_eps / (most negative real eigenvalue)
        w = np.linalg.eigvals(D)
        mu_min = min(w.real[np.abs(w.imag) < 1e-9])
        want = 1.0 if is_representable(D, eps) else 0.99 * m / mu_min
        assert c == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose(Psi(theta, eps), c * D, atol=1e-10)


def test_represent_torch_in_torch_out():
    D = torch.tensor([[0.5, 0.2], [-0.1, 1.5]], dtype=torch.float32)
    theta = represent(D, 1.0)
    assert isinstance(theta, torch.Tensor) and theta.dtype == torch.float32
    # float32 rounding of theta (|theta| ~ 1)
    torch.testing.assert_close(Psi(theta.double(), 1.0).float(), D, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------- criterion


def test_is_representable_criterion():
    m = m_eps(1.0)[0]
    assert not is_representable(np.diag([-1.0, 1.0]), 0.0)
    assert is_representable(-np.eye(2), 0.0)  # Culver: paired negative blocks
    assert not is_representable(-np.eye(3), 0.0)
    assert not is_representable(np.zeros((2, 2)), 0.0)
    assert is_representable(np.zeros((2, 2)), 1.0)
    assert is_representable(np.diag([m + 1e-3, 1.0]), 1.0)
    assert not is_representable(np.diag([m - 1e-3, 1.0]), 1.0)
    assert is_representable(-np.eye(2), 1.0) and is_representable(-np.eye(2), 0.1)
    J = np.array([[-2.0, 1.0], [0.0, -2.0]])
    assert not is_representable(J, 1.0)
    assert is_representable(np.kron(np.eye(2), J), 0.0)
    assert not is_representable(np.kron(np.diag([1.0, 1.0, 1.0]), -np.eye(1)), 0.0)
    # t1 enters as eps/t1
    assert is_representable(np.diag([-0.5, 1.0]), 1.0) and not is_representable(
        np.diag([-0.5, 1.0]), 1.0, t1=10.0)


@settings(max_examples=25, deadline=None)
@given(st.floats(-3, 3), st.floats(0.2, 3), st.sampled_from([0.0, 0.1, 1.0, 4.0]))
def test_threshold_simple_real_eigenvalues(mu, nu, eps):
    # simple real eigenvalues: representable iff every one is >= m_eps (> 0 for eps = 0)
    D = np.diag([mu, nu])
    m = m_eps(eps)[0]
    if abs(mu - m) < 1e-5 or abs(mu - nu) < 1e-5 or abs(mu) < 1e-5:
        return
    assert is_representable(D, eps) == (mu > m if eps > 0 else mu > 0)
    if is_representable(D, eps):
        _roundtrip(D, eps)
    else:
        with pytest.raises(NotRepresentableError, match=f"eigenvalue {mu:.6g} of D"):
            represent(D, eps)


def test_represent_nearly_repeated_eigenvalues():
    # eigenvalues closer than the cluster tolerance (1e-6) are refined by Newton on Psi = D
    rng = np.random.default_rng(3)
    for D, eps in ((np.diag([2.0, 2.0 + 3e-7, 0.5]), 1.0),
                   (Psi(rng.standard_normal((3, 3)), 1e6), 1e6)):  # D = I + O(1e-6)
        theta = represent(D, eps)
        # Newton stops at float64 rounding of Psi (|theta| up to ~1e6 at eps = 1e6)
        np.testing.assert_allclose(Psi(theta, eps), D, rtol=0, atol=1e-13)


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_represent_defective_with_paired_negative_eigenvalue(eps):
    # -I_2 (reached by a complex pair) next to a Jordan block on the increasing branch, in a
    # random basis: the perturbation spares the -1 eigenspace, Newton finishes
    S = np.random.default_rng(5).standard_normal((4, 4))
    B = np.zeros((4, 4))
    B[:2, :2] = -np.eye(2)
    B[2:, 2:] = [[1.0, 1.0], [0.0, 1.0]]
    D = S @ B @ np.linalg.inv(S)
    theta = represent(D, eps)
    np.testing.assert_allclose(Psi(theta, eps), D, atol=1e-11 * np.abs(D).max())
    w = np.linalg.eigvals(theta)
    assert np.sum(np.abs(w.imag) > 1) == 2  # the complex pair that maps to -1


def test_Psi_small_eps_large_theta_uses_eigenvalues():
    # 4 eps |theta| > 1/2 with eps < 1e-2: the eigen formula; compare with the block exponential
    # (stiffness 1/eps = 1e3 costs it ~1e3 x rounding) and with psi on the eigenvalues
    from secondorder.linear._matrix import _Psi_block

    S = np.random.default_rng(6).standard_normal((3, 3))
    theta = S @ np.diag([-300.0, 1.0, 2.0]) @ np.linalg.inv(S)
    P = Psi(theta, 1e-3)
    np.testing.assert_allclose(P, _Psi_block(theta, 1e-3, np), atol=1e-10)
    want = S @ np.diag(psi(np.array([-300.0, 1.0, 2.0]), 1e-3)) @ np.linalg.inv(S)
    np.testing.assert_allclose(P, want, atol=1e-11)
    th = torch.tensor(theta, requires_grad=True)
    np.testing.assert_allclose(Psi(th, 1e-3).detach().numpy(), want, atol=1e-11)
    assert torch.autograd.gradcheck(lambda t: Psi(t, 1e-3), (th,))


# ------------------------------------------------------------- paired Jordan blocks below m_eps


def _J(mu, k):
    return mu * np.eye(k) + np.eye(k, k=1)


def _assert_paired(D, eps, theta):
    assert theta.dtype == np.float64 and np.isrealobj(theta)
    # exact construction; Psi(theta) in float64 (expm / block exponential): rounding x |theta|
    # x cond(basis) (<= ~10 here): 1e-12 |theta|
    np.testing.assert_allclose(Psi(theta, eps), D, rtol=0, atol=1e-12 * max(1.0, np.abs(theta).max()))


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_represent_paired_jordan_blocks(eps):
    # kron(I2, J_2(-2)): -2 < m_eps (m_1 = -0.6135, m_0.1 = -0.0108; any mu < 0 for eps = 0),
    # reached only by a complex-conjugate pair of preimages lam, conj(lam), each a 2x2 Jordan
    # block of theta
    D = np.kron(np.eye(2), _J(-2.0, 2))
    assert is_representable(D, eps)
    theta = represent(D, eps)
    _assert_paired(D, eps, theta)
    w = np.linalg.eigvals(theta)
    assert np.all(np.abs(w.imag) > 1) and np.abs(w.imag.sum()) < 1e-6  # lam, lam, conj x 2
    assert psi(complex(w[0]), eps) == pytest.approx(-2.0, abs=1e-6)  # sqrt(1e-16): defective w
    # a random well-conditioned basis (cond(S) ~ 5)
    S = np.eye(4) + 0.4 * np.random.default_rng(7).standard_normal((4, 4))
    assert np.linalg.cond(S) < 20
    DS = S @ D @ np.linalg.inv(S)
    _assert_paired(DS, eps, represent(DS, eps))
    # t1 enters as eps/t1 and theta/t1
    th = represent(DS, eps, t1=2.0)
    np.testing.assert_allclose(Psi(th, eps, 2.0), DS, atol=1e-12 * max(1.0, 2 * np.abs(th).max()))
    # torch in, torch out
    th = represent(torch.tensor(DS), eps)
    assert isinstance(th, torch.Tensor)
    np.testing.assert_allclose(Psi(th, eps).numpy(), DS, atol=1e-12 * max(1.0, float(th.abs().max())))


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_represent_paired_jordan_blocks_size_three_and_mixed(eps):
    # a pair of 3x3 blocks (third-order Taylor reversion), in an upper-triangular basis (the
    # computed eigenvalues stay exact) and in a random one (they split by ~(1e-16)^(1/3) ~ 1e-5
    # into real and non-real pieces beyond the cluster tolerance; the rank ladder at their mean
    # merges them back into {size 3: 2})
    U = np.eye(6) + np.triu(np.random.default_rng(8).uniform(-0.5, 0.5, (6, 6)), 1)
    S = np.eye(6) + 0.3 * np.random.default_rng(10).standard_normal((6, 6))
    assert np.linalg.cond(S) < 20
    for B in (U, S):
        D = B @ np.kron(np.eye(2), _J(-2.0, 3)) @ np.linalg.inv(B)
        _assert_paired(D, eps, represent(D, eps))
    # a pair of 4x4 blocks in a random orthogonal basis
    Q, _ = np.linalg.qr(np.random.default_rng(11).standard_normal((8, 8)))
    D = Q @ np.kron(np.eye(2), _J(-2.0, 4)) @ Q.T
    _assert_paired(D, eps, represent(D, eps))
    # a pair of 2x2 blocks at -0.7 (below m_1 = -0.6135 and m_0.1 = -0.0108; negative for eps = 0)
    # next to a simple positive eigenvalue 1.5 and -I_2, in a random basis
    B = np.zeros((7, 7))
    B[:4, :4] = np.kron(np.eye(2), _J(-0.7, 2))
    B[4, 4] = 1.5
    B[5:, 5:] = -np.eye(2)
    S = np.eye(7) + 0.3 * np.random.default_rng(9).standard_normal((7, 7))
    assert np.linalg.cond(S) < 20
    D = S @ B @ np.linalg.inv(S)
    theta = represent(D, eps)
    _assert_paired(D, eps, theta)
    w = np.linalg.eigvals(theta)
    assert np.sum(np.abs(w.imag) < 1e-9) == 1  # only 1.5 has a real preimage
    assert np.min(np.abs(w - psi_inverse_real(1.5, eps))) < 1e-9


@pytest.mark.parametrize("eps", [0.1, 1.0, 5.0])
def test_represent_paired_jordan_blocks_at_m_eps(eps):
    # at mu = m_eps, psi'(lam*) = 0: the 2x2 blocks need a non-real preimage of m_eps (near the
    # second trough), the 1x1 block takes lam* itself
    m, lam_star = m_eps(eps)
    D = np.zeros((5, 5))
    D[:4, :4] = np.kron(np.eye(2), _J(m, 2))
    D[4, 4] = m
    theta = represent(D, eps)
    _assert_paired(D, eps, theta)
    assert np.min(np.abs(np.linalg.eigvals(theta) - lam_star)) < 1e-9


def test_represent_paired_jordan_blocks_still_need_pairs():
    # odd counts per block size: not representable, for eps = 0 and eps > 0
    J2, J3 = _J(-2.0, 2), _J(-2.0, 3)
    odd = [np.kron(np.eye(3), J2), block_diag(J2, J2, J3), block_diag(J2, J3)]
    for D in odd:
        for eps in (0.0, 1.0):
            assert not is_representable(D, eps)
            with pytest.raises(NotRepresentableError, match=r"eigenvalue -2 of D has Jordan blocks"):
                represent(D, eps)


def test_represent_nearly_defective_pair():
    # eigenvalues -2 and -2 + delta in one cluster (delta < 1e-6): represented as the exact
    # Jordan pair at the mean, so Psi(theta) = D + O(delta^2) (delta^2/4 = 2.5e-15 here)
    delta = 1e-7
    D = np.kron(np.eye(2), [[-2.0, 1.0], [0.0, -2.0 + delta]])
    theta = represent(D, 1.0)
    np.testing.assert_allclose(Psi(theta, 1.0), D, rtol=0, atol=1e-13)


# ------------------------------------------------- Jordan blocks next to a close eigenvalue


def _close_case(blocks, delta, seed=12):
    """``S B S^-1`` for ``B = blocks`` (a block_diag) in a random basis with cond(S) < 20."""
    d = blocks.shape[0]
    S = np.eye(d) + 0.3 * np.random.default_rng(seed).standard_normal((d, d))
    assert np.linalg.cond(S) < 20
    return S @ blocks @ np.linalg.inv(S)


@pytest.mark.parametrize("eps", [0.0, 1.0])
@pytest.mark.parametrize("delta", [1e-2, 1e-3, 1e-4, -1e-3])
def test_paired_jordan_blocks_next_to_close_eigenvalue(delta, eps):
    # two 2x2 Jordan blocks at -2 next to a repeated eigenvalue -2 + delta (both below m_1 =
    # -0.6135; negative for eps = 0): the ranks are read on each cluster's own invariant
    # subspace, so -2 + delta cannot enter the null spaces of powers of (D + 2 I)
    from secondorder.linear._spectral import _analyse, _jordan_blocks, _scale

    mu2 = -2.0 + delta
    D = _close_case(block_diag(_J(-2.0, 2), _J(-2.0, 2), mu2 * np.eye(2)), delta)
    assert _jordan_blocks(D, -2.0, 4, _scale(D)) == {2: 2}
    assert _jordan_blocks(D, mu2, 2, _scale(D)) == {1: 2}
    info, problems, _ = _analyse(D, eps)
    assert sorted((len(e["idx"]), tuple(e["blocks"].items())) for e in info) == [
        (2, ((1, 2),)), (4, ((2, 2),))]
    assert not problems and is_representable(D, eps)
    _assert_paired(D, eps, represent(D, eps))
    # a Jordan pair at -2 + delta as well, and a simple positive eigenvalue beside
    D = _close_case(block_diag(_J(-2.0, 2), _J(-2.0, 2), _J(mu2, 2), _J(mu2, 2), [[1.5]]), delta)
    assert is_representable(D, eps)
    _assert_paired(D, eps, represent(D, eps))
    # the same neighbourhoods with an odd count: not representable, and the error names the
    # eigenvalue with a possible Jordan structure
    D = _close_case(block_diag(_J(-2.0, 2), _J(-2.0, 2), [[mu2]]), delta)
    assert not is_representable(D, eps)
    with pytest.raises(NotRepresentableError,
                       match=rf"eigenvalue {mu2:.6g} of D has Jordan blocks \{{size 1: 1\}}"):
        represent(D, eps)
    D = _close_case(block_diag(_J(-2.0, 2), mu2 * np.eye(2)), delta)
    assert not is_representable(D, eps)
    with pytest.raises(NotRepresentableError,
                       match=r"eigenvalue -2 of D has Jordan blocks \{size 2: 1\}"):
        represent(D, eps)


@pytest.mark.parametrize("eps", [0.0, 1.0])
@pytest.mark.parametrize("delta", [1e-2, 1e-3, 1e-4])
def test_paired_size_three_blocks_next_to_close_eigenvalue(delta, eps):
    # a pair of 3x3 blocks at -2 splits by ~1e-5 in a random basis; its pieces are merged at a
    # radius below delta, and the group that takes in -2 + delta is refused (its rank ladder at
    # the rounding-level threshold is inconsistent)
    mu2 = -2.0 + delta
    D = _close_case(block_diag(_J(-2.0, 3), _J(-2.0, 3), mu2 * np.eye(2)), delta)
    assert is_representable(D, eps)
    _assert_paired(D, eps, represent(D, eps))
    D = _close_case(block_diag(_J(-2.0, 3), _J(-2.0, 3), [[mu2]]), delta)
    assert not is_representable(D, eps)


def test_paired_blocks_with_neighbour_inside_rounding_spread_is_ill_posed():
    # -2 + 1e-5 lies inside the ~1e-5 rounding spread of a pair of 3x3 blocks at -2: the parity
    # test cannot be decided in float64, and the answer is an error, not a guess
    D = _close_case(block_diag(_J(-2.0, 3), _J(-2.0, 3), (-2.0 + 1e-5) * np.eye(2)), 1e-5, seed=100)
    for eps in (0.0, 1.0):
        with pytest.raises(so.NumericalError, match=r"ill-posed at float64 precision"):
            is_representable(D, eps)
        with pytest.raises(so.NumericalError, match=r"ill-posed at float64 precision"):
            represent(D, eps)


# ------------------------------------------------------------------ public helpers


@pytest.mark.parametrize("eps,t1", [(0.0, 1.0), (0.3, 1.0), (1.0, 2.5), (5.0, 0.4)])
def test_dpsi_is_the_derivative_and_psi_inverse_real_inverts(eps, t1):
    lam = np.array([-30.0, -3.0, -0.2, 0.0, 1.5])
    # central difference: truncation ~h^2 |psi'''|/6 ~ 1e-12, rounding ~1e-16 |psi|/h ~ 1e-10 |psi|
    h = 1e-6
    fd = (psi(lam + h, eps, t1) - psi(lam - h, eps, t1)) / (2 * h)
    np.testing.assert_allclose(dpsi(lam, eps, t1), fd, rtol=1e-8, atol=1e-9)
    m, lam_star = m_eps(eps, t1)
    for mu in [m + 1e-3 if eps else 1e-3, 0.0 if eps else 0.2, 0.5, 1.0, 7.0]:
        x = psi_inverse_real(mu, eps, t1)
        assert x >= lam_star and dpsi(x, eps, t1) > 0  # on the increasing branch
        assert psi(x, eps, t1) == pytest.approx(mu, rel=1e-12, abs=1e-14)
    if eps:
        assert psi_inverse_real(m - 0.1, eps, t1) == lam_star  # below the minimum: the trough


def test_dpsi_psi_inverse_real_input_errors():
    with pytest.raises(TypeError, match="autograd"):
        dpsi(torch.tensor([1.0]), 1.0)
    with pytest.raises(ValueError, match="eps"):
        dpsi(1.0, -1.0)
    with pytest.raises(ValueError, match="t1"):
        dpsi(1.0, 1.0, 0.0)
    with pytest.raises(TypeError, match="real number"):
        psi_inverse_real(1j, 1.0)
    with pytest.raises(ValueError, match="finite"):
        psi_inverse_real(math.nan, 1.0)
    with pytest.raises(ValueError, match="exp"):
        psi_inverse_real(0.0, 0.0)
    with pytest.raises(ValueError, match="eps"):
        psi_inverse_real(1.0, math.inf)


def test_companion_matrix_and_its_exponential():
    from scipy.linalg import expm

    rng = np.random.default_rng(7)
    theta, eps, t1 = rng.standard_normal((3, 3)), 0.4, 1.7
    M = so.linear.companion(theta, eps)
    I3, Z3 = np.eye(3), np.zeros((3, 3))
    assert np.array_equal(M, np.block([[Z3, I3], [theta / eps, -I3 / eps]]))
    # Psi is the top-left block of expm(t1 M) (x(0) = x0, u(0) = 0); and the whole first column
    # block is (Psi, dPsi/dt) -- compare the velocity with a central difference in t1
    np.testing.assert_allclose(expm(t1 * M)[:3, :3], Psi(theta, eps, t1), rtol=1e-12, atol=1e-13)
    h = 1e-5
    dP = (Psi(theta, eps, t1 + h) - Psi(theta, eps, t1 - h)) / (2 * h)
    np.testing.assert_allclose(expm(t1 * M)[3:, :3], dP, rtol=1e-7, atol=1e-8)
    # torch, batched: same numbers, dtype and gradient kept
    th = torch.tensor(np.stack([theta, 2 * theta]), requires_grad=True)
    Mt = so.linear.companion(th, eps)
    assert Mt.shape == (2, 6, 6) and Mt.dtype == torch.float64
    assert torch.equal(Mt[0].detach(), torch.from_numpy(M))
    Mt[1, 3:, :3].sum().backward()
    assert torch.equal(th.grad[1], torch.full((3, 3), 1 / eps, dtype=torch.float64))
    assert torch.equal(th.grad[0], torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="eps > 0"):
        so.linear.companion(theta, 0.0)
    with pytest.raises(ValueError, match="square"):
        so.linear.companion(np.ones((2, 3)), 1.0)
