"""Asynchronous leapfrog (ALF) with a memory-free backward: the MALI integrator, written here.

MALI (Zhuang, Dvornek, Tatikonda, Duncan, *MALI: A memory efficient and reverse accurate
integrator for Neural ODEs*, ICLR 2021) integrates ``dy/dt = f(t, y)`` with the asynchronous
leapfrog step on the augmented state ``(y, w)``, where ``w`` approximates ``f``: with
``w_0 = f(t_0, y_0)`` and a damping ``eta`` in ``(0, 1]`` (``eta = 1``: the plain ALF, order 2),
one step of size ``h`` is::

    s = t + h/2,   k = y + (h/2) w,   m = f(s, k),
    w' = w + 2 eta (m - w),   y' = k + (h/2) w',   t' = s + h/2

and it is inverted algebraically (with float rounding, no stored states)::

    s = t' - h/2,  k = y' - (h/2) w',  m = f(s, k),
    w = (w' - 2 eta m) / (1 - 2 eta),   y = k - (h/2) w

(for ``eta = 1``: ``w = 2 m - w'``). The backward pass walks the steps in reverse: it reconstructs
``(y_n, w_n)`` from ``(y_{n+1}, w_{n+1})`` by the inverse in floating point, reruns that step with
autograd and backpropagates through it, so memory is independent of the number of steps; each
step costs one evaluation of ``f`` forward and two backward (inverse + rerun). This is an
independent implementation from the published equations, used by ``benchmarks/solvers.py`` as
the reversible first-order-system baseline.

Here ``y = (x, u)`` is the second-order model ``eps x'' + x' = F(t, x)`` as ``x' = u``,
``u' = (F(t, x) - u) / eps`` (``eps > 0``).
"""

from __future__ import annotations

import torch


def _step(field, t, h, eta, y, w):
    s = t + h / 2
    k = tuple(yi + (h / 2) * wi for yi, wi in zip(y, w, strict=True))
    m = field(s, k)
    w1 = tuple(wi + 2 * eta * (mi - wi) for wi, mi in zip(w, m, strict=True))
    y1 = tuple(ki + (h / 2) * wi for ki, wi in zip(k, w1, strict=True))
    return y1, w1


def _inverse(field, t1, h, eta, y1, w1):
    s = t1 - h / 2
    k = tuple(yi - (h / 2) * wi for yi, wi in zip(y1, w1, strict=True))
    m = field(s, k)
    if eta == 1.0:
        w = tuple(2 * mi - wi for mi, wi in zip(m, w1, strict=True))
    else:
        w = tuple((wi - 2 * eta * mi) / (1 - 2 * eta) for wi, mi in zip(w1, m, strict=True))
    y = tuple(ki - (h / 2) * wi for ki, wi in zip(k, w, strict=True))
    return y, w


class _ALFFunction(torch.autograd.Function):
    """Inputs: ``field, n_steps, t1, eta, n_state``, then the state ``(y_0, w_0)`` (``2 n_state``
    tensors), then the parameters of ``field``. Outputs ``(y_N, w_N)``; stores only them."""

    @staticmethod
    def forward(ctx, field, n_steps, t1, eta, n_state, *tensors):
        y, w = tensors[:n_state], tensors[n_state:2 * n_state]
        h = t1 / n_steps
        with torch.no_grad():
            for n in range(n_steps):
                y, w = _step(field, n * h, h, eta, y, w)
        ctx.field, ctx.n_steps, ctx.t1, ctx.eta, ctx.n_state = field, n_steps, t1, eta, n_state
        ctx.params = tensors[2 * n_state:]
        out = tuple(t.detach() for t in y + w)
        ctx.save_for_backward(*out)
        return out

    @staticmethod
    def backward(ctx, *grads):
        field, N, eta, n, params = ctx.field, ctx.n_steps, ctx.eta, ctx.n_state, ctx.params
        h = ctx.t1 / N
        saved = ctx.saved_tensors
        y, w = saved[:n], saved[n:]
        gs = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, saved, strict=True)]
        gp = [torch.zeros_like(p) for p in params]
        for k in reversed(range(N)):
            with torch.no_grad():  # reconstruct (y_k, w_k) by the float inverse
                y, w = _inverse(field, (k + 1) * h, h, eta, y, w)
            with torch.enable_grad():  # rerun step k and backpropagate through it
                yk = tuple(t.detach().requires_grad_(True) for t in y)
                wk = tuple(t.detach().requires_grad_(True) for t in w)
                y1, w1 = _step(field, k * h, h, eta, yk, wk)
                g = torch.autograd.grad(y1 + w1, yk + wk + tuple(params), gs, allow_unused=True)
            gs = [torch.zeros_like(t) if a is None else a for a, t in zip(g[:2 * n], yk + wk, strict=True)]
            gp = [acc if a is None else acc + a for acc, a in zip(gp, g[2 * n:], strict=True)]
        return (None, None, None, None, None, *gs, *gp)


def alf_solve(F, eps, x0, u0, n_steps, t1=1.0, eta=1.0, takes_time=True):
    """``(x(t1), u(t1))`` of ``eps x'' + x' = F(t, x)`` by ``n_steps`` ALF steps, memory-free backward.

    ``F`` (an ``nn.Module``) is called ``F(t, x)`` (``t`` a 0-dim tensor) or ``F(x)``
    (``takes_time=False``); its parameters receive gradients, as do ``x0`` and ``u0``. NFE:
    ``n_steps + 1`` forward (the extra one is ``w_0 = f(0, y_0)``), ``2 n_steps`` backward.
    Raises ``ValueError`` for ``eps <= 0``, ``n_steps < 1`` or ``eta`` outside ``(0, 1]``.
    """
    if not eps > 0:
        raise ValueError(f"eps == {eps!r}: the ALF baseline integrates the second-order system, eps > 0.")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps == {n_steps!r}, must be an integer >= 1.")
    if not 0 < eta <= 1 or eta == 0.5:
        raise ValueError(f"eta == {eta!r}, must be in (0, 1] and not 0.5 (the inverse divides by 1 - 2 eta).")
    params = tuple(p for p in F.parameters() if p.requires_grad)
    dtype = x0.dtype

    def field(t, y):
        x, u = y
        tt = torch.tensor(float(t), dtype=dtype, device=x.device)
        fx = F(tt, x) if takes_time else F(x)
        return (u, (fx - u) / eps)

    y0 = (x0, u0)
    w0 = field(0.0, y0)  # in the graph: w_0 depends on x_0, u_0 and the parameters
    outs = _ALFFunction.apply(field, n_steps, float(t1), float(eta), 2, *y0, *w0, *params)
    return outs[0], outs[1]
