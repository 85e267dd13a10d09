"""docs/theory.md §5: Momentum ResNets can converge to a fixed point, RevNets cannot.

Three groups of claims:

1. Volume. One momentum layer ``(x, v) -> (x', v')`` has Jacobian determinant ``gamma^d`` for any
   (nonlinear) residual function; an additive-coupling (RevNet) layer has determinant exactly 1.
   Checked with ``torch.autograd.functional.jacobian`` in float64. The determinant does not see
   the ``(1 - gamma)`` factor in front of ``f`` (the Jacobian ``[[I + c J, gamma I], [c J, gamma
   I]]`` has determinant ``gamma^d`` for every ``c``), so the block ``d v' / d x = (1 - gamma)
   df/dx`` is checked as well, against ``f``'s own Jacobian.
2. Heavy ball. With ``f = -alpha grad L`` a momentum layer is Polyak's heavy ball (momentum
   ``gamma``, step ``(1 - gamma) alpha``). On a quadratic ``L = 1/2 x^T H x`` iterating one
   weight-tied layer converges iff every eigenvalue ``j`` of ``J = -alpha H`` lies in
   ``(-2 (1 + gamma) / (1 - gamma), 0)``, at the rate given by the spectral radius of
   ``M = [[1 + c, gamma], [c, gamma]]``, ``c = (1 - gamma) j``, which is ``sqrt(gamma)`` for
   underdamped modes. Checked by fitting the slope of ``log ||x_k||``.
3. Learning to optimize. A ResNet, a Momentum ResNet and a RevNet over the same learned
   preconditioned-gradient residual function (weight tied, so the network can be iterated past
   the depth it was trained at) are trained to output the minimiser of random least-squares and
   logistic-regression problems. See :func:`learning_to_optimize`.

``python -m theory fixed_points [--quick]`` runs the claims; ``python -m theory.fixed_points
[--quick]`` also prints the table of losses as markdown (the README's table).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time

import numpy as np
import torch
from torch import nn

import secondorder as so
from secondorder import data as _data
from theory._claim import Checks, Claim, above, below, fmt, lazy

SECTION = "fixed points"
F64 = torch.float64
# name -> (generator, gradient, rows m per dimension d, initial step of the preconditioner).
# Least squares with m = 4 d: Hessian spectrum ~ [0.25, 2.25] (Marchenko-Pastur), condition ~ 9;
# logistic with m = 2 d and l2 = 0.1: spectrum within [0.1, ~0.8].
PROBLEMS = {
    "least_squares": (_data.least_squares_problems, _data.least_squares_gradient, 4, 0.5),
    "logistic": (_data.logistic_problems, _data.logistic_gradient, 2, 2.0),
}
MODELS = ("resnet", "momentum", "revnet")


# ------------------------------------------------------------------ 1. volume
class _MLP(nn.Module):
    """A nonlinear residual function ``f(x) = W2 tanh(W1 x + c1) + c2`` (float64)."""

    def __init__(self, d_in, d_out, width=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, d_out)).to(F64)

    def forward(self, x):
        return self.net(x)


def momentum_layer_map(f, gamma, depth=1):
    """The map ``(x, v) -> (x_N, v_N)`` of a weight-tied Momentum ResNet on unbatched ``(2 d,)``."""
    net = so.MomentumResNet([f] * depth, gamma=gamma)

    def layer(z):
        d = z.shape[0] // 2
        x, v = net(z[:d].unsqueeze(0), v0=z[d:].unsqueeze(0), return_velocity=True)
        return torch.cat([x[0], v[0]])

    return layer


def revnet_layer_map(F, G, depth=1):
    """The map ``(x1, x2) -> (y1, y2)`` of a weight-tied RevNet on unbatched ``(2 d,)``."""
    net = so.RevNet([F] * depth, [G] * depth)
    return lambda z: net(z.unsqueeze(0))[0]


def jacobian_det(fn, z):
    """``det(d fn / d z)`` by autograd."""
    J = torch.autograd.functional.jacobian(fn, z)
    return torch.linalg.det(J).item()


def _volume_claims(ck, seed):
    torch.manual_seed(seed)
    d, gamma = 6, 0.9
    f = _MLP(d, d)
    zs = [torch.randn(2 * d, dtype=F64) for _ in range(2)]
    for depth, z in zip((1, 3), zs, strict=True):
        # float64: LU of a 12x12 Jacobian, a few ulps times its condition number
        ck.close(f"momentum: det of {depth} layer(s) = gamma^(d*{depth}), d={d}",
                 lambda depth=depth, z=z: (jacobian_det(momentum_layer_map(f, gamma, depth), z),
                                           gamma ** (d * depth)), rtol=1e-12)

    def block():
        z = zs[0]
        J = torch.autograd.functional.jacobian(momentum_layer_map(f, gamma, 1), z)
        Jf = torch.autograd.functional.jacobian(f, z[:d])
        want = (1 - gamma) * Jf
        return float((J[d:, :d] - want).abs().max() / want.abs().max())

    # the same float64 products in both: a few ulps
    ck.below("momentum: Jacobian block dv'/dx = (1 - gamma) df/dx (rel. max error)", block, 1e-12)
    F, G = _MLP(d, d), _MLP(d, d)
    zr = [torch.randn(2 * d, dtype=F64) for _ in range(2)]
    for depth, z in zip((1, 3), zr, strict=True):
        ck.close(f"revnet: det of {depth} coupling layer(s) = 1 (volume preserved)",
                 lambda depth=depth, z=z: (jacobian_det(revnet_layer_map(F, G, depth), z), 1.0), atol=1e-12)


# ------------------------------------------------------------------ 2. heavy ball
class QuadraticStep(nn.Module):
    """``f(x) = -alpha grad L(x) = x @ J.T`` with ``J = -alpha H`` for ``L = 1/2 x^T H x``."""

    def __init__(self, J):
        super().__init__()
        self.register_buffer("J", J)

    def forward(self, x):
        return x @ self.J.T


def iteration_matrix(j, gamma):
    """The 2x2 map of one momentum layer on one eigen-mode ``j`` of ``J``, state ``(x, v)``:
    ``M = [[1 + c, gamma], [c, gamma]]``, ``c = (1 - gamma) j``."""
    c = (1 - gamma) * j
    return np.array([[1 + c, gamma], [c, gamma]])


def spectral_radius(j, gamma):
    """Closed-form rate of the heavy ball on mode ``j``: the largest ``|root|`` of
    ``lambda^2 - (1 + gamma + c) lambda + gamma``, ``c = (1 - gamma) j``."""
    c = (1 - gamma) * j
    return float(np.abs(np.roots([1.0, -(1 + gamma + c), gamma])).max())


def window(gamma):
    """Real eigenvalues ``j`` of ``J`` for which the heavy ball converges: ``(lower, 0)``."""
    return -2 * (1 + gamma) / (1 - gamma), 0.0


def underdamped(gamma):
    """Interval of ``j`` with complex roots (rate exactly ``sqrt(gamma)``)."""
    s = math.sqrt(gamma)
    return -((1 + s) ** 2) / (1 - gamma), -((1 - s) ** 2) / (1 - gamma)


def iterate_quadratic(eigs, gamma, iters, seed=0):
    """Phase-space distances ``||(x_k - x*, v_k)||`` to the fixed point ``(x*, 0) = (0, 0)``,
    ``k = 0..iters``, of a weight-tied Momentum ResNet with ``f(x) = J x`` for
    ``J = Q diag(eigs) Q^T`` (a random rotation ``Q``), from a random ``x_0``, ``v_0 = 0``.
    (The state norm, unlike ``||x_k||``, never dips to 0 on an oscillating mode, so
    ``log`` of it stays within ``log cond`` of a straight line.)"""
    g = torch.Generator().manual_seed(seed)
    d = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    J = Q @ torch.diag(torch.as_tensor(eigs, dtype=F64)) @ Q.T
    net = so.MomentumResNet([QuadraticStep(J)] * iters, gamma=gamma)
    x0 = torch.randn(1, d, generator=g, dtype=F64)
    with torch.no_grad():
        xs, vs = net.trajectory(x0, return_velocity=True)
    return torch.cat([xs[:, 0], vs[:, 0]], dim=-1).norm(dim=-1).numpy()


def fitted_rate(dist, start=None):
    """``exp(slope)`` of the least-squares line through ``log dist[k]`` over ``k >= start``
    (default: the second half, the asymptotic regime)."""
    k = np.arange(len(dist))
    start = len(dist) // 2 if start is None else start
    slope = np.polyfit(k[start:], np.log(dist[start:]), 1)[0]
    return float(np.exp(slope))


def heavy_ball_iterates(grad, x0, gamma, alpha, iters):
    """Polyak's heavy ball ``x_{k+1} = x_k - (1 - gamma) alpha grad(x_k) + gamma (x_k - x_{k-1})``,
    ``x_{-1} = x_0``: the iterates ``(iters + 1, *x0.shape)``."""
    xs = [x0, x0 - (1 - gamma) * alpha * grad(x0)]
    for _ in range(iters - 1):
        x, xp = xs[-1], xs[-2]
        xs.append(x - (1 - gamma) * alpha * grad(x) + gamma * (x - xp))
    return torch.stack(xs)


class _GradStep(nn.Module):
    def __init__(self, grad, alpha):
        super().__init__()
        self.grad, self.alpha = grad, alpha

    def forward(self, x):
        return -self.alpha * self.grad(x)


def _heavy_ball_claims(ck, quick, seed):
    # the identity on a non-quadratic loss (logistic regression), float64
    def runs():
        A, b, x_star = _data.logistic_problems(4, 6, seed=seed)
        grad = lambda x: _data.logistic_gradient(x, A, b)  # noqa: E731
        gamma, alpha, iters = 0.8, 2.0, 300
        x0 = torch.zeros_like(x_star)
        hb = heavy_ball_iterates(grad, x0, gamma, alpha, iters)
        with torch.no_grad():
            xs = so.MomentumResNet([_GradStep(grad, alpha)] * iters, gamma=gamma).trajectory(x0)
        return xs, hb, x_star

    r = lazy(runs)
    # float64: the two recursions round differently, ~ulp x iters x |x|
    ck.below("momentum layer with f = -alpha grad L == heavy ball (logistic, 300 its)",
             lambda: (r()[0] - r()[1]).abs().max().item(), 1e-12)
    ck.below("  ... and it converges to the minimiser (max ||x_300 - x*||)",
             lambda: (r()[0][-1] - r()[2]).norm(dim=-1).max().item(), 1e-6)

    # stability window on 1-d modes, just inside / just outside each end
    iters = 600 if quick else 2000
    for gamma in (0.5, 0.9):
        lo, hi = window(gamma)
        for j, inside in [(0.99 * lo, True), (1.01 * lo, False), (-0.02, True), (0.02, False)]:
            dist = lazy(lambda j=j, gamma=gamma: iterate_quadratic([j], gamma, iters, seed=seed))
            where = "inside" if inside else "outside"

            def conv(dist=dist, j=j, gamma=gamma, inside=inside):
                dd = dist()
                ok = (dd[-1] < dd[0]) == inside and (spectral_radius(j, gamma) < 1) == inside
                return f"|x_K|/|x_0| = {fmt(dd[-1] / dd[0])}", ok

            ck.check(f"gamma={gamma}: j={j:.4g} ({where} window ({lo:.4g}, 0)) "
                     f"{'converges' if inside else 'diverges'}", conv, "< 1" if inside else "> 1")
            # slope fitted over >= 300 iterations: log||(x_k, v_k)|| stays within log cond(eigvecs
            # of M) of the line, a bias ~ cond * period / iters^2, measured <= 4e-5 relative
            ck.close(f"  gamma={gamma}, j={j:.4g}: fitted rate = spectral radius of M (closed form)",
                     lambda dist=dist, j=j, gamma=gamma: (fitted_rate(dist()), spectral_radius(j, gamma)),
                     rtol=2e-4)
    # underdamped: several modes at once, all with rate sqrt(gamma)
    for gamma in (0.64, 0.9):
        a, bnd = underdamped(gamma)
        eigs = np.linspace(a, bnd, 7)[1:-1]
        ck.close(f"gamma={gamma}: underdamped modes j in ({a:.3g}, {bnd:.3g}): fitted rate = sqrt(gamma)",
                 lambda eigs=eigs, gamma=gamma: (fitted_rate(iterate_quadratic(
                     eigs, gamma, 400 if gamma < 0.8 else 1200, seed=seed), start=20), math.sqrt(gamma)),
                 rtol=1e-4)  # as above, measured 1e-5


# ------------------------------------------------------------------ 3. learning to optimize
class PreconditionedGradient(nn.Module):
    """``f(x, A, b) = -grad L(x; A, b) @ P.T``: a learned ``d x d`` preconditioner ``P`` (init
    ``step * I``) applied to the problem's gradient. ``d^2`` parameters."""

    def __init__(self, grad, d, step):
        super().__init__()
        self.grad = grad
        self.P = nn.Parameter(step * torch.eye(d, dtype=F64))

    def forward(self, x, A, b):
        return -self.grad(x, A, b) @ self.P.T


class Scaled(nn.Module):
    """``s * g(x, ...)`` with a learned scalar ``s`` (init 1); ``g = None`` is the identity."""

    def __init__(self, g=None):
        super().__init__()
        self.g = g
        self.s = nn.Parameter(torch.ones((), dtype=F64))

    def forward(self, x, *args):
        return self.s * (x if self.g is None else self.g(x, *args))


class Solver(nn.Module):
    """A weight-tied network that maps a problem ``(A, b)`` to a candidate minimiser.

    All three kinds run ``depth`` layers of the same residual function built from one
    :class:`PreconditionedGradient` ``-P grad L`` (``d^2`` parameters) plus one scalar, so each has
    ``d^2 + 1`` parameters (the budgets are matched exactly):

    - ``"resnet"``: ``x <- x + f(x)``, ``f = -s P grad L``; ``s`` is a step size (redundant with
      ``P``, kept only to match the budget): preconditioned gradient descent.
    - ``"momentum"``: ``v <- gamma v + (1 - gamma) f(x)``, ``x <- x + v`` with ``f = -P grad L``
      and a learned ``gamma`` (projected onto ``[0, 0.999]`` after each optimiser step):
      the heavy ball. ``x_0 = 0, v_0 = 0``.
    - ``"revnet"``: state ``(z, x)`` of size ``2 d`` split along ``dim=1``; the coupling
      ``z <- z + F(x)``, ``x <- x + G(z)`` with ``F = -P grad L`` and ``G(z) = s z``: the heavy
      ball without friction (``gamma = 1``); ``z_0 = 0, x_0 = 0``; the output is the ``x`` half.
      Any linear ``G(z) = S z`` reduces to this one by rescaling ``z``.

    ``forward(A, b, depth=None)`` returns ``x_depth`` of shape ``(n, d)``; ``trajectory(A, b,
    depth)`` returns ``(depth + 1, n, d)``.
    """

    def __init__(self, kind, grad, d, depth, step=0.5, gamma=0.5):
        super().__init__()
        self.kind, self.d, self.depth = kind, d, depth
        self.f = PreconditionedGradient(grad, d, step)
        if kind == "resnet":
            self.g = Scaled(self.f)
        elif kind == "momentum":
            self.gamma = nn.Parameter(torch.tensor(gamma, dtype=F64))
        elif kind == "revnet":
            self.g = Scaled()
        else:
            raise ValueError(f"kind == {kind!r}, must be one of {MODELS}.")

    def _net(self, depth):
        if self.kind == "resnet":
            return so.ResNet([self.g] * depth)
        if self.kind == "momentum":
            return so.MomentumResNet([self.f] * depth, gamma=self.gamma)
        return so.RevNet([self.f] * depth, [self.g] * depth, dim=1)

    def _start(self, A):
        size = self.d * (2 if self.kind == "revnet" else 1)
        return torch.zeros(A.shape[0], size, dtype=A.dtype)

    def forward(self, A, b, depth=None):
        out = self._net(depth or self.depth)(self._start(A), A, b)
        return out[:, self.d:] if self.kind == "revnet" else out

    def trajectory(self, A, b, depth):
        xs = self._net(depth).trajectory(self._start(A), A, b)
        return xs[..., self.d:] if self.kind == "revnet" else xs

    def project(self):
        if self.kind == "momentum":
            with torch.no_grad():
                self.gamma.clamp_(0.0, 0.999)


def relative_error(x, x_star):
    """``sqrt(mean_i ||x_i - x*_i||^2 / mean_i ||x*_i||^2)`` over a batch of instances."""
    return ((x - x_star).pow(2).sum(-1).mean() / x_star.pow(2).sum(-1).mean()).sqrt()


def problems(problem, n, d, seed):
    """``n`` instances ``(A, b, x_star)`` of the family ``problem`` (see :data:`PROBLEMS`)."""
    make, _, rows, _ = PROBLEMS[problem]
    return make(n, d, seed=seed, m=rows * d)


def train_solver(kind, problem, d, depth, steps, batch, lr=1e-2, seed=0):
    """Train a :class:`Solver` by Adam on ``relative_error(x_depth, x*)^2``, a fresh batch of
    ``batch`` random instances at every step (seeds ``seed * 10**6 + step``: never the test
    instances), gradient norm clipped at 1."""
    torch.manual_seed(seed)
    _, grad, _, step0 = PROBLEMS[problem]
    model = Solver(kind, grad, d, depth, step=step0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    from tqdm.auto import tqdm

    for it in tqdm(range(steps), desc=f"{kind} N={depth} {problem}", leave=False, mininterval=1.0):
        A, b, x_star = problems(problem, batch, d, seed * 10**6 + it)
        opt.zero_grad()
        loss = relative_error(model(A, b), x_star).pow(2)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{kind} at depth {depth} on {problem}: loss is not finite")
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.project()
    return model


def l2o_config(quick=True, seed=0):
    """The settings of :func:`learning_to_optimize`."""
    return {
        "d": 6 if quick else 10,
        "batch": 64 if quick else 128,
        "n_test": 256 if quick else 1024,
        "depths": [4, 16] if quick else [2, 4, 8, 16, 32, 64],
        "steps": 300 if quick else 1000,
        "extend": [4, 10],  # iterate k times past the trained depth
        "curve_depth": 16,
        "lr": 3e-2,
        "seed": seed,
    }


@functools.lru_cache(maxsize=2)  # theory and figure share one run per process; treat as read-only
def learning_to_optimize(quick=True, seed=0):
    """Train the three :class:`Solver` kinds on both problem families at several depths.

    Returns a dict: ``config``; ``table[problem][kind][depth] = {"test", "test_x<k>",
    "min_past"}`` (:func:`relative_error` on ``n_test`` held-out instances at the trained depth,
    at ``k`` times it, and the smallest over iterations ``depth .. K depth``,
    ``K = max(config["extend"])``); ``curves[problem][kind]`` = that error at every iteration
    ``0 .. K curve_depth`` for the models trained at ``config["curve_depth"]``;
    ``gamma[problem][depth]`` the learned momentum; ``momentum_radius[problem]`` and
    ``revnet_radius[problem]``: the spectral radius of the trained layer at the solution
    (:func:`_fixed_point_radius`); ``seconds``. Cached per ``(quick, seed)``: do not mutate.
    """
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = l2o_config(quick, seed)
    d = cfg["d"]
    out = {"config": cfg, "table": {}, "curves": {}, "gamma": {}}
    for problem in PROBLEMS:
        A, b, x_star = problems(problem, cfg["n_test"], d, 10**9 + seed)  # held out
        out["table"][problem] = {k: {} for k in MODELS}
        out["curves"][problem] = {}
        out["gamma"][problem] = {}
        for depth in cfg["depths"]:
            for kind in MODELS:
                model = train_solver(kind, problem, d, depth, cfg["steps"], cfg["batch"], cfg["lr"], seed)
                kmax = max(cfg["extend"])
                with torch.no_grad():
                    xs = model.trajectory(A, b, kmax * depth)
                    errs = [relative_error(x, x_star).item() for x in xs]
                    row = {"test": errs[depth]}
                for k in cfg["extend"]:
                    row[f"test_x{k}"] = errs[k * depth]
                row["min_past"] = min(errs[depth:])
                out["table"][problem][kind][depth] = row
                if kind == "momentum":
                    out["gamma"][problem][depth] = model.gamma.item()
                if depth == cfg["curve_depth"]:
                    out["curves"][problem][kind] = errs
                    if kind == "revnet":  # spectral radius of the trained layer at its fixed point
                        out.setdefault("revnet_radius", {})[problem] = _fixed_point_radius(model, A, b, x_star)
                    if kind == "momentum":
                        out.setdefault("momentum_radius", {})[problem] = _fixed_point_radius(model, A, b, x_star)
    out["seconds"] = time.perf_counter() - t0
    return out


def _fixed_point_radius(model, A, b, x_star, n=8):
    """Max over ``n`` test instances of the spectral radius of the trained layer's Jacobian (by
    autograd) at its fixed point: ``(x*, v = 0)``, or ``(z = 0, x*)`` for the RevNet."""
    d, net, radii = model.d, model._net(1), []
    for i in range(n):
        Ai, bi, xi = A[i:i + 1], b[i:i + 1], x_star[i]
        zero = torch.zeros(d, dtype=F64)
        if model.kind == "revnet":
            def fn(z, Ai=Ai, bi=bi):
                return net(z.unsqueeze(0), Ai, bi)[0]

            z = torch.cat([zero, xi])
        else:
            def fn(z, Ai=Ai, bi=bi):
                x, v = net(z[:d].unsqueeze(0), Ai, bi, v0=z[d:].unsqueeze(0), return_velocity=True)
                return torch.cat([x[0], v[0]])

            z = torch.cat([xi, zero])
        J = torch.autograd.functional.jacobian(fn, z)
        radii.append(torch.linalg.eigvals(J).abs().max().item())
    return max(radii)


def _l2o_specs(cfg):
    """``[(name, fn(res) -> Claim)]``: the learning-to-optimize claims for the settings ``cfg``."""
    deep, first = max(cfg["depths"]), min(cfg["depths"])
    kmax = max(cfg["extend"])
    specs = []
    for problem in PROBLEMS:
        def tab(res, kind, problem=problem):
            return res["table"][problem][kind]

        p = f"L2O {problem}:"
        specs += [
            (f"{p} momentum test error at trained depth {deep}",
             lambda res, n, tab=tab: below(n, tab(res, "momentum")[deep]["test"], 0.05)),
            (f"{p} momentum error decreases with depth ({first} -> {deep})",
             lambda res, n, tab=tab: below(n, tab(res, "momentum")[deep]["test"] / tab(res, "momentum")[first]["test"], 0.5)),
            (f"{p} momentum keeps converging past depth {deep} (error at {kmax}x / at 1x)",
             lambda res, n, tab=tab: below(n, tab(res, "momentum")[deep][f"test_x{kmax}"] / tab(res, "momentum")[deep]["test"], 0.1)),
            (f"{p} RevNet error at depth {deep} / momentum's",
             lambda res, n, tab=tab: above(n, tab(res, "revnet")[deep]["test"] / tab(res, "momentum")[deep]["test"], 3.0)),
            (f"{p} RevNet cannot converge: best error over iterations {deep}..{kmax * deep}",
             lambda res, n, tab=tab: above(n, tab(res, "revnet")[deep]["min_past"], 0.02)),
            # the momentum net contains the ResNet (gamma = 0): training should find something better
            (f"{p} momentum / ResNet test error at depth {deep}",
             lambda res, n, tab=tab: below(n, tab(res, "momentum")[deep]["test"] / tab(res, "resnet")[deep]["test"], 1.0)),
            # det = 1 forces the product of the 2d eigenvalues to 1: the largest has modulus >= 1
            # (eigvals of a 2d x 2d float64 Jacobian: 1e-9)
            (f"{p} trained RevNet layer, spectral radius at the fixed point (not attracting)",
             lambda res, n, problem=problem: Claim(n, f"{res['revnet_radius'][problem]:.12f}", ">= 1 - 1e-9",
                                                   res["revnet_radius"][problem] >= 1 - 1e-9, SECTION)),
            (f"{p} trained momentum layer, spectral radius at the fixed point (attracting)",
             lambda res, n, problem=problem: below(n, res["momentum_radius"][problem], 1.0)),
        ]
    return specs


def _l2o_claims(res):
    """The learning-to-optimize claims on a finished run ``res``."""
    return [fn(res, name) for name, fn in _l2o_specs(res["config"])]


def _l2o_checks(ck, quick, seed):
    """The learning-to-optimize claims, on the cached run (trained only if one is selected)."""
    res = lazy(lambda: learning_to_optimize(quick, seed))
    for name, fn in _l2o_specs(l2o_config(quick, seed)):
        ck._add(name, lambda fn=fn, name=name: fn(res(), name))


def run(quick: bool, seed: int, only=None) -> list[Claim]:
    """All claims of this script (``only``: substrings of the claim names to run)."""
    torch.set_num_threads(1)
    ck = Checks(SECTION, only)
    _volume_claims(ck, seed)
    _heavy_ball_claims(ck, quick, seed)
    _l2o_checks(ck, quick, seed)
    return ck.claims


def markdown_table(res):
    """The losses as a markdown table, one row per problem and trained depth ``N``: relative test
    error ``||x - x*|| / ||x*||`` (RMS) of each model at ``N`` and at ``K N`` (iterated past ``N``,
    ``K = max(config["extend"])``), and the learned momentum."""
    cfg = res["config"]
    k = max(cfg["extend"])
    lines = [f"| problem | N | ResNet at N | ResNet at {k}N | Momentum at N | Momentum at {k}N "
             f"| learned gamma | RevNet at N | RevNet at {k}N |", "|---" * 9 + "|"]
    for problem, table in res["table"].items():
        for depth in cfg["depths"]:
            cells = []
            for kind in MODELS:
                r = table[kind][depth]
                cells += [f"{r['test']:.1e}", f"{r[f'test_x{k}']:.1e}"]
                if kind == "momentum":
                    cells.append(f"{res['gamma'][problem][depth]:.2f}")
            lines.append(f"| {problem.replace('_', ' ')} | {depth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m theory.fixed_points", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    res = learning_to_optimize(args.quick, args.seed)
    print(markdown_table(res))
    print(f"\n({res['seconds']:.1f}s, config {res['config']})\n")
    claims = _l2o_claims(res)
    for c in claims:
        print(f"  {'PASS' if c.passed else 'FAIL'}  {c.name}  measured {c.measured}  expected {c.expected}")
    if args.out:
        from scripts.shared import write_json

        write_json(args.out, res)
    return 0 if all(c.passed for c in claims) else 1


if __name__ == "__main__":
    sys.exit(main())
