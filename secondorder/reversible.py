"""Memory-free backprop: autograd Functions that store no activations.

The forward pass runs without building a graph and keeps only the last state; the backward pass
walks the layers in reverse, reconstructs each layer's input with the inverse of its update rule,
recomputes the residual function with gradients enabled and applies its vector-Jacobian product.

Two arithmetics reconstruct the states (the ``backward`` argument of the models):

- ``"exact"``: positions and velocities held as int64 fixed point with a bit store
  (:mod:`secondorder.exact`); the reconstruction is bit-exact at any depth.
- ``"float"``: the naive floating-point inverse. Its error grows like ``gamma**-N`` for a Momentum
  ResNet (THEORY.md section 6); kept as the cautionary baseline.

Recomputation replays the RNG state each residual function consumed in the forward pass (dropout
masks are identical) and restores every buffer a recomputation touches (BatchNorm running
statistics are updated once, by the forward pass, as with plain autograd).
"""

from __future__ import annotations

import array
import copy

import torch
from torch import nn

from . import _fused
from . import exact as _exact
from ._checks import check_output
from .steps import momentum_step

__all__ = ["momentum_memory_free", "coupling_memory_free", "exact_roundtrip"]


# --------------------------------------------------------------------------------------------
# What both Functions share: calling residual functions, replaying RNG, protecting buffers,
# and accumulating vector-Jacobian products into parameters and extra tensor arguments.
# --------------------------------------------------------------------------------------------
class _Layers:
    def __init__(self, functions, args, kwargs, device, labels=None):
        self.functions = list(functions)
        # labels(n) = (kind, index) used in error messages, e.g. ("residual function", 3)
        self.labels = labels or (lambda n: ("residual function", n))
        self.params = []  # unique parameters needing a gradient, in a fixed order
        index = {}
        self.layer_params = []  # per layer: positions into self.params (shared by tied modules)
        self.buffers = []  # per layer: the module's buffers (shared by tied modules)
        per_module = {}
        for f in self.functions:
            if id(f) not in per_module:
                pos = []
                for p in f.parameters() if isinstance(f, nn.Module) else ():
                    if p.requires_grad:
                        if id(p) not in index:
                            index[id(p)] = len(self.params)
                            self.params.append(p)
                        pos.append(index[id(p)])
                per_module[id(f)] = (pos, list(f.buffers()) if isinstance(f, nn.Module) else [])
            pos, bufs = per_module[id(f)]
            self.layer_params.append(pos)
            self.buffers.append(bufs)
        # extra arguments: top-level tensors of args/kwargs that need a gradient become inputs
        self.args, self.kwargs = list(args), dict(kwargs)
        self.extra = []  # (key, tensor) with key an int (position) or str (keyword)
        for i, a in enumerate(self.args):
            if isinstance(a, torch.Tensor) and a.requires_grad:
                self.extra.append((i, a))
        for k, a in self.kwargs.items():
            if isinstance(a, torch.Tensor) and a.requires_grad:
                self.extra.append((k, a))
        self.cuda = device.type == "cuda"
        self.device = device
        self.rng = [None] * len(self.functions)

    def inputs(self):
        """Tensors handed to ``Function.apply`` after the state: extra arguments, then parameters."""
        return [a for _, a in self.extra] + self.params

    # -- forward ------------------------------------------------------------------------------
    def _rng_state(self):
        cpu = torch.get_rng_state()
        gpu = torch.cuda.get_rng_state(self.device) if self.cuda else None
        return cpu, gpu

    def call_forward(self, n, x, like=None):
        """``f_n(x, *args, **kwargs)`` in the forward pass; remembers the RNG state if ``f_n`` drew from it."""
        before = self._rng_state()
        out = self.functions[n](x, *self.args, **self.kwargs)
        what, index = self.labels(n)
        check_output(index, out, (x if like is None else like).shape, what)
        after = self._rng_state()
        if not torch.equal(before[0], after[0]) or (self.cuda and not torch.equal(before[1], after[1])):
            self.rng[n] = before
        return out

    # -- backward -----------------------------------------------------------------------------
    def begin_backward(self):
        self.grads = [None] * (len(self.extra) + len(self.params))
        self._grad_args, self._grad_kwargs = list(self.args), dict(self.kwargs)
        self._extra_detached = []
        for key, a in self.extra:
            d = a.detach().requires_grad_(True)
            self._extra_detached.append(d)
            if isinstance(key, int):
                self._grad_args[key] = d
            else:
                self._grad_kwargs[key] = d

    def call_backward(self, n, x):
        """Recompute ``f_n(x)`` with gradients and the forward's RNG state. Buffers it updates
        (BatchNorm running statistics) are restored by :meth:`restore` (after the VJP, which may
        need their current version)."""
        f = self.functions[n]
        self._saved = (n, [b.detach().clone() for b in self.buffers[n]])
        with torch.enable_grad():
            if self.rng[n] is None:
                return f(x, *self._grad_args, **self._grad_kwargs)
            devices = [self.device] if self.cuda else []
            with torch.random.fork_rng(devices=devices):
                torch.set_rng_state(self.rng[n][0])
                if self.cuda:
                    torch.cuda.set_rng_state(self.rng[n][1], self.device)
                return f(x, *self._grad_args, **self._grad_kwargs)

    def restore(self):
        """Put back the buffers of the last recomputed function as the forward pass left them."""
        n, saved = self._saved
        with torch.no_grad():
            for b, s in zip(self.buffers[n], saved):
                b.copy_(s)

    def vjp(self, n, out, x, grad):
        """Return ``(d out / d x)^T grad``; accumulate the parameters' and extra arguments' parts."""
        params = [self.params[i] for i in self.layer_params[n]]
        wrt = [x] + params + self._extra_detached
        gs = torch.autograd.grad(out, wrt, grad, allow_unused=True)
        self.restore()
        gx = gs[0] if gs[0] is not None else torch.zeros_like(x)
        ne = len(self.extra)
        for i, g in zip(self.layer_params[n], gs[1 : 1 + len(params)]):
            if g is not None:
                j = ne + i
                self.grads[j] = g if self.grads[j] is None else self.grads[j] + g
        for j, g in enumerate(gs[1 + len(params) :]):
            if g is not None:
                self.grads[j] = g if self.grads[j] is None else self.grads[j] + g
        return gx


def _snapshot(arith):
    """A copy of an arithmetic's final state sharing its tensors (they are never mutated in place)."""
    c = copy.copy(arith)
    if hasattr(arith, "s"):
        c.s = list(arith.s)
    if hasattr(arith, "store"):
        c.store = copy.copy(arith.store)
        c.store._spilled = list(arith.store._spilled)
    return c


class _Checks:
    """Range and finiteness checks of the exact path, evaluated lazily (one sync per pass).

    The maxima go into a growing float64 tensor and their labels into a compact int array, so the
    checks cost a few bytes per layer, not Python objects."""

    def __init__(self, fmt):
        self.fmt = fmt
        self.names = []  # distinct "what" strings
        self.codes = array.array("q")  # per entry: name index, layer
        self.values = None  # float64 tensor of max |value| (rescaled), grown by doubling
        self.count = 0
        self._pending = []  # maxima from fused kernels not yet copied into values

    def _entry(self, what, layer, limit):
        if (what, limit) not in self.names:
            self.names.append((what, limit))
        self.codes.extend((self.names.index((what, limit)), layer))

    def _room(self, k, device):
        if self.values is None or self.count + k > self.values.numel():
            grown = torch.empty(max(64, 2 * (self.count + k)), dtype=torch.float64, device=device)
            if self.values is not None:
                grown[: self.count] = self.values[: self.count]
            self.values = grown

    def add(self, what, layer, t, scale=1.0, limit=None):
        """Remember ``max |t| * scale / limit`` (no synchronisation here); >= 1 is an overflow.
        ``limit`` defaults to the format's range."""
        limit = self.fmt.max_abs if limit is None else limit
        self._flush()  # keep values in the order of their labels
        self._entry(what, layer, limit)
        self._room(1, t.device)
        m = t.detach().abs().amax() if t.numel() else t.new_zeros(())
        self.values[self.count] = m.to(torch.float64) * (scale / limit)
        self.count += 1

    def add_values(self, entries, m):
        """Remember several maxima at once: ``entries`` lists ``(what, layer, limit)`` and the float64
        tensor ``m`` holds the matching ``max |t| * scale / limit`` (computed by a fused kernel).
        The small tensors are gathered in one copy every 64 calls."""
        for what, layer, limit in entries:
            self._entry(what, layer, limit)
        self._pending.append(m if m.numel() == len(entries) else m[: len(entries)])
        if len(self._pending) >= 64:
            self._flush()

    def _flush(self):
        if self._pending:
            m = torch.cat(self._pending)
            self._pending = []
            self._room(m.numel(), m.device)
            self.values[self.count : self.count + m.numel()] = m
            self.count += m.numel()

    def raise_if_bad(self):
        self._flush()
        if not self.count:
            return
        m = self.values[: self.count]
        bad = ~(m < 1.0)  # NaN compares False: caught too
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0])
            (what, limit), layer = self.names[self.codes[2 * i]], self.codes[2 * i + 1]
            raise self.fmt.overflow_error(what, layer, float(m[i]) * limit, limit)
        self.codes = array.array("q")
        self.count = 0


def _ladder(dtype, bits):
    """Fractional-bit formats to try: the user's one, or the dtype's ladder (finest first)."""
    if bits is not None:
        return [bits]
    return list(_exact.BITS_LADDER.get(dtype, _exact.BITS_LADDER[torch.float32]))


def _run_ladder(layers, make, ladder, run):
    """Run the forward pass ``run(arith)`` with the finest format of ``ladder`` whose range holds
    every value; before each retry restore the RNG state and the buffers the pass changed."""
    if len(ladder) == 1:
        arith = make(ladder[0])
        run(arith)
        return arith
    rng = layers._rng_state()
    buffers = {id(b): (b, b.detach().clone()) for bs in layers.buffers for b in bs}
    for i, bits in enumerate(ladder):
        arith = make(bits)
        try:
            run(arith)
            return arith
        except _exact.FixedPointOverflowError as e:
            if not e.finite or i == len(ladder) - 1:
                raise
        torch.set_rng_state(rng[0])
        if layers.cuda:
            torch.cuda.set_rng_state(rng[1], layers.device)
        with torch.no_grad():
            for b, saved in buffers.values():
                b.copy_(saved)
        layers.rng = [None] * len(layers.functions)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Momentum ResNet
# --------------------------------------------------------------------------------------------
class _FloatMomentum:
    """Float states; the inverse divides by gamma (error grows like gamma**-N)."""

    def __init__(self, gamma, x):
        self.gamma = gamma

    def encode(self, x, v):
        self.x, self.v = x, v

    def x_float(self):
        return self.x

    def v_float(self):
        return self.v

    def step(self, n, fx):
        self.x, self.v = momentum_step(self.x, self.v, fx, self.gamma)

    def unstep_x(self):
        self.x = self.x - self.v

    def unstep_v(self, n, fx):
        self.v = (self.v - (1 - self.gamma) * fx) / self.gamma

    def finish_forward(self):
        pass


def _cached_float(cache, Y):
    """The float value a fused kernel left for the int64 tensor ``Y``, if ``Y`` is unchanged.

    The cache is read once (the caller drops it): the forward pass returns this tensor to the user,
    and an arithmetic kept by the autograd graph must not hold its own output (a reference cycle
    through the graph that the garbage collector cannot free)."""
    if cache is not None and cache[0] is Y and cache[1] == Y._version:
        return cache[2]
    return None


class _ExactMomentum:
    """int64 fixed-point states with a bit store; the inverse is bit-exact.

    With the fused kernels (:mod:`secondorder._fused`, chosen by :func:`secondorder.exact.set_fused`)
    each of :meth:`step`, :meth:`unstep_x`, :meth:`unstep_v` and :meth:`unstep` is one compiled
    kernel that also returns the dequantized position (cached for :meth:`x_float`) and the
    range-check maxima; the eager operations are the fallback and give the same bits."""

    def __init__(self, gamma, x, bits=None):
        self.gamma = gamma
        self.c = 1 - gamma  # the same float factor the autograd path multiplies f by
        self.fmt = _exact.FixedPoint(x.dtype, bits)
        self.frac = _exact.rational_gamma(gamma, dyadic=x.dtype != torch.float64)
        self.checks = _Checks(self.fmt)
        # below float64, |V| is also kept under 2**53 quanta, so that the bit store divides V by n
        # in exact float64 arithmetic (velocity range |v| < 2**(53 - bits): 2.1e6 at 32 bits)
        self.v_limit = 2.0 ** (53 - self.fmt.bits) if x.dtype != torch.float64 else None
        self._xf = None  # (X, X._version, float X) left by a fused kernel
        self._next = None  # (X, V, versions, X - V, its float) left by the fused unstep_v
        self._k = None  # the fused kernels' constants, built on first use
        self._owner = None  # self when X, V and store.S may be updated in place

    def encode(self, x, v):
        self.checks.add("the input x", 0, x)
        self.checks.add("the initial velocity v0", 0, v, limit=self.v_limit)
        self.checks.raise_if_bad()
        self.X, self.V = self.fmt.quantize(x), self.fmt.quantize(v)
        v_bound = _exact.FLOAT_EXACT if self.v_limit is not None else 2**63
        self.store = _exact.BitStore(self.V, self.frac, v_bound)
        self._xf = None
        self._owner = self  # fresh tensors from quantize and the store

    def x_float(self):
        xf, self._xf = _cached_float(self._xf, self.X), None
        return xf if xf is not None else self.fmt.dequantize(self.X)

    def v_float(self):
        return self.fmt.dequantize(self.V)

    def _term(self, n, fx, check):
        """``round((1 - gamma) * f(x) * 2**bits)``: one multiply by ``c * 2**bits`` (the power of two
        is exact, so this equals scaling the float ``(1 - gamma) * f(x)``)."""
        if check:
            self.checks.add("(1 - gamma) * f(x)", n, fx, abs(self.c))
        return self.fmt.quantize(fx, self.c)

    # -- fused kernels ------------------------------------------------------------------------
    def _fused(self, fx=None):
        """The fused kernels' constants when they are to be tried for this state, else None."""
        if self.store.n == self.store.d or not _fused.enabled(self.X):
            return None
        if fx is not None and fx.shape != self.X.shape:
            return None
        if self._k is None:
            st, fmt, dev = self.store, self.fmt, self.X.device
            f64 = lambda v: torch.tensor(v, dtype=torch.float64, device=dev)  # noqa: E731
            i64 = lambda v: torch.tensor(v, dtype=torch.int64, device=dev)  # noqa: E731
            work = lambda v: torch.tensor(v, dtype=fmt._work, device=dev)  # noqa: E731
            v_lim = 0.0 if self.v_limit is None else fmt.inv_scale / self.v_limit
            self._k = {
                "store": (i64(st.n), i64(st.d), f64(1.0 / st.n), f64(1.0 / st.d),
                          i64(st.n.bit_length() - 1), i64(st.d.bit_length() - 1)),
                # the Python double c * 2**bits, rounded once to the work dtype as the eager
                # multiplication by a Python scalar does
                "k": work(self.c * fmt.scale),
                "inv_scale": work(fmt.inv_scale),
                "lim": f64([abs(self.c) / fmt.max_abs, fmt.inv_scale / fmt.max_abs, v_lim]),
                "plan": _fused.plan(st.n, st.d, st.v_bound),
            }
        return self._k

    def _own_state(self, x_too=True):
        """Make ``V``, ``store.S`` (and ``X`` if ``x_too``) this arithmetic's own contiguous tensors,
        which the fused kernels then overwrite in place. A copy made by ``copy.copy`` (the backward's
        walking copy) shares the forward's tensors: its first update clones them (one copy, as an
        out-of-place update would allocate), later ones write in place."""
        st = self.store
        if self._owner is self and self.X.is_contiguous() and self.V.is_contiguous() and st.S.is_contiguous():
            return
        if x_too:
            self.X = self.X.clone(memory_format=torch.contiguous_format)
        self.V = self.V.clone(memory_format=torch.contiguous_format)
        st.S = st.S.clone(memory_format=torch.contiguous_format)
        self._owner = self

    def step(self, n, fx):
        k = self._fused(fx)
        if k is not None:
            self.store.prepare_mul()
            self._own_state()
            args = (_fused.flat(self.X), _fused.flat(self.V), _fused.flat(self.store.S), _fused.flat(fx), *k["store"],
                    k["k"], k["inv_scale"], k["lim"], self.fmt.dtype, k["plan"][0])
            shape = self.X.shape
            out = _fused.call("momentum_step_", *args)
            if out is not None:
                xf, m = out
                self.store.commit_mul(self.store.S)
                self._xf = (self.X, self.X._version, xf.view(shape))
                entries = [("(1 - gamma) * f(x)", n, self.fmt.max_abs), ("the state x", n + 1, self.fmt.max_abs)]
                if self.v_limit is not None:
                    entries.append(("the velocity v", n + 1, self.v_limit))
                self.checks.add_values(entries, m)
                return
        self.V = self.store.mul(self.V) + self._term(n, fx, True)
        self.X = self.X + self.V
        self.checks.add("the state x", n + 1, self.X, self.fmt.inv_scale)
        if self.v_limit is not None:
            self.checks.add("the velocity v", n + 1, self.V, self.fmt.inv_scale, self.v_limit)

    def unstep_x(self):
        nxt, self._next = self._next, None
        if nxt is not None and nxt[0] is self.X and nxt[1] is self.V and nxt[2] == (self.X._version, self.V._version):
            self.X = nxt[3]  # computed by the fused unstep_v that gave this V
            self._xf = (self.X, self.X._version, nxt[4])
            return
        if self._fused() is not None:
            out = _fused.call("unstep_x", _fused.flat(self.X), _fused.flat(self.V), self._k["inv_scale"], self.fmt.dtype)
            if out is not None:
                self.X = out[0].view(self.V.shape)
                self._xf = (self.X, self.X._version, out[1].view(self.V.shape))
                return
        self.X = self.X - self.V

    def unstep_v(self, n, fx):
        """Undo layer ``n``'s velocity update. The fused kernel also computes the previous layer's
        ``X - V`` (the next :meth:`unstep_x`, which then only takes it), so a backward step costs one
        kernel call."""
        k = self._fused(fx)
        self._next = None
        if k is not None and n == 0:  # no previous layer: V and S only
            self._own_state(x_too=False)
            out = _fused.call("momentum_unstep_last_", _fused.flat(self.V), _fused.flat(self.store.S), _fused.flat(fx),
                              *k["store"], k["k"], k["plan"][1])
            if out is not None:
                self.store.commit_div(self.store.S)
                return
        elif k is not None:
            self._own_state(x_too=False)
            args = (_fused.flat(self.X), _fused.flat(self.V), _fused.flat(self.store.S), _fused.flat(fx), *k["store"],
                    k["k"], k["inv_scale"], self.fmt.dtype, k["plan"][1])
            shape = self.X.shape
            out = _fused.call("momentum_unstep_", *args)
            if out is not None:
                X1, xf = out
                self.store.commit_div(self.store.S)
                X1 = X1.view(shape)
                self._next = (self.X, self.V, (self.X._version, self.V._version), X1, xf.view(shape))
                return
        T = self._term(n, fx, False)
        self.V = self.store.div(T.neg_().add_(self.V))  # V - T, in a fresh tensor

    def unstep(self, n, fx):
        """:meth:`unstep_v` for layer ``n``, then (for ``n > 0``) :meth:`unstep_x` of layer ``n - 1``:
        the backward loop ``unstep_x(); for n in reversed(range(N)): x = x_float(); fx = f(x);
        unstep(n, fx)`` visits the same states as calling the two separately (with the fused
        kernels both cost one call either way)."""
        self.unstep_v(n, fx)
        if n > 0:
            self.unstep_x()

    def finish_forward(self):
        self.checks.raise_if_bad()


def _momentum_pass(layers, arith, x, v):
    """The forward pass of a Momentum ResNet in ``arith`` (float or exact), no graph."""
    arith.encode(x, v)
    for n in range(len(layers.functions)):
        arith.step(n, layers.call_forward(n, arith.x_float()))
    arith.finish_forward()


class _MomentumFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, x, v, gamma_t, *inputs):
        layers = spec["layers"]
        with torch.no_grad():
            run = lambda arith: _momentum_pass(layers, arith, x, v)  # noqa: E731
            arith = spec["arith"] = _run_ladder(layers, spec["make"], spec["ladder"], run)
            x_out, v_out = arith.x_float(), arith.v_float()
        ctx.spec = spec
        ctx.gamma_needs_grad = gamma_t.requires_grad
        ctx.gamma_shape = gamma_t.shape
        if x_out is x:  # depth 0 (Function outputs must not alias inputs)
            x_out, v_out = x_out.clone(), v_out.clone()
        return x_out, v_out

    @staticmethod
    def backward(ctx, gx, gv):
        spec = ctx.spec
        layers, arith = spec["layers"], spec["arith"]
        arith = _snapshot(arith)  # walk back on a copy: a second backward (retain_graph) works too
        gamma = arith.gamma
        layers.begin_backward()
        g_gamma = torch.zeros((), dtype=torch.float64, device=gx.device)
        for n in reversed(range(len(layers.functions))):
            arith.unstep_x()
            x = arith.x_float().detach().requires_grad_(True)
            fx = layers.call_backward(n, x)
            with torch.no_grad():
                arith.unstep_v(n, fx.detach())
            g_tot = gx + gv  # gradient reaching v_{n+1}
            if ctx.gamma_needs_grad:  # v_{n+1} = gamma v_n + (1-gamma) f  =>  d/dgamma = v_n - f
                g_gamma += (g_tot * (arith.v_float() - fx.detach())).sum().to(torch.float64)
            gx = gx + layers.vjp(n, fx, x, (1 - gamma) * g_tot)
            gv = gamma * g_tot
        g_gamma_out = g_gamma.reshape(ctx.gamma_shape) if ctx.gamma_needs_grad else None
        return (None, gx, gv, g_gamma_out, *layers.grads)


def momentum_memory_free(functions, x, v, gamma, args, kwargs, mode, bits=None):
    """Run a Momentum ResNet storing no activations (``mode`` is ``"exact"`` or ``"float"``).

    ``gamma`` is a float or a 0-dim tensor (e.g. a learnable parameter). Returns ``(x_N, v_N)``.
    """
    g = float(gamma.detach()) if isinstance(gamma, torch.Tensor) else float(gamma)
    layers = _Layers(functions, args, kwargs, x.device)
    if mode == "exact":
        spec = {"layers": layers, "make": lambda b: _ExactMomentum(g, x, b), "ladder": _ladder(x.dtype, bits)}
    else:
        spec = {"layers": layers, "make": lambda b: _FloatMomentum(g, x), "ladder": [None]}
    gamma_t = gamma if isinstance(gamma, torch.Tensor) else torch.tensor(g, dtype=x.dtype, device=x.device)
    return _MomentumFunction.apply(spec, x, v, gamma_t, *layers.inputs())


# --------------------------------------------------------------------------------------------
# RevNet (additive coupling), as 2N half steps  a <- a + h(b)  with alternating roles
# --------------------------------------------------------------------------------------------
class _FloatCoupling:
    def encode(self, x1, x2):
        self.s = [x1, x2]

    def get(self, i):
        return self.s[i]

    def add(self, i, n, h):
        self.s[i] = self.s[i] + h

    def sub(self, i, n, h):
        self.s[i] = self.s[i] - h

    def finish_forward(self):
        pass


class _ExactCoupling:
    """int64 fixed-point RevNet states ``s = [X1, X2]``; :meth:`add` and :meth:`sub` run as one fused
    kernel each when :mod:`secondorder._fused` is on, which also leaves the dequantized state for
    :meth:`get` (the next half step reads the state just updated)."""

    def __init__(self, x, bits=None):
        self.fmt = _exact.FixedPoint(x.dtype, bits)
        self.checks = _Checks(self.fmt)
        self._f = [None, None]  # per state: (Y, Y._version, float Y) left by a fused kernel
        self._k = None

    def encode(self, x1, x2):
        self.checks.add("the input x", 0, x1)
        self.checks.add("the input x", 0, x2)
        self.checks.raise_if_bad()
        self.s = [self.fmt.quantize(x1), self.fmt.quantize(x2)]
        self._f = [None, None]

    def get(self, i):
        y = _cached_float(self._f[i], self.s[i])
        if self._f[i] is not None:
            self._f = list(self._f)  # a snapshot may share the list
            self._f[i] = None
        return y if y is not None else self.fmt.dequantize(self.s[i])

    def _fused(self, t):
        if not _fused.enabled(t, coupling=True):
            return None
        if self._k is None:
            fmt, dev = self.fmt, t.device
            self._k = {"k": torch.tensor(fmt.scale, dtype=fmt._work, device=dev),
                       "inv_scale": torch.tensor(fmt.inv_scale, dtype=fmt._work, device=dev),
                       "lim": torch.tensor([1.0 / fmt.max_abs, fmt.inv_scale / fmt.max_abs], dtype=torch.float64, device=dev)}
        return self._k

    def _update(self, i, out):
        self.s[i] = out[0].view(self.s[i].shape)
        self._f = list(self._f)  # a snapshot may share the list
        self._f[i] = (self.s[i], self.s[i]._version, out[1].view(self.s[i].shape))

    def add(self, i, n, h):
        k = self._fused(self.s[i])
        if k is not None and h.shape == self.s[i].shape:
            out = _fused.call("coupling_add", _fused.flat(self.s[i]), _fused.flat(h), k["k"], k["inv_scale"], k["lim"],
                              self.fmt.dtype)
            if out is not None:
                self._update(i, out)
                self.checks.add_values([("a coupling function's output", n, self.fmt.max_abs),
                                        ("the state x", n + 1, self.fmt.max_abs)], out[2])
                return
        self.checks.add("a coupling function's output", n, h)
        self.s[i] = self.s[i] + self.fmt.quantize(h)
        self.checks.add("the state x", n + 1, self.s[i], self.fmt.inv_scale)

    def sub(self, i, n, h):
        k = self._fused(self.s[i])
        if k is not None and h.shape == self.s[i].shape:
            out = _fused.call("coupling_sub", _fused.flat(self.s[i]), _fused.flat(h), k["k"], k["inv_scale"], self.fmt.dtype)
            if out is not None:
                self._update(i, out)
                return
        self.s[i] = self.s[i] - self.fmt.quantize(h)

    def finish_forward(self):
        self.checks.raise_if_bad()


def _coupling_pass(layers, arith, x1, x2):
    """The forward pass of a RevNet in ``arith``: half step ``k`` adds ``h_k(state[1 - k % 2])``
    to ``state[k % 2]``."""
    arith.encode(x1, x2)
    for k in range(len(layers.functions)):
        t = k % 2
        arith.add(t, k // 2, layers.call_forward(k, arith.get(1 - t), like=arith.s[t]))
    arith.finish_forward()


def _coupling_layers(F_functions, G_functions, args, kwargs, device):
    """The RevNet's functions interleaved as half steps F_0, G_0, F_1, G_1, ..."""
    interleaved = [h for pair in zip(F_functions, G_functions) for h in pair]
    return _Layers(interleaved, args, kwargs, device, _coupling_label)


class _CouplingFunction(torch.autograd.Function):
    """Half step k (k = 0 .. 2N-1): target ``t = k % 2`` gets ``h_k(state[1 - t])`` added."""

    @staticmethod
    def forward(ctx, spec, x1, x2, *inputs):
        layers = spec["layers"]
        with torch.no_grad():
            run = lambda arith: _coupling_pass(layers, arith, x1, x2)  # noqa: E731
            arith = spec["arith"] = _run_ladder(layers, spec["make"], spec["ladder"], run)
            y1, y2 = arith.get(0), arith.get(1)
        if y1 is x1:
            y1, y2 = y1.clone(), y2.clone()
        ctx.spec = spec
        return y1, y2

    @staticmethod
    def backward(ctx, g1, g2):
        spec = ctx.spec
        layers, arith = spec["layers"], spec["arith"]
        arith = _snapshot(arith)
        layers.begin_backward()
        g = [g1, g2]
        for k in reversed(range(len(layers.functions))):
            t = k % 2
            b = arith.get(1 - t).detach().requires_grad_(True)
            h = layers.call_backward(k, b)
            with torch.no_grad():
                arith.sub(t, k // 2, h.detach())
            g[1 - t] = g[1 - t] + layers.vjp(k, h, b, g[t])
        return (None, g[0], g[1], *layers.grads)


def _coupling_label(k):
    return (f"{'FG'[k % 2]} function", k // 2)


def coupling_memory_free(F_functions, G_functions, x1, x2, args, kwargs, mode, bits=None):
    """Run a RevNet storing no activations (``mode`` is ``"exact"`` or ``"float"``); return ``(y1, y2)``."""
    layers = _coupling_layers(F_functions, G_functions, args, kwargs, x1.device)
    if mode == "exact":
        spec = {"layers": layers, "make": lambda b: _ExactCoupling(x1, b), "ladder": _ladder(x1.dtype, bits)}
    else:
        spec = {"layers": layers, "make": lambda b: _FloatCoupling(), "ladder": [None]}
    return _CouplingFunction.apply(spec, x1, x2, *layers.inputs())


# --------------------------------------------------------------------------------------------
# Round trip in fixed point, for tests and teaching
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def exact_roundtrip(net, x, *args, v0=None, bits=None, **kwargs):
    """Run ``net`` (a MomentumResNet or RevNet) forward in exact fixed point, then invert it.

    Returns a dict: ``x_N`` (and ``v_N`` for momentum) the forward output, ``x0``/``v0`` the
    reconstructed input (floats), ``bit_exact`` whether the reconstructed int64 states equal the
    quantized input bit for bit, ``store_bytes`` the bit store's size at the end of the forward
    pass, ``spills`` when it was spilled and ``bits`` the fixed-point format used (``bits``
    defaults to ``net.fixed_point_bits``; None tries the dtype's ladder, finest first).
    """
    from .nets import MomentumResNet, RevNet

    bits = net.fixed_point_bits if bits is None else bits
    if isinstance(net, MomentumResNet):
        from ._checks import check_gamma

        gamma = check_gamma(net.gamma, invertible=True)
        v = net._start(x, v0)
        layers = _Layers(net.functions, args, kwargs, x.device)
        run = lambda arith: _momentum_pass(layers, arith, x, v)  # noqa: E731
        arith = _run_ladder(layers, lambda b: _ExactMomentum(gamma, x, b), _ladder(x.dtype, bits), run)
        X0, V0 = arith.fmt.quantize(x), arith.fmt.quantize(v)  # what encode started from
        out = {"x_N": arith.x_float(), "v_N": arith.v_float(), "store_bytes": arith.store.nbytes,
               "spills": arith.store.spills, "bits": arith.fmt.bits}
        layers.begin_backward()
        for n in reversed(range(len(layers.functions))):
            arith.unstep_x()
            arith.unstep_v(n, layers.call_backward(n, arith.x_float()))
            layers.restore()
        out.update(x0=arith.x_float(), v0=arith.v_float(),
                   bit_exact=bool(torch.equal(arith.X, X0) and torch.equal(arith.V, V0)))
        return out
    if isinstance(net, RevNet):
        x1, x2 = net._split(x)
        layers = _coupling_layers(net.F, net.G, args, kwargs, x.device)
        run = lambda arith: _coupling_pass(layers, arith, x1, x2)  # noqa: E731
        arith = _run_ladder(layers, lambda b: _ExactCoupling(x, b), _ladder(x.dtype, bits), run)
        S0 = [arith.fmt.quantize(x1), arith.fmt.quantize(x2)]  # what encode started from
        out = {"x_N": torch.cat([arith.get(0), arith.get(1)], net.dim), "store_bytes": 0, "spills": [],
               "bits": arith.fmt.bits}
        layers.begin_backward()
        for k in reversed(range(len(layers.functions))):
            arith.sub(k % 2, k // 2, layers.call_backward(k, arith.get(1 - k % 2)))
            layers.restore()
        out.update(x0=torch.cat([arith.get(0), arith.get(1)], net.dim),
                   bit_exact=all(torch.equal(a, b) for a, b in zip(arith.s, S0)))
        return out
    raise TypeError(f"exact_roundtrip needs a MomentumResNet or RevNet, got {type(net).__name__}.")
