"""Figure scripts. Each ``figures/<name>.py`` registered in :data:`FIGURES` defines

- ``compute(quick: bool, seed: int) -> dict``: all the numbers the figure shows (pure, seeded);
- ``plot(data) -> matplotlib.figure.Figure``: draws them, no computation;
- ``numbers(data) -> dict``: the key numbers, JSON-serialisable, for ``figures.json``.

``secondorder figures`` / ``python -m figures`` render them atomically as PNG and PDF.
"""

# name -> module (relative to this package). Later scripts add one line here.
FIGURES = {
    "solvers": "solvers",
    "continuous_limit": "continuous_limit",
    "psi_real_line": "psi_real_line",
    "representable_region": "representable_region",
    "fixed_points": "fixed_points",
    "dynamics_1d": "dynamics_1d",
    "nested_rings": "nested_rings",
    "memory_depth": "memory_depth",
    "momentum_influence": "momentum_influence",
    "learning_curves": "learning_curves",
}
