"""Benchmarks: each prints a table and writes JSON. ``python -m benchmarks NAME [options]``."""

# name -> module (relative to this package)
BENCHMARKS = {
    "memory": "memory",
    "speed": "speed",
    "adjoint": "adjoint",
    "solvers": "solvers",
}
