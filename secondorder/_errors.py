"""The library's own exception: a computation it cannot stand behind numerically.

The rule for every error the library raises (``secondorder._validate`` words them):

- an argument of the wrong type: ``TypeError``;
- an argument of the right type with a value outside what the function accepts: ``ValueError``
  (``secondorder.linear.NotRepresentableError`` is one: the input map has no preimage);
- a well-posed request that cannot be carried out reliably in the available precision or range:
  ``NumericalError`` (a ``RuntimeError``) or one of its subclasses below. The library raises it
  instead of returning a number it cannot vouch for.
"""

from __future__ import annotations

__all__ = ["NumericalError", "ReconstructionError", "FixedPointOverflowError"]


class NumericalError(RuntimeError):
    """A well-posed computation that cannot be carried out reliably at this precision or range.

    Examples: the memory-free backward could not verify its reconstruction
    (``ReconstructionError``); a value left the fixed-point range (``FixedPointOverflowError``); a
    matrix is too close to a defective one for ``secondorder.linear.represent`` to resolve its
    Jordan structure in float64; an iterative solver did not converge.
    """


class ReconstructionError(NumericalError):
    """The memory-free backward could not stand behind its gradients, so it returned none.

    Raised when the backward walk does not arrive back at the forward's first state (the
    recomputation differed from the forward pass), when a recomputed residual function reaches a
    tensor that requires grad but cannot receive a gradient, when a parameter was modified in place
    between the forward and the backward, or when a second derivative is requested.
    """


class FixedPointOverflowError(NumericalError):
    """A value left the fixed-point range, or was NaN/inf, in an exact-arithmetic pass.

    ``finite`` is False for NaN/inf (a coarser format cannot help then).
    """

    def __init__(self, message, finite=True):
        super().__init__(message)
        self.finite = finite
