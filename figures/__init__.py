"""Figure scripts. Each ``figures/<name>.py`` registered in ``FIGURES`` defines

- ``compute(quick: bool, seed: int) -> dict``: all the numbers the figure shows (pure, seeded);
- ``plot(data) -> matplotlib.figure.Figure``: draws them, no computation;
- ``numbers(data) -> dict``: the key numbers, JSON-serialisable, for ``figures.json``.

``secondorder figures`` / ``python -m figures`` render them atomically as PNG and PDF, into
``out/figures/`` by default and into ``figures/`` (the committed gallery) with ``--gallery``.
"""

# name -> module (relative to this package). A new figure adds one line here.
FIGURES = {
    "phase_space": "phase_space",
    "solvers": "solvers",
    "continuous_limit": "continuous_limit",
    "psi_real_line": "psi_real_line",
    "representable_region": "representable_region",
    "fixed_points": "fixed_points",
    "dynamics_1d": "dynamics_1d",
    "nested_rings": "nested_rings",
    "memory_depth": "memory_depth",
    "nesting": "nesting",
    "initial_velocity": "initial_velocity",
    "momentum_influence": "momentum_influence",
    "learning_curves": "learning_curves",
    "learnable_damping": "learnable_damping",
}
