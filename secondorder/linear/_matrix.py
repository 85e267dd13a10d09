"""The matrix map ``Psi``: three algorithms (block exponential of the first-order system,
the stiff closed form, the eigendecomposition) and the dispatch between them."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from .._validate import check_eps, check_t1
from ._scalar import _psi_unit, _xp
from ._tolerances import (
    BLOCK_EPS_MIN,
    EIG_COND_MAX,
    SQRTM_ITERS,
    SQRTM_RTOL,
    STIFF_NORM_MAX,
)


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
    for _ in range(SQRTM_ITERS):
        Y, Z = (Y + inv(Z)) / 2, (Z + inv(Y)) / 2
        if _norm1(Y @ Y - A, xp) <= SQRTM_RTOL * max(1.0, _norm1(A, xp)):
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


def _square(theta):
    """``(theta, xp)``: a numpy ``theta`` as an array (integers as float64); ``ValueError``
    unless ``theta`` is ``(..., d, d)``."""
    xp = _xp(theta)
    if xp is np:
        theta = np.asarray(theta)
        if not (np.iscomplexobj(theta) or theta.dtype.kind == "f"):
            theta = theta.astype(np.float64)
    if theta.ndim < 2 or theta.shape[-1] != theta.shape[-2]:
        raise ValueError(f"theta must be a square matrix (..., d, d), got shape {tuple(theta.shape)}.")
    return theta, xp


def _companion(theta, eps, xp):
    """``[[0, I], [theta/eps, -I/eps]]`` for a validated ``theta`` and ``eps > 0``."""
    I = _eye_like(theta, xp)
    Z = xp.zeros_like(theta)
    cat = torch.cat if xp is torch else np.concatenate
    return cat([cat([Z, I], -1), cat([theta / eps, -I / eps], -1)], -2)


def companion(theta, eps):
    """The matrix ``M = [[0, I], [theta/eps, -I/eps]]`` of the first-order system of
    ``eps x'' + x' = theta x``: with ``u = x'``, ``(x, u)' = M (x, u)`` (``x' = u``,
    ``u' = (theta x - u)/eps``), so ``(x(t), u(t)) = expm(t M) (x(0), u(0))`` and
    ``Psi(theta, eps, t1)`` is the top-left ``d x d`` block of ``expm(t1 M)``.

    Args:
        theta: ``(..., d, d)`` numpy array or torch tensor (float or complex; numpy integers
            become float64).
        eps: float > 0 (at ``eps = 0`` the equation is first order: there is no ``u``).
    Returns:
        ``(..., 2d, 2d)``, same kind and dtype as ``theta``; differentiable for torch.
    Raises:
        ValueError: ``eps`` not a finite number > 0, or ``theta`` not ``(..., d, d)``.
    """
    eps = check_eps(eps)
    if eps == 0:
        raise ValueError("eps == 0.0: the companion matrix needs eps > 0 (the equation is then x' = theta x).")
    theta, xp = _square(theta)
    return _companion(theta, eps, xp)


def _Psi_block(theta, eps, xp):
    """``Psi`` (``t1 = 1``) as the top-left block of ``expm(companion(theta, eps))``:
    the first-order system ``x' = u``, ``u' = (theta x - u)/eps`` from ``(x0, 0)``."""
    d = theta.shape[-1]
    return _expm(_companion(theta, eps, xp), xp)[..., :d, :d]


def _Psi_eig(theta, eps, xp):
    """``Psi = V diag(psi(w)) V^-1`` from ``theta = V diag(w) V^-1``; ``None`` when ``V`` is
    ill-conditioned (cond > 1e6)."""
    if xp is torch:
        w, V = torch.linalg.eig(theta)
        if float(torch.linalg.cond(V.detach()).abs().amax()) > EIG_COND_MAX:
            return None
        P = V @ torch.diag_embed(_psi_unit(w, eps, torch)) @ torch.linalg.inv(V)
        return P.real if not theta.is_complex() else P
    w, V = np.linalg.eig(theta)
    if np.max(np.linalg.cond(V)) > EIG_COND_MAX:
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
    t1 = check_t1(t1)
    theta, xp = _square(theta)
    theta = theta * t1
    if eps == 0:
        return _expm(theta, xp)
    eps = eps / t1
    if eps >= BLOCK_EPS_MIN:
        return _Psi_block(theta, eps, xp)
    if 4 * eps * _norm1(theta, xp) <= STIFF_NORM_MAX:
        return _Psi_stiff(theta, eps, xp)
    P = _Psi_eig(theta, eps, xp)
    return _Psi_block(theta, eps, xp) if P is None else P
