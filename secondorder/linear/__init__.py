"""Which linear maps a second-order model can represent (docs/theory.md §3).

With a constant linear residual function ``F(x) = theta x`` the second-order ODE
``eps x'' + x' = theta x``, ``x(0) = x0``, ``x'(0) = 0`` maps ``x0`` to
``x(t1) = Psi(theta, eps, t1) x0``, where ``Psi`` is the primary matrix function of the entire
scalar function ``psi``. ``eps = 0`` is the Neural ODE / ResNet limit, ``Psi = expm(t1 theta)``.

Public functions:

- ``psi`` the scalar map, ``Psi`` the matrix map (numpy or torch in, same kind out);
- ``m_eps`` the minimum of ``psi`` on the real line and where it is attained;
- ``represent`` a real ``theta`` with ``Psi(theta) = D`` (or ``c D``, ``scale="auto"``);
- ``is_representable`` the criterion; ``NotRepresentableError`` says why not;
- ``dpsi`` the derivative of ``psi``, ``psi_inverse_real`` its inverse on the increasing branch;
- ``companion`` the matrix ``[[0, I], [theta/eps, -I/eps]]`` of the first-order system.

Time scaling: substituting ``t = t1 tau`` gives ``(eps/t1) y'' + y' = (t1 theta) y`` for
``y(tau) = x(t1 tau)``, so ``psi(lam, eps, t1) = psi(t1 lam, eps/t1, 1)``.

The implementation is split by concern into private modules, each importing only the ones
before it: ``_scalar`` (``psi``, its derivative and inverses, ``m_eps``) <- ``_matrix``
(``Psi``) <- ``_spectral`` (eigenvalue clusters, Jordan structure) <- ``_construct``
(``is_representable``, ``represent``).
"""

from ._construct import NotRepresentableError, is_representable, represent
from ._matrix import Psi, companion
from ._scalar import dpsi, m_eps, psi, psi_inverse_real

__all__ = [
    "psi",
    "Psi",
    "m_eps",
    "represent",
    "is_representable",
    "NotRepresentableError",
    "dpsi",
    "psi_inverse_real",
    "companion",
]
