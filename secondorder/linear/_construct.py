"""The criterion ``is_representable`` and the construction ``represent`` of a real ``theta``
with ``Psi(theta, eps) = D``: real eigenbasis form, choice of preimages, paired Jordan blocks
through complex-conjugate preimages, and the Newton polish."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from .._errors import NumericalError
from .._validate import check_eps, check_t1
from ._matrix import Psi, _companion
from ._scalar import _complex_preimage, _dpsi, _psi_inverse_real, _trough_preimage, m_eps
from ._spectral import (
    _analyse,
    _as_matrix,
    _bound_projector,
    _cluster_schur,
    _jordan_chains,
    _scale,
)
from ._tolerances import (
    AUTO_SCALE_MARGIN,
    BASIS_COND_MAX,
    CLUSTER_RTOL,
    EIGVEC_SV_FACTOR,
    PERTURB_RTOL,
    PERTURB_SEEDS,
    POLISH_CHECK_RTOL,
    POLISH_ITERS,
    POLISH_MAX_DIM,
    POLISH_RTOL,
    RESIDUAL_RTOL,
    SPLIT_RTOL,
    TINY,
)


class NotRepresentableError(ValueError):
    """``D`` is not ``Psi_eps(theta)`` for any real ``theta``; the message says which eigenvalue
    breaks which bound."""


def is_representable(D, eps, t1=1.0):
    """Whether ``D = Psi(theta, eps, t1)`` for some real ``theta`` (the criterion of docs/theory.md §3.3).

    - ``eps = 0`` (Culver 1966, real logarithm): ``D`` nonsingular and every Jordan block of a
      negative eigenvalue occurs an even number of times. Exact.
    - ``eps > 0``: every real eigenvalue ``mu < m_eps`` must have each Jordan block size an even
      number of times (such eigenvalues come only from complex-conjugate pairs of eigenvalues of
      ``theta``); at ``mu = m_eps`` (where ``psi' = 0``) the same for blocks of size >= 2.
      Necessary always; sufficient when ``D`` is diagonalizable (then it is exact: e.g. a
      diagonalizable ``D`` with simple real eigenvalues is representable iff all are
      ``>= m_eps``). For Jordan blocks on complex eigenvalues, or paired ones on real eigenvalues
      at or below ``m_eps``, sufficiency also needs a (non-real) preimage ``lam`` with
      ``psi'(lam) != 0``, which ``represent`` finds in practice (then ``psi`` is locally
      invertible at ``lam`` and the Jordan block lifts to one of ``theta``).

    Numerically: eigenvalues within ``1e-6 max(1, |D|_max)`` are one cluster and its Jordan
    structure comes from ranks of powers of ``T11 - mu I`` with a relative threshold ``1e-7``,
    ``T11`` the restriction of ``D`` to the cluster's own invariant subspace (reordered real
    Schur form, ``_jordan_blocks``), so other eigenvalues, however close, do not enter the
    ranks; the pieces of a real defective eigenvalue that rounding spreads further
    (``~(1e-16 cond)^(1/k)`` for a block of size ``k``) are merged back when the rank ladder
    at their mean is consistent at a rounding-level threshold (``_merge_defective``).
    The answer is decided when no eigenvalue is within the tolerance of a bound (``0`` or
    ``m_eps``) and the clusters are separated by more than the rounding spread of their
    blocks. Where the structure of a negative eigenvalue is ill-posed (an impossible rank
    ladder, or an odd block count with non-real eigenvalues within ``1e-3 |D|`` that may be the
    unmerged pieces of a larger block, e.g. a distinct eigenvalue ``~1e-5`` from a pair of 3x3
    blocks) it raises ``secondorder.NumericalError`` instead of answering; a genuine non-real pair that close to
    a simple negative eigenvalue also raises. ``t1`` enters only through ``eps/t1``
    (``Psi(theta, eps, t1) = Psi(t1 theta, eps/t1)``).

    Raises:
        secondorder.NumericalError: the Jordan structure of a negative eigenvalue is ill-posed (above).
    """
    eps = check_eps(eps)
    t1 = check_t1(t1)
    D = _as_matrix(D)
    return not _analyse(D, eps / t1)[1]


def _real_form(D, info, lam_of):
    """``theta = W B W^-1`` from a real eigenbasis ``W`` of diagonalizable ``D``; ``B`` has
    ``lam`` on real eigenvectors, ``[[x, y], [-y, x]]`` on ``(Re v, Im v)`` of complex pairs
    (``lam = x + i y``), ``[[x, -y], [y, x]]`` on pairs of eigenvectors of a repeated real
    eigenvalue reached by a non-real ``lam``. ``None`` if the basis is ill-conditioned."""
    d = D.shape[0]
    W = np.zeros((d, d))
    B = np.zeros((d, d))
    col = 0
    for e in info:
        mu, kind = e["mu"], e["kind"]
        if kind == "complex" and mu.imag < 0:
            continue
        # eigenvectors: null space of (D - mu I) (complex for complex mu)
        k = len(e["idx"])
        A = D - mu * np.eye(d) if kind == "complex" else D - mu.real * np.eye(d)
        _, sv, vh = np.linalg.svd(A)
        V = vh[-k:].conj().T
        # not k independent eigenvectors: defective
        if sv[d - k] > CLUSTER_RTOL * _scale(D) * EIGVEC_SV_FACTOR:
            return None
        lam = lam_of(e)
        if kind == "complex":
            for j in range(k):
                v = V[:, j]
                W[:, col], W[:, col + 1] = v.real, v.imag
                B[col : col + 2, col : col + 2] = [[lam.real, lam.imag], [-lam.imag, lam.real]]
                col += 2
        elif isinstance(lam, complex):
            if k % 2:
                return None
            W[:, col : col + k] = V.real
            for j in range(0, k, 2):
                B[col + j : col + j + 2, col + j : col + j + 2] = [[lam.real, -lam.imag], [lam.imag, lam.real]]
            col += k
        else:
            W[:, col : col + k] = V.real
            B[col : col + k, col : col + k] = lam * np.eye(k)
            col += k
    if col != d or np.linalg.cond(W) > BASIS_COND_MAX:
        return None
    return W @ B @ np.linalg.inv(W)


def _choose(e, eps):
    """The preimage ``lam`` (``t1 = 1``) used for eigenvalue cluster ``e``."""
    mu, kind = e["mu"], e["kind"]
    if kind in ("positive", "branch", "boundary"):
        return _psi_inverse_real(mu.real, eps)
    lam = _complex_preimage(mu if kind == "complex" else complex(mu.real, 0), eps)
    if lam is None:
        raise NumericalError(f"no non-real preimage of {mu} under psi (eps = {eps:g}) was found.")
    if kind == "complex" and lam.imag * mu.imag < 0:
        lam = lam.conjugate()
    return lam


def _polish(theta, D, eps, iters=POLISH_ITERS):
    """Newton on ``Psi(theta) = D`` with the Frechet derivative of the block exponential."""
    d = D.shape[0]
    Z = np.zeros((d, d))
    for _ in range(iters):
        R = D - Psi(theta, eps)
        if np.abs(R).max() <= POLISH_RTOL * _scale(D):
            break
        if eps == 0:
            M, lift = theta, (lambda E: E)
        else:
            M = _companion(theta, eps, np)
            # the change of M along a change E of theta
            lift = lambda E: np.block([[Z, Z], [E / eps, Z]])  # noqa: E731
        J = np.zeros((d * d, d * d))
        for i in range(d * d):
            E = np.zeros(d * d)
            E[i] = 1.0
            _, L = scipy.linalg.expm_frechet(M, lift(E.reshape(d, d)))
            J[:, i] = L[:d, :d].ravel()
        theta = theta + np.linalg.lstsq(J, R.ravel(), rcond=None)[0].reshape(d, d)
    return theta


def _paired_preimage(mu, eps, h):
    """The non-real preimage ``lam`` of the real ``mu`` used for paired Jordan blocks of
    ``mu I + h N``: of ``_complex_preimage`` and ``_trough_preimage``, the one with the
    smaller ``|lam| + h/|psi'(lam)|`` (the size of ``Theta_c = lam I + h N/psi'(lam) + ...``).
    ``None`` if neither has ``psi'(lam) != 0``."""
    best, size = None, math.inf
    for lam in (_complex_preimage(complex(mu, 0.0), eps), _trough_preimage(mu, eps)):
        if lam is None:
            continue
        d = abs(complex(_dpsi(lam, eps)))
        if d > 0 and abs(lam) + h / d < size:
            best, size = lam, abs(lam) + h / d
    return best


def _series_inverse(a, k):
    """Coefficients ``c_1..c_{k-1}`` of ``x(t) = sum_j c_j t^j`` with
    ``sum_{j>=1} a_j x(t)^j = t + O(t^k)`` (reversion of the Taylor series
    ``psi(lam + x) - psi(lam) = sum_j a_j x^j``, ``a_1 = psi'(lam) != 0``).
    Polynomials are coefficient arrays ``p[0..k-1]`` truncated at degree ``k - 1``."""
    c = np.zeros(k, complex)
    if k == 1:
        return c
    c[1] = 1.0 / a[1]
    for n in range(2, k):
        # coefficient of t^n in sum_{j>=2} a_j x^j: needs only c_1..c_{n-1} (c_n is still 0)
        s, xj = 0j, c.copy()
        for j in range(2, n + 1):
            xj = np.convolve(xj, c)[:k]  # x^j
            s = s + a[j] * xj[n]
        c[n] = -s / a[1]
    return c


def _pair_block(lam, k, h, eps):
    """Real ``2k x 2k`` ``T`` with ``Psi(T, eps) = diag(mu I + h N, mu I + h N)`` (``N`` the
    ``k x k`` upper shift, ``mu = psi(lam)`` real, ``lam`` non-real with ``psi'(lam) != 0``).

    ``Theta_c = lam I + X``, ``X = sum_j c_j h^j N^j``, where ``c`` reverts the Taylor series of
    ``psi`` at ``lam`` (``_series_inverse``); the Taylor coefficients
    ``a_j = psi^(j)(lam)/j!`` are the first row of ``Psi(lam I + N)`` (the primary function of a
    Jordan block). Then ``Psi(Theta_c) = mu I + h N`` is real, and the realification
    ``T = [[Re Theta_c, -Im Theta_c], [Im Theta_c, Re Theta_c]]`` of ``Theta_c (+) conj(Theta_c)``
    has ``Psi(T) = diag(mu I + h N, mu I + h N)``."""
    N = np.eye(k, k=1)
    a = Psi(lam * np.eye(k) + N.astype(complex), eps)[0] if k > 1 else np.array([0j])
    c = _series_inverse(a, k)
    Th = lam * np.eye(k, dtype=complex)
    Nj = np.eye(k)
    for j in range(1, k):
        Nj = Nj @ N
        Th = Th + c[j] * h**j * Nj
    return np.block([[Th.real, -Th.imag], [Th.imag, Th.real]])


def _construct_paired(D, eps, e):
    """``theta`` for ``D`` with a real eigenvalue ``mu`` at or below ``m_eps`` that has Jordan
    blocks of size >= 2 (entry ``e`` of ``_analyse``; the criterion has passed, so each
    block size occurs an even number of times, except size 1 at ``mu = m_eps``).

    1. Split ``D S = S diag(A, B)``: real Schur form ``Z^T D Z = [[T11, T12], [0, T22]]``
       reordered so that ``T11`` carries the ``n`` eigenvalues of the cluster
       (``_cluster_schur``), ``X`` solving ``T11 X - X T22 = -T12`` and
       ``S = Z [[I, X], [0, I]]``, so ``A = T11``, ``B = T22``; a neighbouring eigenvalue only
       affects ``X`` through the separation of ``T11`` and ``T22``.
    2. Jordan chains of ``N = A - mu I`` (``_jordan_chains``), scaled by ``h = |N|_2``:
       in the basis ``E`` (chain ``v``: columns ``N^{k-1} v / h^{k-1}, ..., v``),
       ``E^-1 A E = mu I + h (shift)``.
    3. Chains of equal length in pairs: the real block of ``_pair_block`` for a non-real
       preimage ``lam`` of ``mu`` (``psi'(lam) != 0``); each chain of length 1 at
       ``mu = m_eps`` gets the real trough ``lam*``.
    4. ``B`` recursively by ``_construct``;
       ``theta = S diag(E T E^-1, theta_B) S^-1``.
    Returns ``None`` when the cluster cannot be reordered apart, a basis is ill-conditioned
    (cond > 1e8) or the splitting is not invariant to ``1e-8 |D|``."""
    d, n, mu = D.shape[0], len(e["idx"]), e["mu"].real
    blocks = e["blocks"]
    scale = _scale(D)
    sch = _cluster_schur(D, mu, n)
    if sch is None:
        return None
    Z, T = sch
    # block-diagonalize: T11 X - X T22 = -T12 (Bartels-Stewart, small residual even where the
    # separation of T11 and T22 is small), S = Z [[I, X], [0, I]]
    X = scipy.linalg.solve_sylvester(T[:n, :n], -T[n:, n:], -T[:n, n:])
    S = Z.copy()
    S[:, n:] = Z[:, n:] + Z[:, :n] @ X
    if np.linalg.cond(S) > BASIS_COND_MAX:
        return None
    T = np.linalg.solve(S, D @ S)
    if max(np.abs(T[:n, n:]).max(initial=0), np.abs(T[n:, :n]).max(initial=0)) > SPLIT_RTOL * scale:
        return None
    A, B = T[:n, :n], T[n:, n:]
    mu = float(np.trace(A)) / n  # the mean of a cluster is accurate even where its members split
    Nm = A - mu * np.eye(n)
    h = max(float(np.linalg.norm(Nm, 2)), TINY)
    chains = _jordan_chains(Nm / h, blocks)
    lam = None
    cols, Tb = [], np.zeros((n, n))
    col = 0
    by_size = {}
    for k, v in chains:
        by_size.setdefault(k, []).append(v)
    for k, vs in sorted(by_size.items(), reverse=True):
        if k == 1 and e["kind"] == "boundary":  # 1 x 1 blocks at m_eps: the real lam*
            for v in vs:
                cols.append(v)
                Tb[col, col] = m_eps(eps)[1]  # lam*: psi(lam*) = m_eps
                col += 1
            continue
        if lam is None:
            lam = _paired_preimage(mu, eps, h)
            if lam is None:
                return None
        for i in range(0, len(vs), 2):
            for v in vs[i : i + 2]:
                cols += [np.linalg.matrix_power(Nm / h, k - 1 - j) @ v for j in range(k)]
            Tb[col : col + 2 * k, col : col + 2 * k] = _pair_block(lam, k, h, eps)
            col += 2 * k
    E = np.stack(cols, 1)
    if np.linalg.cond(E) > BASIS_COND_MAX:
        return None
    thA = E @ np.linalg.solve(E.T, Tb.T).T  # E Tb E^-1
    if d == n:
        thB = np.zeros((0, 0))
    else:
        info_B, problems, _ = _analyse(B, eps)
        if problems:
            return None
        thB = _construct(B, eps, info_B)
    th = np.zeros((d, d))
    th[:n, :n], th[n:, n:] = thA, thB
    return S @ np.linalg.solve(S.T, th.T).T


def _construct(D, eps, info):
    """A real ``theta`` with ``Psi(theta, eps) = D`` (``t1 = 1``), given ``D`` passes the test."""
    paired = [
        e
        for e in info
        if e["kind"] in ("negative", "boundary")
        and e["blocks"]
        and max(e["blocks"]) > 1
        # a consistent Jordan structure (the rank decisions can fail for a cluster that is only
        # within the tolerance of m_eps, e.g. -I_2 at eps = 1e6, m_eps = -1 + 5e-7)
        and min(e["blocks"].values()) > 0
        and sum(k * n for k, n in e["blocks"].items()) == len(e["idx"])
    ]
    if paired:  # Jordan blocks reached only through complex-conjugate pairs of preimages
        # (perturbing until they split and Newton does not work: the Frechet derivative of
        # Psi is singular there and Newton stalls at the perturbation size)
        theta = _construct_paired(D, eps, paired[0])
        if theta is None:
            raise NumericalError(
                f"could not build theta for the paired Jordan blocks of eigenvalue "
                f"{paired[0]['mu'].real:.6g}: ill-conditioned splitting or Jordan basis "
                f"(cond > 1e8), or no non-real preimage with psi' != 0; D is too "
                f"ill-conditioned for this construction."
            )
        return theta
    lam_of = lambda e: _choose(e, eps)  # noqa: E731
    theta = _real_form(D, info, lam_of)
    if theta is None:
        # defective: theta for a nearby diagonalizable matrix, then Newton on Psi(theta) = D
        # (a few seeds: a real eigenvalue may split to either side of a bound, or into a pair).
        # The perturbation (I - P) E (I - P) leaves the (semisimple) eigenvalues at or below
        # m_eps untouched: P is their spectral projector, so they keep their eigenvectors.
        Q = np.eye(D.shape[0]) - _bound_projector(D, info)
        for seed in range(PERTURB_SEEDS):
            rng = np.random.default_rng(seed)
            Dp = D + PERTURB_RTOL * _scale(D) * (Q @ rng.standard_normal(D.shape) @ Q)
            info_p, problems, _ = _analyse(Dp, eps, merge=False)
            theta = _real_form(Dp, info_p, lam_of) if not problems else None
            if theta is not None:
                break
        else:
            raise NumericalError("could not build a starting theta for this defective D.")
        theta = _polish(theta, D, eps)
    elif D.shape[0] <= POLISH_MAX_DIM and np.abs(Psi(theta, eps) - D).max() > (
        POLISH_CHECK_RTOL * _scale(D) * max(1.0, float(np.abs(theta).max()))
    ):  # eigenvalues merged into one cluster (within 1e-6) are only approximately equal
        theta = _polish(theta, D, eps)
    return theta


def _check_residual(theta, target, eps, what):
    res = float(np.abs(Psi(theta, eps) - target).max())
    if not res <= RESIDUAL_RTOL * _scale(target) * max(1.0, float(np.abs(theta).max())):
        raise NumericalError(
            f"the constructed theta misses {what} by {res:.3g} (max abs entry); "
            f"D is too ill-conditioned for this construction."
        )


def represent(D, eps, t1=1.0, scale=None):
    """A real ``theta`` with ``Psi(theta, eps, t1) = D``; with ``scale="auto"``, ``(c, theta)``
    with ``Psi(theta, eps, t1) = c D`` ("any linear map up to a multiplicative factor").

    Construction: ``theta = W B W^-1`` from a real eigenbasis of ``D``; each real eigenvalue
    ``mu >= m_eps`` gets the real preimage on the increasing branch of ``psi`` (``log mu`` for
    ``eps = 0``), complex eigenvalues a complex preimage (Newton / continuation) and repeated
    real eigenvalues below ``m_eps`` a complex-conjugate pair of preimages. Jordan blocks of a
    real eigenvalue ``mu`` below ``m_eps`` (any ``mu < 0`` for ``eps = 0``), which come in
    identical pairs, and of size >= 2 at ``mu = m_eps``: the generalized eigenspace is split off
    (``D S = S diag(A, B)``), ``A`` is put in Jordan form, and each pair ``J (+) J`` gets the
    realification ``[[Re Theta_c, -Im Theta_c], [Im Theta_c, Re Theta_c]]`` of
    ``Theta_c = lam I + X`` with ``psi(lam) = mu`` non-real, ``psi'(lam) != 0`` and ``X`` a
    polynomial in the shift solving ``Psi(Theta_c) = J`` exactly (reverted Taylor series of
    ``psi`` at ``lam``); ``B`` is handled recursively (``_construct_paired``). Any other
    non-diagonalizable ``D`` starts from a ``1e-7`` perturbation (sparing the eigenspaces at or
    below ``m_eps``) and is refined by Newton on ``Psi(theta) = D``; so are eigenvalues closer
    than the cluster tolerance ``1e-6 max(1, |D|_max)``.
    The result is checked: ``|Psi(theta) - D|_max <= 1e-9 max(1, |D|_max) max(1, |theta|_max)``
    or ``secondorder.NumericalError``.

    Nearly defective input: eigenvalues within the cluster tolerance count as one eigenvalue and
    the Jordan structure comes from rank decisions at ``1e-7`` on the cluster's own invariant
    subspace (``is_representable``); the generalized eigenspace is split off by a reordered
    Schur form and a Sylvester solve, so a distinct eigenvalue ``1e-4 |D|`` or more away (tested
    down to ``delta = 1e-4`` next to a pair of 2x2 blocks; ``1e-5`` works in the cases tried) no
    longer disturbs the split. A
    pair ``mu I + N`` with eigenvalues spread by ``delta`` inside a cluster is represented as
    the exact Jordan pair at the mean: ``Psi(theta) = D + O(delta^2)``. A nilpotent part near the
    rank threshold (``~1e-7 |D|``) is ill-posed: the semisimple route plus Newton either meets
    the residual check or raises ``secondorder.NumericalError``. Jordan blocks of size ``k >= 3`` in a general
    basis have computed eigenvalues spread by ``~(1e-16 cond)^(1/k)``, beyond the cluster
    tolerance; the pieces are merged back by the rank ladder at their mean
    (``_merge_defective``). A distinct eigenvalue within that rounding spread of such a
    block (e.g. ``~1e-5`` from a pair of 3x3 blocks) cannot be told from it: then the analysis
    raises ``secondorder.NumericalError`` (ill-posed) or the residual check does, rather than return a wrong
    ``theta``; a merge that is wrong yet passes both checks is not excluded in principle.

    ``scale="auto"``: ``c = 1`` if ``D`` is representable; otherwise (``eps > 0``) the largest
    convenient ``c = 0.99 m_eps / mu_min`` that lifts the most negative real eigenvalue
    ``mu_min`` of ``D`` onto the increasing branch (then every real eigenvalue of ``c D`` is
    ``> m_eps`` and ``c D`` is representable, singular and non-diagonalizable ``D`` included).
    For ``eps = 0`` no ``c > 0`` helps and the error says so.

    Args:
        D: ``(d, d)`` real numpy array or torch tensor.  eps: float >= 0.  t1: float > 0.
        scale: ``None`` or ``"auto"``.
    Returns:
        ``theta`` (``(d, d)``, numpy float64, or a torch tensor of ``D``'s dtype and device
        when ``D`` is a tensor); ``(c, theta)`` with ``scale="auto"``.
    Raises:
        NotRepresentableError: naming the eigenvalue and the bound it breaks.
        NotImplementedError: no diagonalizable starting point near a non-diagonalizable ``D``
            off the paired route (not seen in the tests; kept as a guard).
        secondorder.NumericalError: the residual check fails (ill-conditioned ``D`` or basis), or the Jordan
            structure of a negative eigenvalue is ill-posed (see ``is_representable``).
    """
    eps = check_eps(eps)
    t1 = check_t1(t1)
    if scale not in (None, "auto"):
        raise ValueError(f"scale == {scale!r}, must be one of None, 'auto'.")
    like = D if isinstance(D, torch.Tensor) else None
    D = _as_matrix(D)
    e = eps / t1
    info, problems, m = _analyse(D, e)
    c = 1.0
    if problems:
        if scale is None:
            raise NotRepresentableError(
                f"D is not Psi(theta, eps={eps:g}, t1={t1:g}) for any real theta: "
                + " ".join(problems)
                + ("" if eps == 0 else " Use represent(D, eps, scale='auto') for a multiple c D.")
            )
        if eps == 0:
            raise NotRepresentableError(
                "no positive multiple c D is expm(theta) for a real theta either (c D keeps the "
                "signs and Jordan structure of D's eigenvalues): " + " ".join(problems)
            )
        mu_min = min(x["mu"].real for x in info if x["kind"] in ("negative", "boundary"))
        c = AUTO_SCALE_MARGIN * m / mu_min
        if not c > 0:
            raise NotRepresentableError(
                f"m_eps = {m!r} underflows for eps/t1 = {e:g}: the factor c = m_eps/mu_min is "
                f"not representable in float64; use a larger eps."
            )
        info, problems, _ = _analyse(c * D, e)
        if problems:  # cannot happen: every real eigenvalue of c D is above m_eps
            raise NotRepresentableError(" ".join(problems))
    target = c * D
    theta = _construct(target, e, info) / t1
    _check_residual(theta * t1, target, e, "c D" if c != 1 else "D")
    if like is not None:
        theta = torch.as_tensor(theta, dtype=like.dtype if like.is_floating_point() else None,
                                device=like.device)
    return (c, theta) if scale == "auto" else theta
