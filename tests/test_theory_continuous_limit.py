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
