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
