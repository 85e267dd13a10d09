"""secondorder: second-order (momentum) continuous-depth models in PyTorch.

A model is a set of residual functions plus an integrator: the same modules run as a ResNet, a
Momentum ResNet, a RevNet, a Neural ODE or a second-order ODE.

This file is the single list of public names (``__all__``). The implementation lives in private
modules (``secondorder/_*.py``, see docs/architecture.md); four namespaces are public because
users work with them directly:

- ``secondorder.linear``: which linear maps each model represents (``psi``, ``Psi``, ``represent``);
- ``secondorder.compat``: the drop-in replacement for the ``momentumnet`` package;
- ``secondorder.exact``: the exact fixed-point arithmetic (bit store, rational gamma, format
  ladder, the fused-kernel switch), reusable on its own;
- ``secondorder.data``: the problem families of the learning-to-optimize experiments.
"""

from . import compat, data, exact, linear
from ._convert import to_momentum
from ._discretize import (
    SCHEMES,
    StepFunction,
    discretize,
    eps_from_gamma,
    gamma_from_eps,
    min_depth,
    to_ode,
)
from ._errors import FixedPointOverflowError, NumericalError, ReconstructionError
from ._nets import BACKWARDS, MomentumResNet, ResNet, RevNet, exact_roundtrip
from ._ode import NeuralODE, SecondOrderODE
from ._splitting import StrangMomentumResNet
from ._tied import TiedMomentumResNet
from ._version import __version__
from .linear import NotRepresentableError

__all__ = [
    # discrete models and their memory-free backward
    "ResNet",
    "MomentumResNet",
    "RevNet",
    "StrangMomentumResNet",
    "BACKWARDS",
    "exact_roundtrip",
    # continuous models and the discrete <-> continuous maps
    "NeuralODE",
    "SecondOrderODE",
    "discretize",
    "SCHEMES",
    "to_ode",
    "StepFunction",
    "TiedMomentumResNet",
    "gamma_from_eps",
    "eps_from_gamma",
    "min_depth",
    # converting existing networks
    "to_momentum",
    # errors (TypeError / ValueError for bad arguments; NumericalError for what precision cannot do)
    "NumericalError",
    "ReconstructionError",
    "FixedPointOverflowError",
    "NotRepresentableError",
    # public namespaces
    "linear",
    "compat",
    "exact",
    "data",
    "__version__",
]
