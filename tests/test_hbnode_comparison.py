"""examples/hbnode_comparison.py trains what it claims and records what it reports (tiny config)."""

import json
import math

import pytest

from examples import hbnode_comparison as hb

TINY = dict(hb.QUICK, steps=8, n_train=8, n_test=8, K=4, depth=6, hidden=8, grad_every=3)


def test_tiny_comparison_trains_and_records_gradient_errors():
    result = hb.run(TINY, seed=0, progress=False)
    runs = {(r["model"], r["gradient"]): r for r in result["runs"]}
    assert set(runs) == {("node", "adjoint"), ("node", "discrete-autograd"), ("fixed", "adjoint"),
                         ("fixed", "exact"), ("learned", "adjoint"), ("learned", "exact")}
    for r in runs.values():
        assert len(r["loss"]) == len(r["nfe"]) == len(r["time_s"]) == 8
        assert r["loss"][-1] < 0.9 * r["loss"][0]  # training works
        assert all(b > a for a, b in zip(r["nfe"], r["nfe"][1:]))  # cumulative field evaluations
        assert [e["step"] for e in r["grad_err"]] == [0, 3, 6, 7]
        assert math.isfinite(r["test_loss"])
    for model in ("node", "fixed", "learned"):
        for e in runs[(model, "adjoint")]["grad_err"]:
            # the adjoint's reverse solve differs from the forward's: small but not zero, at rtol 1e-5
            assert 0 < e["vs_direct"] < 1e-3 and math.isfinite(e["vs_discretization"])
    for model in ("fixed", "learned"):
        for e in runs[(model, "exact")]["grad_err"]:
            assert e["vs_autograd"] < 1e-11  # the exact backward: autograd's gradient
        # the exact backward costs one recomputation per layer: NFE = 2 * depth * K per step
        assert runs[(model, "exact")]["nfe"][0] == 2 * TINY["depth"] * TINY["K"]
    assert runs[("node", "discrete-autograd")]["nfe"][0] == TINY["depth"] * TINY["K"]
    for grad in ("adjoint", "exact"):
        eps = runs[("learned", grad)]["eps"]
        assert len(eps) == 4 and max(abs(e - TINY["eps0"]) for e in eps) > 1e-3  # eps moved
    assert runs[("fixed", "exact")]["eps"] == TINY["eps0"]
    assert len(runs[("learned", "exact")]["eps_history"]) == 8
    assert runs[("learned", "exact")]["eps_history"][-1] == runs[("learned", "exact")]["eps"]
    # the figure draws these runs and reports their numbers
    import matplotlib.pyplot as plt

    from figures import FIGURES, learnable_damping

    assert FIGURES["learnable_damping"] == "learnable_damping"
    nums = learnable_damping.numbers(result)
    assert nums["learned/exact"]["eps"] == runs[("learned", "exact")]["eps"] and nums["steps"] == 8
    json.dumps(nums)
    plt.close(learnable_damping.plot(result))


def test_cli_quick_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hb, "QUICK", dict(TINY, steps=2))
    out = tmp_path / "hb.json"
    hb.main(["--quick", "--no-progress", "--seed", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["seed"] == 1 and len(data["runs"]) == 6 and data["true_eps"] == [2.0, 1.0, 0.5, 0.25]
    assert "| learned | exact |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        hb.main(["--help"])
