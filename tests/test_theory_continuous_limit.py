"""The continuous-limit theory script: every claim holds in quick mode; a failure exits non-zero."""

from theory import SCRIPTS
from theory.continuous_limit import run


def test_claims_hold_quick():
    claims = run(quick=True, seed=0)
    failed = [(c.name, c.measured, c.expected) for c in claims if not c.passed]
    assert not failed
    assert len(claims) >= 15
    assert SCRIPTS["continuous_limit"] == "continuous_limit"


def test_runner_exits_nonzero_on_a_failed_claim(tmp_path, monkeypatch):
    import theory.__main__ as runner
    import theory.continuous_limit as mod
    from theory._claim import Claim

    monkeypatch.setattr(mod, "run", lambda quick, seed: [Claim("forced failure", 1, 0, False)])
    assert runner.run(["continuous_limit"], True, 0, str(tmp_path / "r.json")) == 1


def test_figures_render_quick(tmp_path):
    """Both figures render in quick mode; their key numbers are the fitted orders and NFE counts."""
    from figures.__main__ import render

    written = render(["continuous_limit", "solvers"], quick=True, out=tmp_path, progress=False)
    for name in ("continuous_limit", "solvers"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / f"{name}.pdf").exists()
    cl = written["continuous_limit"]["numbers"]
    for eps in ("0.1", "1", "10"):
        # the same band and tolerance as the theory script's slope claims
        assert abs(cl[f"slope_x eps={eps}"] + 1) < 0.05 and abs(cl[f"slope_v eps={eps}"] + 1) < 0.05
    s = written["solvers"]["numbers"]
    # both first order: the Momentum ResNet needs as many F evaluations as Euler, within 2x
    assert 0.5 <= s["err<=1e-03 eps=1 momentum"] / s["err<=1e-03 eps=1 euler"] <= 2
    # fourth order reaches 1e-6 with <= 1/8 of the evaluations the momentum net needs for 1e-3
    assert s["err<=1e-06 eps=1 rk4"] * 8 <= s["err<=1e-03 eps=1 momentum"]


def test_solver_benchmark_reference_matches_closed_form():
    """The scipy DOP853 reference of benchmarks/solvers.py agrees with the linear closed form."""
    import torch

    from benchmarks.solvers import REF_TOL, scipy_solve
    from scripts.problems import D, Linear, linear_exact, linear_matrix, rel

    A = linear_matrix(4, seed=0)
    x0 = torch.randn(8, 4, dtype=D)
    for eps in (0.0, 0.1, 10.0):
        x1, nfev, _ = scipy_solve(Linear(A), eps, x0, takes_time=False, **REF_TOL)
        # DOP853 at rtol 1e-13 over t1 = 1: a few 1e-15 measured; 1e-12 leaves margin
        assert rel(x1, linear_exact(A, eps, x0, torch.zeros_like(x0))[0]) < 1e-12
        assert nfev > 0
