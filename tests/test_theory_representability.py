"""The representability theory script and its figures (docs/theory.md, representable linear maps), quick mode."""

import pytest

from secondorder.linear import m_eps
from theory import SCRIPTS
from theory.representability import run


def test_claims_hold_quick():
    claims = run(quick=True, seed=0)
    failed = [(c.name, c.measured, c.expected) for c in claims if not c.passed]
    assert not failed
    assert len(claims) >= 25
    names = " ".join(c.name for c in claims)
    assert "so.SecondOrderODE" in names and "Momentum ResNet" in names
    assert SCRIPTS["representability"] == "representability"


def test_figures_render_quick(tmp_path):
    from figures.__main__ import render

    written = render(["psi_real_line", "representable_region"], quick=True, out=tmp_path,
                     progress=False)
    for name in ("psi_real_line", "representable_region"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert written["psi_real_line"]["numbers"]["m_eps eps=1"] == pytest.approx(-0.613499, abs=1e-6)
    nums = written["representable_region"]["numbers"]
    for eps in (0.1, 1.0):
        # sampled simple real eigenvalues never go below m_eps (rounding of Psi: 1e-12)
        assert nums[f"min sampled simple real eigenvalue eps={eps:g}"] >= round(m_eps(eps)[0], 6) - 1e-6
    assert nums["min sampled simple real eigenvalue eps=0"] > 0
