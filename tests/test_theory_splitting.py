"""The splitting theory script (docs/theory.md §8): every claim holds in quick mode."""

from theory import SCRIPTS
from theory.splitting import run


def test_claims_hold_quick():
    claims = run(quick=True, seed=0)
    failed = [(c.name, c.measured, c.expected) for c in claims if not c.passed]
    assert not failed
    assert sum(c.counted for c in claims) >= 16
    assert SCRIPTS["splitting"] == "splitting"


def test_order_claims_fail_on_a_first_order_scheme(monkeypatch):
    # the slope claims can fail: evaluating F at t_n instead of t_{n+1/2} breaks the symmetry
    import sys

    from secondorder import StepFunction

    class Shifted(StepFunction):
        def __init__(self, F, t_n, h, takes_time):
            super().__init__(F, t_n - h / 2, h, takes_time)

    # _discretize_strang looks StepFunction up in its module at call time
    monkeypatch.setattr(sys.modules["secondorder._discretize"], "StepFunction", Shifted)
    claims = run(quick=True, seed=0, only=["strang: order of x_N"])
    assert claims and not any(c.passed for c in claims)
