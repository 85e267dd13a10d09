"""Non-installed code of the checkout: the setup script, the docs hooks, the helpers the
scripts share (``scripts.shared``) and their common test problems (``scripts.problems``)."""
