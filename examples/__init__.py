"""Runnable examples on real data (``python examples/<name>.py --help``).

The folder is a package only so that the examples, the figure scripts and the tests share
:mod:`examples._train` (training loop, evaluation, fresh-process memory measurement).
"""
