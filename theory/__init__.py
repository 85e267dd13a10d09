"""Executable versions of the claims of docs/theory.md (and docs/theory-checks.md).

Each module ``theory/<name>.py`` registered in :data:`SCRIPTS` defines
``run(quick: bool, seed: int) -> list[Claim]``. ``python -m theory`` runs them.
"""

# name -> module (relative to this package). Later scripts add one line here.
SCRIPTS = {
    "continuous_limit": "continuous_limit",
    "representability": "representability",
    "fixed_points": "fixed_points",
    "expressivity": "expressivity",
    "initial_velocity": "initial_velocity",
    "splitting": "splitting",
}
