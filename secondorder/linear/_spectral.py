"""Generic spectral analysis of a real matrix ``D``: eigenvalue clusters, reordered real Schur
forms, Jordan block sizes from rank ladders, merging of rounding-split defective eigenvalues,
Jordan chains, and the classification of each cluster against ``m_eps`` (``_analyse``)."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from .._errors import NumericalError
from ._scalar import m_eps
from ._tolerances import (
    CLUSTER_ORDER_IMAG_WEIGHT,
    CLUSTER_RTOL,
    JORDAN_RANK_RTOL,
    MERGE_MAX_GROUP,
    MERGE_NONREAL_RTOL,
    MERGE_RADIUS_MAX,
    MERGE_RADIUS_STEPS,
    MERGE_RANK_RTOL,
    NEAR_PIECES_RTOL,
)


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
    order = np.argsort(w.real + CLUSTER_ORDER_IMAG_WEIGHT * w.imag)
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


def _jordan_blocks(D, mu, mult, scale, rtol=JORDAN_RANK_RTOL):
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
    stay unmerged, and ``_analyse`` raises ``secondorder.NumericalError`` when that leaves a negative
    eigenvalue with an impossible ladder or an odd block count next to non-real pieces; a wrong
    merge that passes every check is not excluded in principle."""
    if len(clusters) < 2:
        return clusters
    bad = {}

    def is_bad(mu, g):
        key = tuple(g)
        if key not in bad:
            bad[key] = bool(np.abs(w[g].imag).max() > MERGE_NONREAL_RTOL * scale) or not _blocks_ok(
                _jordan_blocks(D, mu.real, len(g), scale), len(g)
            )
        return bad[key]

    out = list(clusters)
    for j in range(MERGE_RADIUS_STEPS):  # r = 2 tol 2^j, the last capped at 1e-2 |D|
        r = min(2 * tol * 2**j, MERGE_RADIUS_MAX * scale)
        new = []
        for c, idx in _clusters(w, r):
            fine = [(mu, g) for mu, g in out if set(g) <= set(idx)]
            if (
                1 < len(fine)
                and len(idx) <= MERGE_MAX_GROUP  # bounds the cost: one SVD per power in the rank ladder
                and abs(c.imag) <= tol
                and any(is_bad(mu, g) for mu, g in fine)
                and _blocks_ok(_jordan_blocks(D, c.real, len(idx), scale, rtol=MERGE_RANK_RTOL), len(idx))
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
    tol = CLUSTER_RTOL * scale
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
            raise NumericalError(
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
                j for c, g in clusters if abs(c.imag) > tol and abs(c - r) <= NEAR_PIECES_RTOL * scale
                for j in g
            ]
            if odd and merge and near:
                # non-real eigenvalues this close may be the rounding-split pieces of a Jordan
                # block of r that could not be merged (a neighbour within their spread)
                raise NumericalError(
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
