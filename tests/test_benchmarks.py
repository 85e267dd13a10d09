"""The benchmark scripts run and measure what they claim (small sizes)."""

from benchmarks.memory import measure
from benchmarks.speed import run as speed_run
from benchmarks.speed import table as speed_table


def test_memory_measurement_separates_stored_activations_from_exact():
    # autograd stores ~0.4 MiB per layer here (batch 512 x width 64 floats, a few tensors per
    # layer); exact stores none: at depth 100 the two must differ by far more than RSS noise (~0.5 MiB)
    auto = measure("momentum_autograd", 100, repeats=1, timing=False)
    exact = measure("momentum_exact", 100, repeats=1, timing=False)
    assert "error" not in auto and "error" not in exact
    assert auto["peak_bytes"] > 25 * 2**20
    assert exact["peak_bytes"] < auto["peak_bytes"] / 4


def test_speed_benchmark_runs_and_tabulates():
    result = speed_run(["mlp-64"], depth=3, repeats=1, progress=False)
    row = result["rows"][0]
    assert row["config"] == "mlp-64" and row["elements"] == 512 * 64
    assert all(row[f"{m}_ms"] > 0 for m in ("autograd", "exact", "float"))
    assert "| mlp-64 | 32768 |" in speed_table(result)


def test_phase_benchmark_accounts_for_the_whole_step_and_removes_its_timers():
    import pytest
    import torch

    from benchmarks import speed
    from secondorder import _fused
    from secondorder import _reversible as R

    originals = [(owner, attr, vars(owner)[attr]) for _, owner, attr in speed._phase_points() if attr in vars(owner)]
    assert len(originals) >= 20  # every timed function exists (a renamed one would silently drop out)
    result = speed.phase_times(["mlp-64", "revnet-mlp-64"], depth=3, repeats=1, progress=False)
    for row in result["rows"]:
        for m in ("exact", "float"):
            parts = [row[f"{m}.{ph}_ms"] for ph in speed.PHASES if f"{m}.{ph}_ms" in row]
            assert sum(parts) == pytest.approx(row[f"{m}.total_ms"], rel=1e-9)  # the phases partition the step
            for ph in ("f in the forward", "f recomputed", "vector-Jacobian products", "state arithmetic"):
                assert row[f"{m}.{ph}_ms"] > 0, (row["config"], m, ph)
        assert row["autograd.forward_ms"] + row["autograd.backward_ms"] == pytest.approx(row["autograd.total_ms"])
    assert "| state arithmetic |" in speed.phase_table(result)
    assert all(vars(owner)[attr] is f for owner, attr, f in originals)
    assert torch.autograd.grad.__module__ == "torch.autograd" and R._Layers.vjp.__qualname__ == "_Layers.vjp"
    before = {(owner, attr): f for owner, attr, f in originals}
    with pytest.raises(KeyboardInterrupt), speed._phase_timers({}):  # put back on an error too
        assert vars(R._Layers)["call_forward"] is not before[R._Layers, "call_forward"]
        raise KeyboardInterrupt
    assert vars(R._Layers)["call_forward"] is before[R._Layers, "call_forward"]
    assert vars(_fused)["call"] is before[_fused, "call"]


def test_alf_baseline_is_second_order_and_its_memory_free_gradient_is_autograds():
    # benchmarks/_alf.py (MALI's asynchronous leapfrog): order 2 against DOP853 at eps = 1, and
    # the reverse-walk backward equals plain autograd through the same steps (float64)
    import numpy as np
    import torch

    from benchmarks._alf import _step, alf_solve
    from scripts.problems import TimeMLP
    from theory.splitting import reference

    D = torch.float64
    F = TimeMLP(d=3, width=8, seed=0)
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=D)
    u0 = torch.zeros_like(x0)
    ref = reference(F, 1.0, x0, u0)
    Ns = [16, 32, 64, 128]
    with torch.no_grad():
        errs = [float((alf_solve(F, 1.0, x0, u0, N)[0] - ref[0]).norm() / ref[0].norm()) for N in Ns]
    assert -2.1 <= np.polyfit(np.log(Ns), np.log(errs), 1)[0] <= -1.9

    eps, N = 0.5, 40

    def grads(memory_free):
        F.zero_grad()
        x = x0.clone().requires_grad_(True)
        if memory_free:
            xN, uN = alf_solve(F, eps, x, u0, N)
        else:
            def field(t, y):
                return (y[1], (F(torch.tensor(float(t), dtype=D), y[0]) - y[1]) / eps)

            y, w = (x, u0), field(0.0, (x, u0))
            for n in range(N):
                y, w = _step(field, n / N, 1 / N, 1.0, y, w)
            xN, uN = y
        ((xN**2).sum() + uN.sin().sum()).backward()
        return [x.grad] + [p.grad.clone() for p in F.parameters()]

    a, b = grads(True), grads(False)
    num = sum(((p - q) ** 2).sum() for p, q in zip(a, b)).sqrt()
    assert float(num / sum((q**2).sum() for q in b).sqrt()) < 1e-12
