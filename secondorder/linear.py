"""Which linear maps a second-order model can represent (docs/theory.md §3).

With a constant linear residual function ``F(x) = theta x`` the second-order ODE
``eps x'' + x' = theta x``, ``x(0) = x0``, ``x'(0) = 0`` maps ``x0`` to
``x(t1) = Psi(theta, eps, t1) x0``, where ``Psi`` is the primary matrix function of the entire
scalar function ``psi``. ``eps = 0`` is the Neural ODE / ResNet limit, ``Psi = expm(t1 theta)``.

Public functions:

- ``psi`` the scalar map, ``Psi`` the matrix map (numpy or torch in, same kind out);
- ``m_eps`` the minimum of ``psi`` on the real line and where it is attained;
- ``represent`` a real ``theta`` with ``Psi(theta) = D`` (or ``c D``, ``scale="auto"``);
- ``is_representable`` the criterion; ``NotRepresentableError`` says why not.

Time scaling: substituting ``t = t1 tau`` gives ``(eps/t1) y'' + y' = (t1 theta) y`` for
``y(tau) = x(t1 tau)``, so ``psi(lam, eps, t1) = psi(t1 lam, eps/t1, 1)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

from ._validate import check_eps

__all__ = ["psi", "Psi", "m_eps", "represent", "is_representable", "NotRepresentableError"]

_SERIES_TERMS = 14  # |u| <= 1: the k-th term is below 1/(2k+1)!, 1/29! ~ 1e-31


class NotRepresentableError(ValueError):
    """``D`` is not ``Psi_eps(theta)`` for any real ``theta``; the message says which eigenvalue
    breaks which bound."""


# ----------------------------------------------------------------------------------------------
# scalar psi


def _t1(t1):
    if isinstance(t1, bool) or not isinstance(t1, numbers.Real) or not (0 < float(t1) < math.inf):
        raise ValueError(f"t1 == {t1!r}, must be a finite number > 0.")
    return float(t1)


def _xp(x):
    return torch if isinstance(x, torch.Tensor) else np


def _series(u, xp):
    """``C(u) = cosh(sqrt u)``, ``S(u) = sinh(sqrt u)/sqrt u`` and ``S'(u)`` for ``|u| <= 1``."""
    C = xp.zeros_like(u) + 1.0
    S = xp.zeros_like(u) + 1.0
    dS = xp.zeros_like(u) + 1.0 / 6.0
    term = xp.ones_like(u)
    for k in range(1, _SERIES_TERMS):
        term = term * u
        C = C + term / float(math.factorial(2 * k))
        S = S + term / float(math.factorial(2 * k + 1))
        dS = dS + term * ((k + 1) / float(math.factorial(2 * k + 3)))
    return C, S, dS


def _psi_unit(lam, eps, xp):
    """``psi(lam, eps, t1=1)`` for ``eps > 0`` on an array ``lam`` (real or complex).

    With ``a = 1/(2 eps)``, ``s2 = 1 + 4 eps lam``, ``u = a^2 s2``:
    ``psi = e^{-a} (C(u) + a S(u))`` (series) where ``|u| <= 1``; elsewhere
    ``psi = (1 + 1/s)/2 exp(2 lam/(1+s)) + (1 - 1/s)/2 exp(-(1+s) a)``, ``s = sqrt(s2)``
    (principal root, no overflow for tiny ``eps``) or, for real ``s2 < 0``,
    ``psi = e^{-a} (cos(a w) + sin(a w)/w)``, ``w = sqrt(-s2)``.
    """
    a = 1.0 / (2.0 * eps)
    s2 = 1.0 + 4.0 * eps * lam
    small = xp.abs(s2) <= 4.0 * eps * eps
    u = xp.where(small, s2, xp.zeros_like(s2)) / (4.0 * eps * eps)
    C, S, _ = _series(u, xp)
    p_small = math.exp(-a) * C + (a * math.exp(-a)) * S
    complex_in = lam.is_complex() if xp is torch else np.iscomplexobj(lam)
    if complex_in:
        big = ~small
        s = xp.sqrt(xp.where(big, s2, xp.ones_like(s2)))
        lam_b = xp.where(big, lam, xp.zeros_like(lam))
        p_big = 0.5 * (1 + 1 / s) * xp.exp(2 * lam_b / (1 + s)) + 0.5 * (1 - 1 / s) * xp.exp(-(1 + s) * a)
        return xp.where(small, p_small, p_big)
    pos = (~small) & (s2 > 0)
    neg = (~small) & (s2 < 0)
    s = xp.sqrt(xp.where(pos, s2, xp.ones_like(s2)))
    lam_p = xp.where(pos, lam, xp.zeros_like(lam))
    p_pos = 0.5 * (1 + 1 / s) * xp.exp(2 * lam_p / (1 + s)) + 0.5 * (1 - 1 / s) * xp.exp(-(1 + s) * a)
    w = xp.sqrt(xp.where(neg, -s2, xp.ones_like(s2)))
    p_neg = math.exp(-a) * (xp.cos(a * w) + xp.sin(a * w) / w)
    return xp.where(small, p_small, xp.where(pos, p_pos, p_neg))


def psi(lam, eps, t1=1.0):
    """The scalar time-``t1`` map of ``eps x'' + x' = lam x``, ``x(0) = 1``, ``x'(0) = 0``.

    ``psi = e^{-a} (cosh(a s) + sinh(a s)/s)``, ``s = sqrt(1 + 4 eps lam)``, ``a = 1/(2 eps)``
    at ``t1 = 1``; ``psi(lam, eps, t1) = psi(t1 lam, eps/t1, 1)``; ``eps = 0`` gives
    ``exp(t1 lam)``. Evaluated without overflow for tiny and huge ``eps`` (see
    ``_psi_unit``).

    Args:
        lam: real or complex number, numpy array or torch tensor (any shape).
        eps: float >= 0.  t1: float > 0 (the horizon).
    Returns:
        same kind and shape as ``lam`` (a Python/numpy scalar for a scalar); real for real
        ``lam``. Torch inputs keep their dtype and are differentiable.
    """
    eps = check_eps(eps)
    t1 = _t1(t1)
    scalar = not isinstance(lam, (torch.Tensor, np.ndarray))
    if scalar:
        lam = np.asarray(lam, dtype=np.complex128 if isinstance(lam, complex) else np.float64)
    elif isinstance(lam, np.ndarray) and not (np.iscomplexobj(lam) or lam.dtype.kind == "f"):
        lam = lam.astype(np.float64)
    elif isinstance(lam, torch.Tensor) and not (lam.is_complex() or lam.is_floating_point()):
        lam = lam.to(torch.get_default_dtype())
    xp = _xp(lam)
    lam = lam * t1
    out = xp.exp(lam) if eps == 0 else _psi_unit(lam, eps / t1, xp)
    return out[()] if scalar else out


def _dpsi(lam, eps, t1=1.0):
    """``d psi / d lam`` (numpy, real or complex ``lam``).

    At ``t1 = 1``: ``psi' = (1/eps) e^{-a} (S(u)/2 + a S'(u))`` with ``S'(u) = (C - S)/(2u)``
    off the series disc; ``psi'(lam, eps, t1) = t1 psi'(t1 lam, eps/t1, 1)``.
    """
    lam = np.asarray(lam) * t1
    if eps == 0:
        return t1 * np.exp(lam)
    eps = eps / t1
    a = 1.0 / (2.0 * eps)
    lamc = lam.astype(np.complex128)
    s2 = 1.0 + 4.0 * eps * lamc
    small = np.abs(s2) <= 4.0 * eps * eps
    u = np.where(small, s2, 0) / (4.0 * eps * eps)
    C, S, dS = _series(u, np)
    d_small = 2 * a * math.exp(-a) * (S / 2 + a * dS)
    with np.errstate(all="ignore"):
        s = np.sqrt(np.where(small, 1, s2))
        w = a * s
        r1 = 2 * np.where(small, 0, lamc) / (1 + s)
        r2 = -(1 + s) * a
        eC = (np.exp(r1) + np.exp(r2)) / 2
        eS = (np.exp(r1) - np.exp(r2)) / (2 * w)
        d_big = 2 * a * (eS / 2 + a * (eC - eS) / (2 * w * w))
    d = np.where(small, d_small, d_big) * t1
    return d if np.iscomplexobj(np.asarray(lam)) else d.real


# ----------------------------------------------------------------------------------------------
# matrix Psi


def _expm(A, xp):
    return torch.linalg.matrix_exp(A) if xp is torch else scipy.linalg.expm(A)


def _norm1(A, xp):
    if xp is torch:
        return float(A.detach().abs().sum(-2).amax()) if A.numel() else 0.0
    return float(np.abs(A).sum(-2).max()) if A.size else 0.0


def _eye_like(A, xp):
    n = A.shape[-1]
    if xp is torch:
        return torch.eye(n, dtype=A.dtype, device=A.device).expand(A.shape)
    return np.broadcast_to(np.eye(n, dtype=A.dtype), A.shape)


def _sqrtm_near_identity(A, xp):
    """Principal square root of ``A`` (spectrum near 1) by the Denman-Beavers iteration."""
    inv = torch.linalg.inv if xp is torch else np.linalg.inv
    Y, Z = A, _eye_like(A, xp)
    for _ in range(60):
        Y, Z = (Y + inv(Z)) / 2, (Z + inv(Y)) / 2
        if _norm1(Y @ Y - A, xp) <= 1e-15 * max(1.0, _norm1(A, xp)):
            break
    return Y


def _Psi_stiff(theta, eps, xp):
    """``Psi`` for small ``eps`` with ``4 eps |theta| <= 1/2`` (``t1 = 1``), no stiff exponential:
    ``S = sqrt(I + 4 eps theta)``,
    ``Psi = (I + S^-1)/2 expm(2 theta (I+S)^-1) + (I - S^-1)/2 expm(-(I+S)/(2 eps))``."""
    inv = torch.linalg.inv if xp is torch else np.linalg.inv
    I = _eye_like(theta, xp)
    S = _sqrtm_near_identity(I + 4 * eps * theta, xp)
    Si = inv(S)
    R1 = 2 * theta @ inv(I + S)
    return (I + Si) / 2 @ _expm(R1, xp) + (I - Si) / 2 @ _expm(-(I + S) / (2 * eps), xp)


def _Psi_block(theta, eps, xp):
    """``Psi`` (``t1 = 1``) as the top-left block of ``expm([[0, I], [theta/eps, -I/eps]])``:
    the first-order system ``x' = u``, ``u' = (theta x - u)/eps`` from ``(x0, 0)``."""
    d = theta.shape[-1]
    I = _eye_like(theta, xp)
    Z = xp.zeros_like(theta)
    if xp is torch:
        M = torch.cat([torch.cat([Z, I], -1), torch.cat([theta / eps, -I / eps], -1)], -2)
    else:
        M = np.concatenate([np.concatenate([Z, I], -1), np.concatenate([theta / eps, -I / eps], -1)], -2)
    return _expm(M, xp)[..., :d, :d]


def _Psi_eig(theta, eps, xp):
    """``Psi = V diag(psi(w)) V^-1`` from ``theta = V diag(w) V^-1``; ``None`` when ``V`` is
    ill-conditioned (cond > 1e6)."""
    if xp is torch:
        w, V = torch.linalg.eig(theta)
        if float(torch.linalg.cond(V.detach()).abs().amax()) > 1e6:
            return None
        P = V @ torch.diag_embed(_psi_unit(w, eps, torch)) @ torch.linalg.inv(V)
        return P.real if not theta.is_complex() else P
    w, V = np.linalg.eig(theta)
    if np.max(np.linalg.cond(V)) > 1e6:
        return None
    P = V @ (_psi_unit(w, eps, np)[..., None] * np.linalg.inv(V))
    return P.real if not np.iscomplexobj(theta) else P


def Psi(theta, eps, t1=1.0):
    """The time-``t1`` map of ``eps x'' + x' = theta x``, ``x'(0) = 0``: ``x(t1) = Psi x(0)``.

    ``Psi`` is the primary matrix function of ``psi``; ``eps = 0`` gives ``expm(t1 theta)``.
    Any square ``theta`` (non-diagonalizable included), batched over leading dimensions.
    With ``eps' = eps/t1``, ``theta' = t1 theta`` (the scaling of ``psi``):

    - ``eps' >= 1e-2``, or ``4 eps' |theta'|_1 > 1/2`` with an ill-conditioned eigenbasis: top-left
      block of ``expm([[0, I], [theta'/eps', -I/eps']])`` (the first-order system);
    - ``eps' < 1e-2`` and ``4 eps' |theta'|_1 <= 1/2`` (stiff): the scaled closed form of
      ``_Psi_stiff`` (square root of ``I + 4 eps' theta'``, no ``1/eps`` in an exponential);
    - otherwise ``V diag(psi(w)) V^-1``.

    Args:
        theta: ``(..., d, d)`` numpy array or torch tensor (float or complex).
        eps: float >= 0.  t1: float > 0.
    Returns:
        ``(..., d, d)``, same kind and dtype as ``theta``; differentiable for torch.
    """
    eps = check_eps(eps)
    t1 = _t1(t1)
    xp = _xp(theta)
    if xp is np:
        theta = np.asarray(theta)
        if not (np.iscomplexobj(theta) or theta.dtype.kind == "f"):
            theta = theta.astype(np.float64)
    if theta.ndim < 2 or theta.shape[-1] != theta.shape[-2]:
        raise ValueError(f"theta must be a square matrix (..., d, d), got shape {tuple(theta.shape)}.")
    theta = theta * t1
    if eps == 0:
        return _expm(theta, xp)
    eps = eps / t1
    if eps >= 1e-2:
        return _Psi_block(theta, eps, xp)
    if 4 * eps * _norm1(theta, xp) <= 0.5:
        return _Psi_stiff(theta, eps, xp)
    P = _Psi_eig(theta, eps, xp)
    return _Psi_block(theta, eps, xp) if P is None else P


# ----------------------------------------------------------------------------------------------
# the minimum on the real line and the real inverse


def m_eps(eps, t1=1.0):
    """Minimum of ``psi(., eps, t1)`` on the real line and where it is attained: ``(m, lam*)``.

    Below ``-1/(4 eps)`` (``t1 = 1``), ``psi = e^{-a} (cos phi + a sin(phi)/phi)`` with
    ``phi = a sqrt(-1 - 4 eps lam)``; the first trough solves
    ``-sin phi + a (phi cos phi - sin phi)/phi^2 = 0`` on ``[pi, 3 pi/2]``, and
    ``lam* = -1/(4 eps) - eps phi^2``. The minimum depends only on ``eps/t1``; ``lam*`` scales
    as ``1/t1``. ``-(1+a) e^{-a} < m <= -e^{-a}``, so ``-1 < m < 0``; for ``eps/t1 < ~1/1400``
    ``m`` underflows to ``-0.0``. ``eps = 0``: the infimum of ``exp``, ``(0.0, -inf)``
    (not attained).
    """
    eps = check_eps(eps)
    t1 = _t1(t1)
    if eps == 0:
        return 0.0, -math.inf
    e = eps / t1
    a = 1.0 / (2.0 * e)

    def slope(phi):
        return -math.sin(phi) + a * (phi * math.cos(phi) - math.sin(phi)) / phi**2

    phi = scipy.optimize.brentq(slope, math.pi, 1.5 * math.pi, xtol=1e-15, rtol=1e-15, maxiter=200)
    lam = -1.0 / (4.0 * e) - e * phi * phi
    m = math.exp(-a) * (math.cos(phi) + a * math.sin(phi) / phi)
    return m, lam / t1


def _g_real(mu, eps):
    """Real inverse of ``psi(., eps)`` (``t1 = 1``) on ``[lam*, inf)`` for real ``mu >= m_eps``."""
    if eps == 0:
        return math.log(mu)
    a = 1.0 / (2.0 * eps)
    m, lam_star = m_eps(eps)
    if mu <= m:
        return lam_star
    lam_c = -1.0 / (4.0 * eps)  # psi(lam_c) = (1 + a) e^{-a}
    if mu < (1 + a) * math.exp(-a) or (a > 700 and mu <= 0):
        # oscillating side: q(phi) = cos phi + a sin(phi)/phi decreases on [0, phi*] to m e^a
        phi_star = math.sqrt((lam_c - lam_star) / eps)
        target = mu * math.exp(a) if a <= 700 else 0.0

        def q(phi):
            return (math.cos(phi) + (a * math.sin(phi) / phi if phi > 0 else a)) - target

        phi = scipy.optimize.brentq(q, 0.0, phi_star, xtol=1e-15, rtol=1e-15, maxiter=200)
        return lam_c - eps * phi * phi

    # increasing side lam >= lam_c: solve log psi(lam) = log mu (no overflow)
    def logpsi(lam):
        s2 = max(1.0 + 4.0 * eps * lam, 0.0)
        s = math.sqrt(s2)
        if a * s <= 1.0:  # log(e^{-a} (C(u) + a S(u))), u = a^2 s2 in [0, 1]
            C, S, _ = _series(np.asarray(s2 / (4.0 * eps * eps)), np)
            return -a + math.log(float(C) + a * float(S))
        r1 = 2 * lam / (1 + s)
        return r1 + math.log(0.5 * (1 + 1 / s) + 0.5 * (1 - 1 / s) * math.exp(-(1 + s) * a - r1))

    target = math.log(mu)
    hi = max(lam_c + 1.0, 2.0 * abs(target) + 1.0)
    while logpsi(hi) < target:
        hi = 2 * hi
    lo = lam_c
    if logpsi(lo) >= target:
        return lo
    return scipy.optimize.brentq(lambda x: logpsi(x) - target, lo, hi, xtol=1e-300, rtol=1e-15, maxiter=500)


def _newton(mu, lam, eps, iters=60):
    """Complex Newton for ``psi(lam) = mu``; returns the root or ``None``."""
    with np.errstate(all="ignore"):
        return _newton_loop(mu, lam, eps, iters)


def _newton_loop(mu, lam, eps, iters):
    tol = 1e-13 * max(1.0, abs(mu))
    for _ in range(iters):
        f = complex(psi(complex(lam), eps)) - mu
        if not np.isfinite(f):
            return None
        if abs(f) <= tol:
            # one more step for full accuracy
            d = complex(_dpsi(complex(lam), eps))
            return lam - f / d if d != 0 else lam
        d = complex(_dpsi(complex(lam), eps))
        if d == 0 or not np.isfinite(d):
            return None
        step = f / d
        cap = 1.0 + abs(lam)
        if abs(step) > cap:
            step = step * cap / abs(step)
        lam = lam - step
    return None


def _complex_preimage(mu, eps):
    """A non-real ``lam`` with ``psi(lam, eps) = mu`` and ``psi'(lam) != 0`` (``t1 = 1``).

    Tries Newton from a few starts, then follows ``mu`` along a straight path (continuation)."""
    mu = complex(mu)
    if eps == 0:
        lam = complex(np.log(mu))
        return lam if lam.imag != 0 else None
    starts = []
    m, lam_star = m_eps(eps)
    if mu.imag != 0 and mu.real > m:
        l0 = _g_real(mu.real, eps)
        d0 = float(_dpsi(l0, eps))
        if d0 > 0:
            starts.append(complex(l0, mu.imag / d0))
    if mu.imag != 0 and mu.real < m:  # continue from the preimage of Re(mu)
        l0 = _complex_preimage(complex(mu.real, 0.0), eps)
        if l0 is not None:
            starts.append(l0 + 1j * mu.imag / complex(_dpsi(l0, eps)))
    if mu.real < m:  # below the trough: psi ~ m + psi''/2 (lam - lam*)^2
        h = 1e-4 * (1 + abs(lam_star))
        dd = (float(_dpsi(lam_star + h, eps)) - float(_dpsi(lam_star - h, eps))) / (2 * h)
        if dd > 0:
            starts.append(lam_star + 1j * math.sqrt(2 * (m - mu.real) / dd))
    starts.append(complex(np.log(mu)) if mu != 0 else complex(-1, math.pi))

    def good(lam):
        return lam is not None and abs(lam.imag) > 1e-12 * (1 + abs(lam)) and abs(
            complex(_dpsi(lam, eps))
        ) > 1e-12

    for lam0 in starts:
        lam = _newton(mu, lam0, eps)
        if good(lam):
            return lam
    # continuation from each start's own value psi(lam0) to mu
    for lam0 in starts:
        mu0 = complex(psi(complex(lam0), eps))
        lam = lam0
        for t in np.linspace(0, 1, 201)[1:]:
            lam = _newton(mu0 + t * (mu - mu0), lam, eps, iters=30)
            if lam is None:
                break
        if good(lam):
            return lam
    return None


# ----------------------------------------------------------------------------------------------
# representability


def _as_matrix(D, name="D"):
    if isinstance(D, torch.Tensor):
        D = D.detach().cpu().numpy()
    D = np.asarray(D)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"{name} must be a square matrix (d, d), got shape {D.shape}.")
    if np.iscomplexobj(D):
        if np.any(D.imag != 0):
            raise ValueError(f"{name} must be real (theta is real, so Psi(theta) is real).")
        D = D.real
    D = D.astype(np.float64)
    if not np.all(np.isfinite(D)):
        raise ValueError(f"non-finite values (NaN or inf) in {name}.")
    return D


def _scale(D):
    return max(1.0, float(np.abs(D).max()) if D.size else 1.0)


def _clusters(w, tol):
    """Group eigenvalues within ``tol`` (single linkage); returns (center, indices) pairs."""
    order = np.argsort(w.real + 1e-3 * w.imag)
    groups = []
    for i in order:
        for g in groups:
            if min(abs(w[i] - w[j]) for j in g) <= tol:
                g.append(i)
                break
        else:
            groups.append([i])
    return [(complex(np.mean(w[g])), g) for g in groups]


def _cluster_schur(D, mu, mult):
    """Orthogonal ``Z`` and ``T = Z^T D Z = [[T11, T12], [0, T22]]`` (real Schur form, reordered)
    with ``T11`` (``mult x mult``) carrying the ``mult`` eigenvalues of ``D`` closest to ``mu``:
    ``Z[:, :mult]`` spans their invariant subspace. The selection is the disc of radius midway
    between the ``mult``-th and the next distance to ``mu``. ``None`` when that disc does not
    select exactly ``mult`` eigenvalues (a tie, or reordering moved an eigenvalue across it)."""
    d = D.shape[0]
    if mult == d:
        return np.eye(d), D.copy()
    dist = np.sort(np.abs(np.linalg.eigvals(D) - mu))
    r = 0.5 * (dist[mult - 1] + dist[mult])
    if not dist[mult - 1] < r < dist[mult]:
        return None
    T, Z, sdim = scipy.linalg.schur(D, output="real", sort=lambda x, y: abs(complex(x, y) - mu) < r)
    return (Z, T) if sdim == mult else None


def _jordan_blocks(D, mu, mult, scale, rtol=1e-7):
    """Sizes ``{size: count}`` of the Jordan blocks of the real eigenvalue cluster at ``mu``
    (``mult`` eigenvalues of ``D``), read on the cluster's own invariant subspace only: with
    ``T11`` from ``_cluster_schur`` and ``A = T11 - mu I`` (``mult x mult``), the rank of
    ``A^k`` counts singular values above ``rtol scale^k mult``; the number of blocks of size
    ``>= k`` is ``rank A^(k-1) - rank A^k``. Other eigenvalues, however close, are not in
    ``T11`` and cannot enter the null spaces. ``{}`` when the cluster cannot be separated; the
    ladder can still be inconsistent (a count <= 0 or sizes not summing to ``mult``: see
    ``_blocks_ok``) when the cluster's own eigenvalues are spread by more than rounding."""
    sch = _cluster_schur(D, mu, mult)
    if sch is None:
        return {}
    A = sch[1][:mult, :mult] - mu * np.eye(mult)
    ranks = [mult]
    P = np.eye(mult)
    for k in range(1, mult + 1):
        P = P @ A
        sv = np.linalg.svd(P, compute_uv=False)
        ranks.append(int(np.sum(sv > rtol * scale**k * mult)))
        if ranks[-1] == 0:
            break
    at_least = [ranks[k - 1] - ranks[k] for k in range(1, len(ranks))] + [0]
    sizes = {}
    for k in range(1, len(at_least)):
        n = at_least[k - 1] - at_least[k]
        if n:
            sizes[k] = n
    return sizes


def _blocks_ok(blocks, mult):
    """Whether the rank ladder of ``_jordan_blocks`` gave a Jordan structure of ``mult``."""
    return bool(blocks) and min(blocks.values()) > 0 and sum(
        k * n for k, n in blocks.items()
    ) == mult


def _merge_defective(D, w, clusters, tol, scale):
    """Merge clusters that are one defective real eigenvalue split by rounding.

    A Jordan block of size ``k`` in a general basis has computed eigenvalues spread by
    ``~(1e-16 cond)^(1/k) |D|`` (``~1e-5`` for ``k = 3``), beyond the cluster tolerance; its
    pieces are non-real or have an inconsistent rank ladder. The pieces are regrouped by single
    linkage at radii ``r`` growing geometrically (factor 2) from ``2e-6 |D|`` to ``1e-2 |D|``;
    a group of several pieces, one of them non-real (``|Im| > 1e-10 |D|``) or inconsistent
    and not yet merged, with a real mean ``c``, is merged when the rank ladder of
    ``T11 - c I`` on the group's own invariant subspace (``_jordan_blocks``) at a
    rounding-level threshold (``1e-14``; the zero singular values of a true Jordan pair measure
    ``~1e-16 |D|^k`` in bases of condition number up to 20) is a consistent Jordan structure of
    the whole group.
    Distinct eigenvalues ``delta`` apart leave singular values ``~delta^2`` or ``~delta`` in
    ``T11 - c I``, so a group that takes in a neighbour is refused and the smaller group formed
    at a smaller radius stands. Groups of real, consistent pieces are left alone. Only
    approximate: a neighbour whose distance is comparable to the rounding spread of the block
    (``delta`` of ``~1e-5`` next to a pair of size-3 blocks) cannot be told from it: the pieces
    stay unmerged, and ``_analyse`` raises RuntimeError when that leaves a negative
    eigenvalue with an impossible ladder or an odd block count next to non-real pieces; a wrong
    merge that passes every check is not excluded in principle."""
    if len(clusters) < 2:
        return clusters
    bad = {}

    def is_bad(mu, g):
        key = tuple(g)
        if key not in bad:
            bad[key] = bool(np.abs(w[g].imag).max() > 1e-10 * scale) or not _blocks_ok(
                _jordan_blocks(D, mu.real, len(g), scale), len(g)
            )
        return bad[key]

    out = list(clusters)
    for j in range(14):  # r = 2 tol 2^j, the last capped at 1e-2 |D|
        r = min(2 * tol * 2**j, 1e-2 * scale)
        new = []
        for c, idx in _clusters(w, r):
            fine = [(mu, g) for mu, g in out if set(g) <= set(idx)]
            if (
                1 < len(fine)
                and len(idx) <= 32  # bounds the cost: one SVD per power in the rank ladder
                and abs(c.imag) <= tol
                and any(is_bad(mu, g) for mu, g in fine)
                and _blocks_ok(_jordan_blocks(D, c.real, len(idx), scale, rtol=1e-14), len(idx))
            ):
                new.append((complex(c.real, 0.0), list(idx)))
                bad[tuple(idx)] = False
            else:
                new.extend(fine)
        out = new
    return out


def _analyse(D, eps, merge=True):
    """Eigenvalue clusters of ``D`` with their classification; list of problems (strings).
    ``merge=False`` skips ``_merge_defective`` (for the deliberately perturbed, nearly
    defective starting matrices of ``_construct``)."""
    scale = _scale(D)
    w = np.linalg.eigvals(D) if D.size else np.zeros(0, complex)
    tol = 1e-6 * scale
    clusters = _clusters(w, tol)
    if merge:
        clusters = _merge_defective(D, w, clusters, tol, scale)
    m = m_eps(eps)[0] if eps > 0 else 0.0
    info, problems = [], []
    for mu, idx in clusters:
        real = abs(mu.imag) <= tol
        if real:
            mu = complex(mu.real, 0.0)
        kind = "complex"
        if real:
            r = mu.real
            if eps == 0:
                kind = "zero" if abs(r) <= tol else ("positive" if r > 0 else "negative")
            elif abs(r) <= tol:  # m_eps < 0 strictly (even where it underflows to -0.0)
                mu, kind = 0j, "branch"
            elif abs(r - m) <= tol:
                mu, kind = complex(m, 0.0), "boundary"
            else:
                kind = "branch" if r > m else "negative"
        blocks = _jordan_blocks(D, mu.real, len(idx), scale) if real else None
        if merge and kind == "negative" and not _blocks_ok(blocks, len(idx)):
            # the parity test below needs the Jordan structure; an impossible ladder (a count
            # <= 0, sizes not summing to the multiplicity) decides nothing
            raise RuntimeError(
                f"could not determine the Jordan structure of eigenvalue {mu.real:.6g} of D "
                f"({len(idx)} eigenvalues, rank ladder {_fmt_blocks(blocks)}): its eigenvalues "
                f"are spread beyond rounding, or another eigenvalue lies within the rounding "
                f"spread of a Jordan block; the answer is ill-posed at float64 precision."
            )
        entry = {"mu": mu, "idx": idx, "kind": kind, "blocks": blocks}
        info.append(entry)
        r = mu.real
        if kind == "zero":
            problems.append(
                f"D is singular (eigenvalue {r:.6g}); with eps = 0 Psi(theta) = expm(theta) is "
                f"invertible (det = exp(tr theta) > 0)."
            )
        elif kind == "negative":
            odd = {k: n for k, n in blocks.items() if n % 2}
            near = [  # non-real clusters (a split block's pieces have non-real means)
                j for c, g in clusters if abs(c.imag) > tol and abs(c - r) <= 1e-3 * scale
                for j in g
            ]
            if odd and merge and near:
                # non-real eigenvalues this close may be the rounding-split pieces of a Jordan
                # block of r that could not be merged (a neighbour within their spread)
                raise RuntimeError(
                    f"eigenvalue {r:.6g} of D has Jordan blocks {_fmt_blocks(blocks)} but "
                    f"{len(near)} non-real eigenvalues of D lie within 1e-3 |D| of it, possibly "
                    f"the rounding-split pieces of a larger Jordan block: the parity test is "
                    f"ill-posed at float64 precision."
                )
            if odd:
                bound = (
                    "expm(theta) has no simple negative eigenvalue: real theta gives negative "
                    "eigenvalues only from complex-conjugate pairs log|mu| +/- i pi (Culver 1966)"
                    if eps == 0
                    else f"real eigenvalues below m_eps = {m:.6g} (eps = {eps:g}) come only from "
                    f"complex-conjugate pairs of eigenvalues of theta"
                )
                problems.append(
                    f"eigenvalue {r:.6g} of D has Jordan blocks {_fmt_blocks(blocks)}: {bound}, so "
                    f"every Jordan block size of {r:.6g} must occur an even number of times."
                )
        elif kind == "boundary":
            odd = {k: n for k, n in blocks.items() if k > 1 and n % 2}
            if odd:
                problems.append(
                    f"eigenvalue {r:.6g} of D equals m_eps = {m:.6g} (eps = {eps:g}), where "
                    f"psi' = 0, and has Jordan blocks {_fmt_blocks(blocks)}: blocks of size >= 2 "
                    f"must occur an even number of times."
                )
    return info, problems, m


def _fmt_blocks(blocks):
    return "{" + ", ".join(f"size {k}: {n}" for k, n in sorted(blocks.items())) + "}"


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
    blocks) it raises RuntimeError instead of answering; a genuine non-real pair that close to
    a simple negative eigenvalue also raises. ``t1`` enters only through ``eps/t1``
    (``Psi(theta, eps, t1) = Psi(t1 theta, eps/t1)``).

    Raises:
        RuntimeError: the Jordan structure of a negative eigenvalue is ill-posed (above).
    """
    eps = check_eps(eps)
    t1 = _t1(t1)
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
        if sv[d - k] > 1e-6 * _scale(D) * 10:  # not k independent eigenvectors: defective
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
    if col != d or np.linalg.cond(W) > 1e8:
        return None
    return W @ B @ np.linalg.inv(W)


def _choose(e, eps):
    """The preimage ``lam`` (``t1 = 1``) used for eigenvalue cluster ``e``."""
    mu, kind = e["mu"], e["kind"]
    if kind in ("positive", "branch", "boundary"):
        return _g_real(mu.real, eps)
    lam = _complex_preimage(mu if kind == "complex" else complex(mu.real, 0), eps)
    if lam is None:
        raise RuntimeError(f"no non-real preimage of {mu} under psi (eps = {eps:g}) was found.")
    if kind == "complex" and lam.imag * mu.imag < 0:
        lam = lam.conjugate()
    return lam


def _polish(theta, D, eps, iters=8):
    """Newton on ``Psi(theta) = D`` with the Frechet derivative of the block exponential."""
    d = D.shape[0]
    Z = np.zeros((d, d))
    for _ in range(iters):
        R = D - Psi(theta, eps)
        if np.abs(R).max() <= 1e-14 * _scale(D):
            break
        if eps == 0:
            M, lift = theta, (lambda E: E)
        else:
            I = np.eye(d)
            M = np.block([[Z, I], [theta / eps, -I / eps]])
            lift = lambda E: np.block([[Z, Z], [E / eps, Z]])  # noqa: E731
        J = np.zeros((d * d, d * d))
        for i in range(d * d):
            E = np.zeros(d * d)
            E[i] = 1.0
            _, L = scipy.linalg.expm_frechet(M, lift(E.reshape(d, d)))
            J[:, i] = L[:d, :d].ravel()
        theta = theta + np.linalg.lstsq(J, R.ravel(), rcond=None)[0].reshape(d, d)
    return theta


def _bound_projector(D, info):
    """Spectral projector onto the eigenspaces of the semisimple real eigenvalues at or below
    ``m_eps`` (``P = V (W^T V)^-1 W^T`` from right and left eigenvectors)."""
    d = D.shape[0]
    P = np.zeros((d, d))
    for e in info:
        if e["kind"] not in ("negative", "boundary") or set(e["blocks"]) != {1}:
            continue
        k, mu = len(e["idx"]), e["mu"].real
        V = np.linalg.svd(D - mu * np.eye(d))[2][-k:].T
        W = np.linalg.svd((D - mu * np.eye(d)).T)[2][-k:].T
        P = P + V @ np.linalg.solve(W.T @ V, W.T)
    return P


def _trough_preimage(mu, eps):
    """A non-real root of ``psi(lam, eps) = mu`` near the second trough of ``psi`` (``t1 = 1``;
    for ``mu = m_eps``, whose preimage ``lam*`` on the first trough is a critical point).

    The second trough ``lam2 = -1/(4 eps) - eps phi^2`` has ``phi`` solving the trough equation
    of ``m_eps`` on ``[3 pi, 7 pi/2]``; there
    ``psi ~ m2 + psi''/2 (lam - lam2)^2`` with ``m2 > m_eps``, so Newton starts at
    ``lam2 + i sqrt(2 (m2 - mu)/psi'')``. ``None`` if that fails."""
    if eps == 0:
        return None
    a = 1.0 / (2.0 * eps)

    def slope(phi):
        return -math.sin(phi) + a * (phi * math.cos(phi) - math.sin(phi)) / phi**2

    phi = scipy.optimize.brentq(slope, 3 * math.pi, 3.5 * math.pi, xtol=1e-15, rtol=1e-15)
    lam2 = -1.0 / (4.0 * eps) - eps * phi * phi
    m2 = float(psi(lam2, eps))
    h = 1e-4 * (1 + abs(lam2))
    dd = (float(_dpsi(lam2 + h, eps)) - float(_dpsi(lam2 - h, eps))) / (2 * h)
    if not (dd > 0 and m2 > mu):
        return None
    lam = _newton(complex(mu), complex(lam2, math.sqrt(2 * (m2 - mu) / dd)), eps)
    return lam if lam is not None and abs(lam.imag) > 1e-8 * (1 + abs(lam)) else None


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


def _null(M, dim):
    """Orthonormal basis (columns) of the ``dim``-dimensional numerical null space of ``M``."""
    if dim == 0:
        return np.zeros((M.shape[1], 0))
    return np.linalg.svd(M)[2][M.shape[1] - dim :].conj().T


def _jordan_chains(N, blocks):
    """Jordan chains of the nilpotent ``N`` (``n x n``) with block sizes ``blocks``
    (``{size: count}``): a list of ``(k, v)``, ``N^k v = 0``, the chains
    ``v, N v, ..., N^{k-1} v`` together a basis. Longest chains first: ``v`` spans a complement of
    ``ker N^{k-1} + span{N^{l-k} w: chains (l, w), l > k}`` in ``ker N^k`` (orthogonal
    projections and SVDs, dimensions from ``blocks``)."""
    n = N.shape[0]
    kmax = max(blocks)
    dims = [sum(cnt * min(size, j) for size, cnt in blocks.items()) for j in range(kmax + 1)]
    pw = [np.eye(n)]
    for _ in range(kmax):
        pw.append(pw[-1] @ N)
    chains = []
    for k in range(kmax, 0, -1):
        ck = blocks.get(k, 0)
        if not ck:
            continue
        Kk = _null(pw[k], dims[k])
        W = np.hstack([_null(pw[k - 1], dims[k - 1])] + [pw[l - k] @ w[:, None] for l, w in chains])
        if W.shape[1]:
            Wb = np.linalg.svd(W, full_matrices=False)[0]
            Kk = Kk - Wb @ (Wb.T @ Kk)
        u = np.linalg.svd(Kk, full_matrices=False)[0]
        chains += [(k, u[:, i]) for i in range(ck)]
    return chains


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
    if np.linalg.cond(S) > 1e8:
        return None
    T = np.linalg.solve(S, D @ S)
    if max(np.abs(T[:n, n:]).max(initial=0), np.abs(T[n:, :n]).max(initial=0)) > 1e-8 * scale:
        return None
    A, B = T[:n, :n], T[n:, n:]
    mu = float(np.trace(A)) / n  # the mean of a cluster is accurate even where its members split
    Nm = A - mu * np.eye(n)
    h = max(float(np.linalg.norm(Nm, 2)), 1e-300)
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
    if np.linalg.cond(E) > 1e8:
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
            raise RuntimeError(
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
        for seed in range(8):
            rng = np.random.default_rng(seed)
            Dp = D + 1e-7 * _scale(D) * (Q @ rng.standard_normal(D.shape) @ Q)
            info_p, problems, _ = _analyse(Dp, eps, merge=False)
            theta = _real_form(Dp, info_p, lam_of) if not problems else None
            if theta is not None:
                break
        else:
            raise NotImplementedError("could not build a starting theta for this defective D.")
        theta = _polish(theta, D, eps)
    elif D.shape[0] <= 20 and np.abs(Psi(theta, eps) - D).max() > 1e-12 * _scale(D) * max(
        1.0, float(np.abs(theta).max())
    ):  # eigenvalues merged into one cluster (within 1e-6) are only approximately equal
        theta = _polish(theta, D, eps)
    return theta


def _check_residual(theta, target, eps, what):
    res = float(np.abs(Psi(theta, eps) - target).max())
    if not res <= 1e-9 * _scale(target) * max(1.0, float(np.abs(theta).max())):
        raise RuntimeError(
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
    or RuntimeError.

    Nearly defective input: eigenvalues within the cluster tolerance count as one eigenvalue and
    the Jordan structure comes from rank decisions at ``1e-7`` on the cluster's own invariant
    subspace (``is_representable``); the generalized eigenspace is split off by a reordered
    Schur form and a Sylvester solve, so a distinct eigenvalue ``1e-4 |D|`` or more away (tested
    down to ``delta = 1e-4`` next to a pair of 2x2 blocks; ``1e-5`` works in the cases tried) no
    longer disturbs the split. A
    pair ``mu I + N`` with eigenvalues spread by ``delta`` inside a cluster is represented as
    the exact Jordan pair at the mean: ``Psi(theta) = D + O(delta^2)``. A nilpotent part near the
    rank threshold (``~1e-7 |D|``) is ill-posed: the semisimple route plus Newton either meets
    the residual check or raises RuntimeError. Jordan blocks of size ``k >= 3`` in a general
    basis have computed eigenvalues spread by ``~(1e-16 cond)^(1/k)``, beyond the cluster
    tolerance; the pieces are merged back by the rank ladder at their mean
    (``_merge_defective``). A distinct eigenvalue within that rounding spread of such a
    block (e.g. ``~1e-5`` from a pair of 3x3 blocks) cannot be told from it: then the analysis
    raises RuntimeError (ill-posed) or the residual check does, rather than return a wrong
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
        RuntimeError: the residual check fails (ill-conditioned ``D`` or basis), or the Jordan
            structure of a negative eigenvalue is ill-posed (see ``is_representable``).
    """
    eps = check_eps(eps)
    t1 = _t1(t1)
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
        c = 0.99 * m / mu_min
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
