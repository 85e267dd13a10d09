"""Mutation testing of the theory claims: each named mutation of the implementation (applied by
monkeypatching, see theory/_mutations.py) must make every claim listed for it fail, and the
unmutated run of those claims must pass. Quick settings, only the listed claims."""

import pytest

from theory import _mutations as M


def _assert_all(results, passed):
    for (script, sub), claims in results.items():
        assert claims, f"no claim of {script} matches {sub!r}"  # a renamed claim must not hide
        for c in claims:
            assert c.passed == passed, (script, c.name, c.measured, c.expected)


def test_unmutated_claims_pass():
    catches = sorted({c for m in M.MUTATIONS for c in m.catches})
    _assert_all(M.run_claims(catches), passed=True)


@pytest.mark.parametrize("name", [m.name for m in M.MUTATIONS])
def test_mutation_is_caught(name, monkeypatch):
    m = M.BY_NAME[name]
    before = M.behaviour_changes(m)
    M.apply(m, monkeypatch.setattr)
    after = M.behaviour_changes(m)
    # the patch really changes what the library computes
    import torch

    same = torch.equal(before, after) if isinstance(before, torch.Tensor) else before == after
    assert not same, f"mutation {name} did not change the library's behaviour"
    _assert_all(M.run_claims(m.catches), passed=False)


def test_every_mutation_lists_claims():
    assert len(M.MUTATIONS) >= 10
    for m in M.MUTATIONS:
        assert m.catches and m.description


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(M.SLOW_CATCHES))
def test_mutation_is_caught_by_trained_claims(name, monkeypatch):
    """The catches that need training (e.g. the 1-D cubic fit of expressivity), under the mutation;
    their unmutated counterparts are tested in tests/test_theory_expressivity.py."""
    M.apply(M.BY_NAME[name], monkeypatch.setattr)
    _assert_all(M.run_claims(M.SLOW_CATCHES[name]), passed=False)
