"""The scalar map ``psi`` of ``eps x'' + x' = lam x`` (``x(0) = 1``, ``x'(0) = 0``), its
derivative, its minimum ``m_eps`` on the real line and its inverses (real branch, complex
preimages by Newton and continuation). Inside this package ``t1 = 1`` unless a function takes
``t1``; docs/theory.md §3."""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.optimize
import torch

from .._validate import check_eps, check_t1
from ._tolerances import (
    BRENT_MAXITER,
    BRENT_TOL,
    CONTINUATION_NEWTON_ITERS,
    CONTINUATION_STEPS,
    DPSI_MIN,
    EXP_ARG_MAX,
    FD_STEP,
    LOGPSI_MAXITER,
    LOGPSI_XTOL,
    NEWTON_ITERS,
    NEWTON_RTOL,
    NONREAL_RTOL,
    SERIES_TERMS,
    TROUGH_NONREAL_RTOL,
)


def _xp(x):
    return torch if isinstance(x, torch.Tensor) else np


def _series(u, xp):
    """``C(u) = cosh(sqrt u)``, ``S(u) = sinh(sqrt u)/sqrt u`` and ``S'(u)`` for ``|u| <= 1``."""
    C = xp.zeros_like(u) + 1.0
    S = xp.zeros_like(u) + 1.0
    dS = xp.zeros_like(u) + 1.0 / 6.0
    term = xp.ones_like(u)
    for k in range(1, SERIES_TERMS):
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
    t1 = check_t1(t1)
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


def dpsi(lam, eps, t1=1.0):
    """The derivative ``d psi / d lam`` of the scalar map :func:`psi` (numpy).

    At ``t1 = 1``, with ``a = 1/(2 eps)``, ``s = sqrt(1 + 4 eps lam)``, ``u = a^2 s^2`` and
    ``C(u) = cosh(sqrt u)``, ``S(u) = sinh(sqrt u)/sqrt u``:
    ``psi'(lam) = (1/eps) e^{-a} (S(u)/2 + a S'(u))``, summed as a power series near the branch
    point ``s = 0`` and from exponentials elsewhere (no overflow for tiny ``eps``);
    ``psi'(lam, eps, t1) = t1 psi'(t1 lam, eps/t1, 1)``; ``eps = 0`` gives ``t1 exp(t1 lam)``.
    It vanishes at the troughs of ``psi`` on the real line (e.g. at ``m_eps(eps)[1]``), where
    ``psi`` is not locally invertible.

    Args:
        lam: real or complex number or numpy array (any shape).
        eps: float >= 0.  t1: float > 0.
    Returns:
        numpy array of ``lam``'s shape (0-d for a number); real for real ``lam``.
    Raises:
        TypeError: ``lam`` is a torch tensor (differentiate :func:`psi` with autograd instead).
        ValueError: ``eps < 0`` or ``t1 <= 0`` (or not finite).
    """
    if isinstance(lam, torch.Tensor):
        raise TypeError("dpsi takes numbers or numpy arrays; for a tensor differentiate psi with autograd.")
    return _dpsi(lam, check_eps(eps), check_t1(t1))


def _trough(eps, k):
    """``(lam_k, phi)``: the ``k``-th trough (local minimum) of ``psi(., eps)`` on the real line
    (``t1 = 1``, ``eps > 0``). Below ``-1/(4 eps)``, ``psi = e^{-a} (cos phi + a sin(phi)/phi)``
    with ``a = 1/(2 eps)``, ``phi = a sqrt(-1 - 4 eps lam)``; its troughs solve
    ``-sin phi + a (phi cos phi - sin phi)/phi^2 = 0``, the ``k``-th on
    ``[(2k - 1) pi, (2k - 1/2) pi]``, and ``lam_k = -1/(4 eps) - eps phi^2``."""
    a = 1.0 / (2.0 * eps)

    def slope(phi):
        return -math.sin(phi) + a * (phi * math.cos(phi) - math.sin(phi)) / phi**2

    phi = scipy.optimize.brentq(slope, (2 * k - 1) * math.pi, (2 * k - 0.5) * math.pi, xtol=BRENT_TOL,
                                rtol=BRENT_TOL, maxiter=BRENT_MAXITER)
    return -1.0 / (4.0 * eps) - eps * phi * phi, phi


def _d2psi_fd(lam, eps):
    """``psi''(lam)`` (``t1 = 1``, real ``lam``) by a central difference of ``psi'`` with step
    ``FD_STEP (1 + |lam|)``: the curvature at a trough, for a Newton starting point."""
    h = FD_STEP * (1 + abs(lam))
    return (float(_dpsi(lam + h, eps)) - float(_dpsi(lam - h, eps))) / (2 * h)


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
    t1 = check_t1(t1)
    if eps == 0:
        return 0.0, -math.inf
    e = eps / t1
    a = 1.0 / (2.0 * e)
    lam, phi = _trough(e, 1)
    m = math.exp(-a) * (math.cos(phi) + a * math.sin(phi) / phi)
    return m, lam / t1


def _psi_inverse_real(mu, eps):
    """Real inverse of ``psi(., eps)`` (``t1 = 1``) on ``[lam*, inf)`` for real ``mu >= m_eps``."""
    if eps == 0:
        return math.log(mu)
    a = 1.0 / (2.0 * eps)
    m, lam_star = m_eps(eps)
    if mu <= m:
        return lam_star
    lam_c = -1.0 / (4.0 * eps)  # psi(lam_c) = (1 + a) e^{-a}
    if mu < (1 + a) * math.exp(-a) or (a > EXP_ARG_MAX and mu <= 0):
        # oscillating side: q(phi) = cos phi + a sin(phi)/phi decreases on [0, phi*] to m e^a
        phi_star = math.sqrt((lam_c - lam_star) / eps)
        target = mu * math.exp(a) if a <= EXP_ARG_MAX else 0.0

        def q(phi):
            return (math.cos(phi) + (a * math.sin(phi) / phi if phi > 0 else a)) - target

        phi = scipy.optimize.brentq(q, 0.0, phi_star, xtol=BRENT_TOL, rtol=BRENT_TOL,
                                    maxiter=BRENT_MAXITER)
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
    return scipy.optimize.brentq(lambda x: logpsi(x) - target, lo, hi, xtol=LOGPSI_XTOL,
                                 rtol=BRENT_TOL, maxiter=LOGPSI_MAXITER)


def psi_inverse_real(mu, eps, t1=1.0):
    """The real ``lam >= lam*`` with ``psi(lam, eps, t1) = mu``: the inverse of :func:`psi` on its
    increasing branch ``[lam*, inf)``, ``(m, lam*) = m_eps(eps, t1)``.

    On the real line ``psi`` increases on ``[lam*, inf)`` from its minimum ``m`` to ``inf``, so
    every real ``mu >= m`` has exactly one preimage there. The root is bracketed and found by Brent's method, on
    ``log psi`` above ``lam = -1/(4 eps)`` (no overflow) and on the oscillating form below.
    ``mu <= m`` returns ``lam*``. ``eps = 0``: ``log(mu)/t1``. Time scaling:
    ``psi_inverse_real(mu, eps, t1) = psi_inverse_real(mu, eps/t1) / t1``.

    Args:
        mu: real number (``> 0`` for ``eps = 0``).  eps: float >= 0.  t1: float > 0.
    Returns:
        float ``lam``.
    Raises:
        TypeError: ``mu`` is not a real number.
        ValueError: ``eps < 0``, ``t1 <= 0``, ``mu`` not finite, or ``mu <= 0`` with ``eps = 0``
            (``exp`` is positive).
    """
    eps = check_eps(eps)
    t1 = check_t1(t1)
    if isinstance(mu, bool) or not isinstance(mu, numbers.Real):
        raise TypeError(f"mu must be a real number, got {type(mu).__name__}.")
    mu = float(mu)
    if not math.isfinite(mu):
        raise ValueError(f"mu == {mu!r}, must be finite.")
    if eps == 0 and mu <= 0:
        raise ValueError(f"mu == {mu!r}: with eps = 0, psi = exp takes only values > 0.")
    return _psi_inverse_real(mu, eps / t1) / t1


def _newton(mu, lam, eps, iters=NEWTON_ITERS):
    """Complex Newton for ``psi(lam) = mu``; returns the root or ``None``."""
    with np.errstate(all="ignore"):
        return _newton_loop(mu, lam, eps, iters)


def _newton_loop(mu, lam, eps, iters):
    tol = NEWTON_RTOL * max(1.0, abs(mu))
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
        l0 = _psi_inverse_real(mu.real, eps)
        d0 = float(_dpsi(l0, eps))
        if d0 > 0:
            starts.append(complex(l0, mu.imag / d0))
    if mu.imag != 0 and mu.real < m:  # continue from the preimage of Re(mu)
        l0 = _complex_preimage(complex(mu.real, 0.0), eps)
        if l0 is not None:
            starts.append(l0 + 1j * mu.imag / complex(_dpsi(l0, eps)))
    if mu.real < m:  # below the trough: psi ~ m + psi''/2 (lam - lam*)^2
        dd = _d2psi_fd(lam_star, eps)
        if dd > 0:
            starts.append(lam_star + 1j * math.sqrt(2 * (m - mu.real) / dd))
    starts.append(complex(np.log(mu)) if mu != 0 else complex(-1, math.pi))

    def good(lam):
        return lam is not None and abs(lam.imag) > NONREAL_RTOL * (1 + abs(lam)) and abs(
            complex(_dpsi(lam, eps))
        ) > DPSI_MIN

    for lam0 in starts:
        lam = _newton(mu, lam0, eps)
        if good(lam):
            return lam
    # continuation from each start's own value psi(lam0) to mu
    for lam0 in starts:
        mu0 = complex(psi(complex(lam0), eps))
        lam = lam0
        for t in np.linspace(0, 1, CONTINUATION_STEPS)[1:]:
            lam = _newton(mu0 + t * (mu - mu0), lam, eps, iters=CONTINUATION_NEWTON_ITERS)
            if lam is None:
                break
        if good(lam):
            return lam
    return None


def _trough_preimage(mu, eps):
    """A non-real root of ``psi(lam, eps) = mu`` near the second trough of ``psi`` (``t1 = 1``;
    for ``mu = m_eps``, whose preimage ``lam*`` on the first trough is a critical point).

    The second trough ``lam2 = -1/(4 eps) - eps phi^2`` has ``phi`` solving the trough equation
    of ``m_eps`` on ``[3 pi, 7 pi/2]``; there
    ``psi ~ m2 + psi''/2 (lam - lam2)^2`` with ``m2 > m_eps``, so Newton starts at
    ``lam2 + i sqrt(2 (m2 - mu)/psi'')``. ``None`` if that fails."""
    if eps == 0:
        return None
    lam2, _ = _trough(eps, 2)
    m2 = float(psi(lam2, eps))
    dd = _d2psi_fd(lam2, eps)
    if not (dd > 0 and m2 > mu):
        return None
    lam = _newton(complex(mu), complex(lam2, math.sqrt(2 * (m2 - mu) / dd)), eps)
    return lam if lam is not None and abs(lam.imag) > TROUGH_NONREAL_RTOL * (1 + abs(lam)) else None
