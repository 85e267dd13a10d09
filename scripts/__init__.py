"""Non-installed code of the checkout: the setup script, the docs hooks and the helpers the
scripts share (``scripts.shared``)."""
