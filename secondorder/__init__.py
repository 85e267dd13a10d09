"""secondorder: second-order (momentum) continuous-depth models in PyTorch.

A model is a set of residual functions plus an integrator: the same modules run as a ResNet, a
Momentum ResNet, a RevNet, a Neural ODE or a second-order ODE.
"""

from . import compat as compat
from . import linear as linear
from ._splitting import StrangMomentumResNet as StrangMomentumResNet
from ._version import __version__ as __version__
from .convert import to_momentum as to_momentum
from .data import least_squares_problems as least_squares_problems
from .data import logistic_problems as logistic_problems
from .discretize import discretize as discretize
from .discretize import eps_from_gamma as eps_from_gamma
from .discretize import gamma_from_eps as gamma_from_eps
from .discretize import to_ode as to_ode
from .exact import FixedPointOverflowError as FixedPointOverflowError
from .linear import NotRepresentableError as NotRepresentableError
from .nets import BACKWARDS as BACKWARDS
from .nets import MomentumResNet as MomentumResNet
from .nets import ResNet as ResNet
from .nets import RevNet as RevNet
from .ode import NeuralODE as NeuralODE
from .ode import SecondOrderODE as SecondOrderODE
from .reversible import ReconstructionError as ReconstructionError
from .reversible import exact_roundtrip as exact_roundtrip
