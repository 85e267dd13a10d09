"""A Momentum ResNet whose momentum is tied to a learnable ``eps``: ``gamma = gamma_map(eps, h)``.

``secondorder.discretize`` returns it for an ODE with a learnable ``eps`` (scalar or per-feature):
the network holds the ODE's own ``eps`` parameter (not a copy), and ``gamma`` is recomputed from it
at every forward pass, so the gradient reaches ``eps`` through ``d gamma / d eps`` in all three
backward modes (in exact mode the gradient of ``gamma`` is the exact backward's, so that of
``eps`` is exact too). ``to_ode`` maps the network back to an ODE with the same ``eps``.

The map from ``eps`` to ``gamma`` is one small function of ``(eps, h)`` per time-stepping scheme;
``gamma_semi_implicit`` is the one of the current scheme (docs/theory.md §2.2).
"""

from __future__ import annotations

import torch
from torch import nn

from ._nets import MomentumResNet, check_any_gamma

__all__ = ["gamma_semi_implicit", "TiedMomentumResNet"]


def gamma_semi_implicit(eps, h):
    """``gamma = 1 - h / eps``: the semi-implicit Euler step of ``eps x'' + x' = F`` with step
    ``h`` (a float or a tensor ``eps``, differentiable in ``eps``)."""
    return 1 - h / eps


class TiedMomentumResNet(MomentumResNet):
    """``MomentumResNet`` with ``gamma = gamma_map(eps, h)`` recomputed from the parameter ``eps``.

    Args:
        functions: the residual functions (``discretize`` passes its ``StepFunction``s).
        eps: the learnable ``nn.Parameter`` (0-dim, or per-feature: broadcastable against ``x``),
            registered as ``self.eps`` (the same object as the ODE's).
        h: the step ``t1 / depth``.
        gamma_map: ``gamma_map(eps, h) -> gamma``, default ``gamma_semi_implicit``.
        backward, init_velocity, fixed_point_bits: as for ``MomentumResNet``.

    ``net.gamma`` is read-only (assign ``eps`` instead). The forward raises ``ValueError`` when the
    learned ``eps`` left the range where ``gamma`` is a valid momentum (``eps >= h`` for the
    autograd backward, ``eps > h`` for the memory-free ones).
    """

    _tying = True  # MomentumResNet.__init__ assigns gamma once: ignored while set

    def __init__(self, functions, eps, h, gamma_map=gamma_semi_implicit, backward="autograd",
                 init_velocity=None, fixed_point_bits=None):
        if not isinstance(eps, nn.Parameter):
            raise TypeError(f"eps must be an nn.Parameter, got {type(eps).__name__}.")
        # gamma is validated below, from eps; the placeholder only passes MomentumResNet's checks
        super().__init__(functions, gamma=0.5, backward=backward, init_velocity=init_velocity,
                         fixed_point_bits=fixed_point_bits)
        self.eps = eps
        self.h = float(h)
        self.gamma_map = gamma_map
        self._tying = False
        check_any_gamma(self.gamma.detach(), invertible=backward != "autograd")

    @property
    def gamma(self):
        """The current ``gamma_map(eps, h)`` (a tensor in ``eps``'s graph)."""
        return self.gamma_map(self.eps, self.h)

    @gamma.setter
    def gamma(self, value):
        if not self._tying:
            raise AttributeError("gamma is tied to eps (gamma = gamma_map(eps, h)); change eps instead.")

    def _checked_gamma(self, x, invertible):
        e = self.eps.detach()
        low = float(e.min()) if e.dim() > 0 else float(e)
        bad = not bool(torch.isfinite(e).all()) or not low > 0
        if not bad:
            g = self.gamma_map(e, self.h)
            g_low = float(g.min()) if isinstance(g, torch.Tensor) and g.dim() > 0 else float(g)
            bad = not (g_low > 0 if invertible else g_low > -1e-12)  # 1 - h/eps at eps == h rounds
        if bad:
            rng = "in (0, 1]" if invertible else "in [0, 1]"
            if self.gamma_map is gamma_semi_implicit:
                need = (f"gamma = 1 - h/eps must be {rng}, so eps must stay {'>' if invertible else '>='} h. "
                        f"Discretize with a larger depth, or keep eps above h (e.g. clamp it after each "
                        f"optimizer step).")
            else:
                need = (f"gamma = gamma_map(eps, h) must be {rng}: keep eps > 0 and not so small that "
                        f"gamma underflows to 0 (e.g. clamp it after each optimizer step), or use more layers.")
            raise ValueError(f"the learnable eps reached {low!r} (smallest entry), but this network's step is "
                             f"h = {self.h:.6g}: {need}")
        return super()._checked_gamma(x, invertible)

    def extra_repr(self):
        e = self.eps.detach()
        shape = f"per-feature {tuple(e.shape)}" if e.dim() > 0 else f"{float(e):.6g}"
        return f"depth={len(self.functions)}, gamma=tied to learnable eps {shape}, h={self.h:.6g}, backward={self.backward!r}"
