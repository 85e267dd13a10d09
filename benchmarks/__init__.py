"""Benchmarks: each prints a table and writes JSON. ``python -m benchmarks NAME [options]``."""

# name -> module (relative to this package)
BENCHMARKS = {
    "memory": "memory",
    "adjoint": "adjoint",
    "solvers": "solvers",
}
