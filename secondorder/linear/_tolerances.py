"""Every tolerance, iteration count and threshold of ``secondorder.linear``, named in one place.

Relative tolerances on matrices are multiplied by ``scale = max(1, |D|_max)`` (``_scale``);
on scalars by ``max(1, |x|)`` or ``1 + |x|``. The values were chosen against float64 rounding
(unit roundoff ``1.1e-16``) and are pinned by ``tests/test_linear.py``; changing one changes
the answers of ``is_representable`` or ``represent`` near the edge cases the tests probe.
"""

# ---------------------------------------------------------------------------------------------
# scalar psi and its inverses (_scalar.py)

#: Terms of the power series of ``cosh(sqrt u)`` and ``sinh(sqrt u)/sqrt u`` for ``|u| <= 1``:
#: the ``k``-th term is below ``1/(2k+1)!``, and ``1/29! ~ 1e-31`` is far below rounding.
SERIES_TERMS = 14

#: ``xtol`` and ``rtol`` of the bracketed root searches for a trough angle ``phi`` of ``psi``
#: (``m_eps``, the second trough) and for the oscillating side of the real inverse: ``phi`` is
#: O(1) to O(10), so ``1e-15`` is a few ulps.
BRENT_TOL = 1e-15
#: Iteration cap of those searches (brentq converges in a few dozen; a guard, not a setting).
BRENT_MAXITER = 200
#: ``xtol`` of the real inverse on the increasing branch, where ``lam`` may be tiny: absolute
#: accuracy is left to ``rtol = BRENT_TOL`` alone.
LOGPSI_XTOL = 1e-300
#: Iteration cap of that search (its bracket can span many orders of magnitude).
LOGPSI_MAXITER = 500
#: Largest ``a = 1/(2 eps)`` for which ``exp(a)`` is formed: ``exp(709.8)`` is the float64
#: limit, so beyond ``700`` ``e^{-a}`` is treated as 0.
EXP_ARG_MAX = 700

#: Complex Newton on ``psi(lam) = mu`` stops (after one more step) at
#: ``|psi(lam) - mu| <= NEWTON_RTOL max(1, |mu|)``: a few hundred ulps of ``psi``.
NEWTON_RTOL = 1e-13
#: Newton iteration cap from a starting point.
NEWTON_ITERS = 60
#: Points on the straight path from ``psi(lam0)`` to ``mu`` of the continuation, and the Newton
#: cap at each (each step starts close to its root).
CONTINUATION_STEPS = 201
CONTINUATION_NEWTON_ITERS = 30
#: Relative step ``h = FD_STEP (1 + |lam|)`` of the central difference for ``psi''`` at a
#: trough (only a starting point for Newton: a crude ``psi''`` is enough).
FD_STEP = 1e-4
#: A complex preimage counts as non-real when ``|Im lam| > NONREAL_RTOL (1 + |lam|)`` and as
#: regular when ``|psi'(lam)| > DPSI_MIN``: well above Newton's rounding, far below any genuine
#: imaginary part or slope.
NONREAL_RTOL = 1e-12
DPSI_MIN = 1e-12
#: The same non-real test for the second-trough preimage, stricter: a root close to the real
#: axis there lies near the trough itself, a critical point of ``psi`` (``psi' = 0``).
TROUGH_NONREAL_RTOL = 1e-8

# ---------------------------------------------------------------------------------------------
# matrix Psi (_matrix.py)

#: Denman-Beavers square root of ``I + 4 eps theta`` (spectrum within 1/2 of 1): stops at
#: ``|Y^2 - A|_1 <= SQRTM_RTOL max(1, |A|_1)`` (rounding level), at most ``SQRTM_ITERS`` steps
#: (quadratic convergence needs ~6).
SQRTM_RTOL = 1e-15
SQRTM_ITERS = 60
#: ``eps' = eps/t1`` from which the block exponential of the first-order system is used (its
#: stiffness ``1/eps'`` costs ~``1/eps'`` x rounding).
BLOCK_EPS_MIN = 1e-2
#: Below ``BLOCK_EPS_MIN``, the stiff closed form applies while ``4 eps' |theta'|_1 <= STIFF_NORM_MAX``
#: (``I + 4 eps theta`` then has its spectrum in a disc of radius 1/2 around 1).
STIFF_NORM_MAX = 0.5
#: Condition number of the eigenbasis above which ``V diag(psi(w)) V^-1`` is refused.
EIG_COND_MAX = 1e6

# ---------------------------------------------------------------------------------------------
# spectral analysis (_spectral.py)

#: Eigenvalues within ``CLUSTER_RTOL scale`` are one cluster (one eigenvalue); also the distance
#: within which an eigenvalue sits on a bound (``0`` or ``m_eps``) or counts as real.
CLUSTER_RTOL = 1e-6
#: Weight of the imaginary part in the sort key of the clustering (real part first, conjugates
#: in a fixed order).
CLUSTER_ORDER_IMAG_WEIGHT = 1e-3
#: Rank threshold of the Jordan ladder: a singular value of ``A^k`` counts when above
#: ``JORDAN_RANK_RTOL scale^k mult``.
JORDAN_RANK_RTOL = 1e-7
#: Rank threshold when merging rounding-split pieces of a defective eigenvalue: rounding level
#: (the zero singular values of a true Jordan pair measure ``~1e-16 |D|^k`` in bases of
#: condition number up to 20).
MERGE_RANK_RTOL = 1e-14
#: A piece is non-real (a candidate for merging) when ``|Im| > MERGE_NONREAL_RTOL scale``.
MERGE_NONREAL_RTOL = 1e-10
#: Merge radii ``r = 2 tol 2^j``, ``j < MERGE_RADIUS_STEPS``, capped at ``MERGE_RADIUS_MAX scale``.
MERGE_RADIUS_STEPS = 14
MERGE_RADIUS_MAX = 1e-2
#: Largest group considered for a merge (bounds the cost: one SVD per power in the ladder).
MERGE_MAX_GROUP = 32
#: Non-real eigenvalues within ``NEAR_PIECES_RTOL scale`` of a negative eigenvalue with an odd
#: block count may be unmerged pieces of a larger block: the parity test is then refused.
NEAR_PIECES_RTOL = 1e-3

# ---------------------------------------------------------------------------------------------
# construction (_construct.py)

#: Largest condition number accepted for an eigenbasis, a splitting ``S`` or a Jordan basis.
BASIS_COND_MAX = 1e8
#: The block-diagonal splitting ``S^-1 D S`` must have off-diagonal blocks below
#: ``SPLIT_RTOL scale``.
SPLIT_RTOL = 1e-8
#: A cluster of multiplicity ``k`` has ``k`` independent eigenvectors when the ``k``-th smallest
#: singular value of ``D - mu I`` is below ``CLUSTER_RTOL scale EIGVEC_SV_FACTOR``.
EIGVEC_SV_FACTOR = 10
#: A defective ``D`` off the paired route starts from ``D + PERTURB_RTOL scale (Q G Q)`` (``G``
#: Gaussian), trying ``PERTURB_SEEDS`` seeds; the size is the Jordan rank threshold.
PERTURB_RTOL = 1e-7
PERTURB_SEEDS = 8
#: Newton on ``Psi(theta) = D`` (``_polish``): at most ``POLISH_ITERS`` steps, stopping at
#: ``|D - Psi(theta)|_max <= POLISH_RTOL scale``.
POLISH_ITERS = 8
POLISH_RTOL = 1e-14
#: A diagonalizable construction is polished when ``d <= POLISH_MAX_DIM`` (the Jacobian is
#: ``d^2 x d^2``) and its residual exceeds ``POLISH_CHECK_RTOL scale max(1, |theta|_max)``
#: (eigenvalues merged into one cluster are only approximately equal).
POLISH_MAX_DIM = 20
POLISH_CHECK_RTOL = 1e-12
#: Final check of ``represent``: ``|Psi(theta) - D|_max <= RESIDUAL_RTOL scale max(1, |theta|_max)``
#: or ``secondorder.NumericalError``.
RESIDUAL_RTOL = 1e-9
#: ``scale="auto"``: ``c = AUTO_SCALE_MARGIN m_eps / mu_min``, strictly inside the increasing
#: branch.
AUTO_SCALE_MARGIN = 0.99
#: Floor of the norm ``h`` of a cluster's nilpotent part (a division by it must stay finite).
TINY = 1e-300
