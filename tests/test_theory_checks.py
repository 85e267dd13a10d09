"""The claim collector (isolation, measurements, selection), the nesting of the representable
sets at the matrix level, and the learned-initial-velocity script, quick mode."""

import numpy as np
import pytest

from secondorder.linear import Psi, is_representable, m_eps, represent
from theory import SCRIPTS, nesting
from theory._claim import Checks, lazy


def test_exception_fails_only_its_claim():
    ck = Checks("x")
    shared = lazy(lambda: 1 / 0)
    ck.below("ok", lambda: 0.5, 1.0)
    ck.below("uses shared", lambda: shared(), 1.0)
    ck.above("also shared", lambda: shared(), 0.0)
    ck.measure("a number", lambda: 3.0)
    ck.measure("a broken number", lambda: shared())
    by = {c.name: c for c in ck.claims}
    assert by["ok"].passed and by["ok"].counted
    for name in ("uses shared", "also shared", "a broken number"):
        assert not by[name].passed and by[name].counted and "ZeroDivisionError" in by[name].measured
    assert by["a number"].passed and not by["a number"].counted


def test_only_selects_and_skips_the_work():
    calls = []
    ck = Checks("x", only=["keep"])
    ck.below("keep me", lambda: calls.append(1) or 0.0, 1.0)
    ck.below("drop me", lambda: calls.append(2) or 0.0, 1.0)
    assert [c.name for c in ck.claims] == ["keep me"] and calls == [1]
    with pytest.raises(TypeError):
        Checks("x", only="keep")


def test_runner_counts_claims_not_measurements(tmp_path, capsys):
    import json

    import theory.__main__ as runner

    assert runner.run(["initial_velocity"], True, 0, str(tmp_path / "r.json"), only=["reach"]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["claims"] == 2 and rep["measurements"] == 1 and rep["failed"] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_random_matrices_nest(seed):
    mats = nesting.random_matrices(15, 3, seed)
    table = nesting.nesting_table(mats)
    assert nesting.violations(table) == []
    # the ladder starts at the Neural ODE and ends where every matrix of the sample is reachable
    assert table[:, -1].all() and not table[:, 0].all()


@pytest.mark.parametrize("eps", [0.1, 1.0, 3.0])
def test_boundary_cases_nest(eps):
    larger = [e for e in nesting.EPS_LADDER if e > eps] + [eps * 1.01]
    for name, (D, inside) in nesting.boundary_matrices(eps).items():
        assert is_representable(D, eps) == inside, name
        # nesting: in at eps => in at every larger eps (also just above); the cases outside at eps
        # are within 1e-3 of m_eps, so inside by the next rung of the ladder (m_eps drops by > 0.05)
        for e in (larger if inside else [x for x in larger if x >= 2 * eps]):
            assert is_representable(D, e), (name, e)
    # the Jordan block at m_eps: reachable just above eps, with a residual at rounding level
    m = m_eps(eps)[0]
    J = np.array([[m, 1.0], [0.0, m]])
    e = 1.5 * eps
    theta = represent(J, e)
    assert np.abs(Psi(theta, e) - J).max() < 1e-8  # represent polishes to ~1e-12


def test_violations_detects_a_shrinking_row():
    assert nesting.violations(np.array([[False, True, False]])) == [(0, 1)]
    assert nesting.violations(np.array([[False, True, True]])) == []


def test_initial_velocity_claims_hold_quick():
    from theory.initial_velocity import run

    claims = run(quick=True, seed=0)
    failed = [(c.name, c.measured, c.expected) for c in claims if c.counted and not c.passed]
    assert not failed
    assert sum(c.counted for c in claims) == 9
    assert SCRIPTS["initial_velocity"] == "initial_velocity"


def test_new_figures_render_quick(tmp_path):
    from figures.__main__ import render

    written = render(["nesting"], quick=True, out=tmp_path, progress=False)
    assert (tmp_path / "nesting.png").stat().st_size > 10_000
    assert written["nesting"]["numbers"]["violations"] == 0
    assert written["nesting"]["numbers"]["m_eps eps=1"] == pytest.approx(-0.613499, abs=1e-6)
