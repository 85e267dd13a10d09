"""Memory-free backprop: autograd Functions that store no activations.

The forward pass runs without building a graph and keeps only the last state; the backward pass
walks the layers in reverse, reconstructs each layer's input with the inverse of its update rule,
recomputes the residual function with gradients enabled and applies its vector-Jacobian product.

Two arithmetics reconstruct the states (the ``backward`` argument of the models):

- ``"exact"``: positions and velocities held as int64 fixed point with a bit store
  (``secondorder.exact``); the reconstruction is bit-exact at any depth.
- ``"float"``: the naive floating-point inverse. Its error grows like ``gamma**-N`` for a Momentum
  ResNet (docs/theory.md §6.2); kept as the cautionary baseline.

**What the recomputation replays.** A recomputation is only right if it computes what the forward
computed. So each call replays the forward's context, as ``torch.utils.checkpoint`` does: the
RNG state each residual function consumed (dropout masks are identical), the autocast state of
every device type (enabled, dtype, weight cache), the parameters and buffers each module held at
forward time (``torch.func.functional_call`` and parametrizations swap them; the captured tensors
are recomputed with and receive their gradients), buffers as they were before each call (BatchNorm
running statistics are updated once, by the forward pass, as with plain autograd), and every tensor
found inside ``*args`` / ``**kwargs``, nested lists, tuples and dicts included. Fused inference
kernels (``torch.backends.mha`` fast paths) are switched off in the forward and in the
recomputation alike, because they are taken without gradients and not with them.

**Self-verification** (docs/theory.md#self-verification). The backward walk ends where the forward began. After the last layer the
reconstructed first state is compared with the forward's input: bit for bit in exact mode (the
int64 states and an empty bit store), within ``sqrt(eps)`` of the dtype in float mode. A mismatch
means the recomputation did not reproduce the forward (a non-deterministic function, state changed
in place between forward and backward, a kernel that differs across calls); no gradient is
returned and ``ReconstructionError`` says so. The check costs one comparison of the first
state per backward. Recomputed graphs are also checked to reach no tensor that requires grad
other than the layer's input, its module's parameters and the network's arguments (such a tensor,
e.g. one held in a plain attribute, would silently get no gradient), and a second derivative
(``create_graph=True``) is refused: these Functions are differentiable once.
"""

from __future__ import annotations

import abc
import array
import contextlib
import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree

from . import _fused
from . import _perfeature as _pf
from . import exact as _exact
from ._errors import ReconstructionError
from ._steps import half_step, half_unstep, momentum_step, momentum_unstep_v, momentum_unstep_x
from ._validate import check_output

__all__ = ["momentum_memory_free", "coupling_memory_free", "momentum_roundtrip", "coupling_roundtrip"]


_CAUSES = (
    "Likely causes: a residual function that is not deterministic (non-deterministic GPU kernels, "
    "random numbers not drawn from torch's default generators, behaviour that depends on global "
    "state); a parameter, buffer or argument changed in place between the forward and the backward "
    "(e.g. optimizer.step() before loss.backward()); a kernel that computes differently with and "
    "without gradients. Remedies: backward='autograd' (stores activations and needs no "
    "recomputation), torch.use_deterministic_algorithms(True), or leave the network's inputs and "
    "state unchanged until the backward pass."
)


def _keep_graph() -> bool:
    """Whether the running backward keeps the graph (``retain_graph=True``); True if unknown."""
    query = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if query is None else bool(query())


def _refuse_double_backward(what):
    if torch.is_grad_enabled():
        raise ReconstructionError(
            f"create_graph=True (a second derivative) through {what} with a memory-free backward is "
            f"not supported: its backward recomputes each layer and is differentiable once. Use "
            f"backward='autograd' for Hessian-vector products, gradient penalties and other double "
            f"backwards."
        )


class _fastpath_disabled:
    """Context manager: ``torch.backends.mha`` fast path off, previous setting restored."""

    __slots__ = ("prev",)

    def __enter__(self):
        self.prev = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        torch.backends.mha.set_fastpath_enabled(self.prev)
        return False


class _Replay:
    """The context of a recomputation: gradients on, the ``torch.backends.mha`` fast path off (as
    in the forward's calls), and the forward's autocast state when it differs from the current
    one. A plain class rather than a ``contextlib`` stack: it is entered once per layer."""

    __slots__ = ("autocast", "cache", "prev", "stack")

    def __init__(self, autocast, cache):
        self.autocast, self.cache = autocast, cache

    def __enter__(self):
        self.prev = (torch.is_grad_enabled(), torch.backends.mha.get_fastpath_enabled())
        self.stack = None
        for device_type, enabled, dtype in self.autocast:
            if enabled or torch.is_autocast_enabled(device_type):  # else the state already matches
                if self.stack is None:
                    self.stack = contextlib.ExitStack()
                self.stack.enter_context(torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=self.cache))
        torch.backends.mha.set_fastpath_enabled(False)
        torch.set_grad_enabled(True)

    def __exit__(self, *exc):
        torch.set_grad_enabled(self.prev[0])
        torch.backends.mha.set_fastpath_enabled(self.prev[1])
        if self.stack is not None:
            self.stack.close()
        return False


class _Context:
    """The autocast state of the forward pass, replayed around every recomputation."""

    def __init__(self, device):
        types = ["cpu"] if device.type == "cpu" else ["cpu", device.type]
        self.autocast = [
            (t, torch.is_autocast_enabled(t), torch.get_autocast_dtype(t))
            for t in types
            if torch.amp.is_autocast_available(t)
        ]
        self.cache = torch.is_autocast_cache_enabled()

    def replay(self):
        return _Replay(self.autocast, self.cache)


# --------------------------------------------------------------------------------------------
# What both Functions share: calling residual functions with the forward's parameters, buffers,
# arguments, RNG and autocast state, and accumulating vector-Jacobian products.
# --------------------------------------------------------------------------------------------
class _Module:
    """A residual function's state as the forward pass saw it (shared by tied layers)."""

    __slots__ = ("module", "names", "tensors", "versions", "pos", "buffer_names", "buffers", "direct", "mutable")

    def __init__(self, f, index, params):
        self.module = f
        named = list(f.named_parameters()) if isinstance(f, nn.Module) else []
        self.names = [k for k, _ in named]
        self.tensors = [p for _, p in named]
        self.versions = [p._version for p in self.tensors]
        self.pos = []  # per tensor: its position in the Function inputs, or None (needs no grad)
        for p in self.tensors:
            if p.requires_grad:
                if id(p) not in index:
                    index[id(p)] = len(params)
                    params.append(p)
                self.pos.append(index[id(p)])
            else:
                self.pos.append(None)
        named_b = list(f.named_buffers()) if isinstance(f, nn.Module) else []
        self.buffer_names = [k for k, _ in named_b]
        self.buffers = [b for _, b in named_b]
        # buffers a call may update (BatchNorm statistics, spectral norm's vectors) belong to
        # submodules in training mode; in eval mode they are read only and need no copies (should
        # one change anyway, the recomputation differs and the self-verification says so)
        self.mutable = isinstance(f, nn.Module) and any(
            m.training for m in f.modules() if next(m.buffers(recurse=False), None) is not None
        )
        self.direct = True

    def current(self):
        """True if the module still holds the forward's parameter and buffer tensors."""
        f = self.module
        ps = [p for _, p in f.named_parameters()]
        bs = [b for _, b in f.named_buffers()]
        return (len(ps) == len(self.tensors) and all(a is b for a, b in zip(ps, self.tensors))
                and len(bs) == len(self.buffers) and all(a is b for a, b in zip(bs, self.buffers)))


class _Output:
    """A recomputed output reduced to what its vector-Jacobian product needs: its edge in the
    graph and its dtype. Holding this instead of the tensor lets the output's values be freed
    before the product (unless the graph itself saved them)."""

    __slots__ = ("edge", "dtype")

    def __init__(self, out):
        self.dtype = out.dtype
        self.edge = torch.autograd.graph.get_gradient_edge(out) if out.requires_grad else None


class _Layers:
    def __init__(self, functions, args, kwargs, device, labels=None, hint="", rule=None):
        self.functions = list(functions)
        # labels(n) = (kind, index) used in error messages, e.g. ("residual function", 3)
        self.labels = labels or (lambda n: ("residual function", n))
        self.hint = hint  # appended to shape errors
        self.rule = rule  # rule(n, got_shape): the shape error of layer n, if not "keep the shape"
        self.params = []  # unique tensors needing a gradient, in a fixed order (Function inputs)
        index, per_module = {}, {}
        self.layer_module = []
        for f in self.functions:
            if id(f) not in per_module:
                per_module[id(f)] = _Module(f, index, self.params)
            self.layer_module.append(per_module[id(f)])
        self.modules = list(per_module.values())
        # extra arguments: every tensor inside args / kwargs (nested lists, tuples, dicts) that
        # needs a gradient becomes a Function input
        self.args, self.kwargs = tuple(args), dict(kwargs)
        self._leaves, self._tree = pytree.tree_flatten((self.args, self.kwargs))
        self.extra_pos = [i for i, a in enumerate(self._leaves) if isinstance(a, torch.Tensor) and a.requires_grad]
        self.extra = [self._leaves[i] for i in self.extra_pos]
        self.cuda = device.type == "cuda"
        self.device = device
        self.rng = [None] * len(self.functions)
        self.pre_buffers = [None] * len(self.functions)  # buffers before a call that changed them
        self.context = _Context(device)

    def inputs(self):
        """Tensors handed to ``Function.apply`` after the state: extra arguments, then parameters."""
        return self.extra + self.params

    # -- forward ------------------------------------------------------------------------------
    def _rng_state(self):
        cpu = torch.get_rng_state()
        gpu = torch.cuda.get_rng_state(self.device) if self.cuda else None
        return cpu, gpu

    def call_forward(self, n, x, like=None):
        """``f_n(x, *args, **kwargs)`` in the forward pass; remembers the RNG state if ``f_n`` drew
        from it and the buffers it changed as they were before the call."""
        m = self.layer_module[n]
        before = self._rng_state()
        if m.mutable:
            saved = [b.detach().clone() for b in m.buffers]
            versions = [b._version for b in m.buffers]
        else:
            saved = None
        with _fastpath_disabled():
            out = self.functions[n](x, *self.args, **self.kwargs)
        expected = (x if like is None else like).shape
        if type(out) is not torch.Tensor or out.shape != expected:  # the usual case costs two comparisons
            what, index = self.labels(n)
            rule = None if self.rule is None else (lambda i, got: self.rule(n, got))
            check_output(index, out, expected, what, hint=self.hint, rule=rule)
        after = self._rng_state()
        if not torch.equal(before[0], after[0]) or (self.cuda and not torch.equal(before[1], after[1])):
            self.rng[n] = before
        if saved is not None:
            changed = [i for i, b in enumerate(m.buffers) if b._version != versions[i]]
            if changed:
                self.pre_buffers[n] = [(i, saved[i]) for i in changed]
        return out

    # -- backward -----------------------------------------------------------------------------
    def begin_backward(self):
        """Check the parameters were not modified in place, choose per module how to recompute,
        and make the detached copies of the extra arguments that receive gradients."""
        for m in self.modules:
            for name, p, v in zip(m.names, m.tensors, m.versions):
                if p._version != v:
                    raise ReconstructionError(
                        f"parameter {name!r} of {self._describe(m)} was modified in place between "
                        f"the forward and the backward pass (e.g. optimizer.step() before "
                        f"loss.backward()); the memory-free backward recomputes the forward with the "
                        f"parameters' current values and would return wrong gradients. Call "
                        f"backward before changing the parameters, or use backward='autograd'."
                    )
            m.direct = m.current()
        self.grads = [None] * (len(self.extra) + len(self.params))
        self._owned = [False] * len(self.grads)  # grads[j] is this pass's own sum (added to in place)
        self._detached_params = [None] * len(self.params)
        leaves = list(self._leaves)
        self._extra_detached = []
        for i in self.extra_pos:
            d = leaves[i].detach().requires_grad_(True)
            self._extra_detached.append(d)
            leaves[i] = d
        self._grad_args, self._grad_kwargs = pytree.tree_unflatten(leaves, self._tree)

    def _describe(self, m):
        n = next(i for i, mm in enumerate(self.layer_module) if mm is m)
        what, index = self.labels(n)
        return f"{what} {index} ({type(m.module).__name__})"

    def _param(self, i):
        """The tensor the gradient of parameter ``i`` is taken w.r.t. in a functional recompute."""
        d = self._detached_params[i]
        if d is None:
            d = self._detached_params[i] = self.params[i].detach().requires_grad_(True)
        return d

    def _call(self, n, x):
        m = self.layer_module[n]
        f = self.functions[n]
        if m.direct:
            return f(x, *self._grad_args, **self._grad_kwargs), [self.params[i] for i in m.pos if i is not None]
        state, wrt = {}, []
        for name, p, i in zip(m.names, m.tensors, m.pos):
            t = p.detach() if i is None else self._param(i)
            state[name] = t
            if i is not None:
                wrt.append(t)
        state.update(zip(m.buffer_names, m.buffers))
        out = torch.func.functional_call(f, state, (x, *self._grad_args), self._grad_kwargs)
        return out, wrt

    def call_backward(self, n, x):
        """Recompute ``f_n(x)`` with gradients, in the forward's context: RNG state, autocast,
        parameters and buffers (those it changed are set back to their values before the forward's
        call, and restored by ``restore`` after the VJP, which may need them)."""
        m = self.layer_module[n]
        self._saved = (n, [b.detach().clone() for b in m.buffers] if m.mutable else [])
        if self.pre_buffers[n] is not None:
            with torch.no_grad():
                for i, value in self.pre_buffers[n]:
                    m.buffers[i].copy_(value)
        with self.context.replay():
            if self.rng[n] is None:
                out, self._wrt = self._call(n, x)
            else:
                with self._replay_rng(n):
                    out, self._wrt = self._call(n, x)
        return out

    @contextlib.contextmanager
    def _replay_rng(self, n):
        """The RNG state ``f_n`` drew from in the forward pass, if it drew (restored afterwards)."""
        if self.rng[n] is None:
            yield
            return
        with torch.random.fork_rng(devices=[self.device] if self.cuda else []):
            torch.set_rng_state(self.rng[n][0])
            if self.cuda:
                torch.cuda.set_rng_state(self.rng[n][1], self.device)
            yield

    def restore(self):
        """Put back the buffers of the last recomputed function as the forward pass left them."""
        n, saved = self._saved
        if not saved:
            return
        with torch.no_grad():
            for b, s in zip(self.layer_module[n].buffers, saved):
                b.copy_(s)

    def _check_closed(self, n, out, wrt):
        """Raise if the recomputed graph (of the ``_Output`` ``out``) reaches a tensor that requires grad but is none of ``wrt``
        (it would get no gradient: a tensor held outside the module's parameters and arguments)."""
        known = {id(t) for t in wrt}
        stop = {t.grad_fn for t in wrt if t.grad_fn is not None}
        seen, stack = set(), [out.edge.node]
        while stack:
            node = stack.pop()
            if node is None or node in seen or node in stop:
                continue
            seen.add(node)
            var = getattr(node, "variable", None)
            if var is not None:
                if id(var) not in known:
                    what, index = self.labels(n)
                    raise ReconstructionError(
                        f"{what} {index} ({type(self.functions[n]).__name__}) uses a tensor of shape "
                        f"{tuple(var.shape)} that requires grad but is neither its input, one of its "
                        f"parameters, nor a tensor passed to the network in args/kwargs (lists, tuples "
                        f"and dicts are searched): the memory-free backward cannot give it a gradient. "
                        f"Register it as a parameter of the module (or of a submodule), pass it as an "
                        f"argument, or use backward='autograd'."
                    )
                continue
            stack.extend(nxt for nxt, _ in node.next_functions)

    def vjp(self, n, out, x, grad):
        """Return ``(d out / d x)^T grad``; accumulate the parameters' and extra arguments' parts.
        ``out`` is the recomputed output's ``_Output`` (the caller has dropped the output's values,
        which the product does not need)."""
        m = self.layer_module[n]
        params = self._wrt
        wrt = [x] + params + self._extra_detached
        if out.edge is not None:
            self._check_closed(n, out, wrt)
            gs = torch.autograd.grad([out.edge], wrt, [grad.to(out.dtype)], allow_unused=True)
        else:  # f depends on nothing that requires grad: every gradient is zero
            gs = [None] * len(wrt)
        self.restore()
        gx = gs[0].to(x.dtype) if gs[0] is not None else torch.zeros_like(x)
        ne = len(self.extra)
        for i, g in zip([i for i in m.pos if i is not None], gs[1 : 1 + len(params)]):
            if g is not None:
                self._accumulate(ne + i, g, grad)
        for j, g in enumerate(gs[1 + len(params) :]):
            if g is not None:
                self._accumulate(j, g, grad)
        return gx

    def _accumulate(self, j, g, grad):
        """``grads[j] += g``. The first gradient is kept as autograd returned it unless it shares
        memory with ``grad``, the output gradient of this product: autograd hands that tensor (or
        a view of it) back as the gradient of a parameter that ``f`` adds to its output, and the
        caller updates ``grad`` in place as it walks on, so a kept alias would change under it.
        The second gradient makes a new sum and later ones add into that sum in place: a
        parameter shared by all layers costs one buffer, not one allocation per layer."""
        cur = self.grads[j]
        if cur is None:
            if g.layout == torch.strided and g.untyped_storage().data_ptr() == grad.untyped_storage().data_ptr():
                g = g.clone()
            self.grads[j] = g
        elif self._owned[j]:
            with torch.no_grad():
                cur.add_(g)
        else:
            with torch.no_grad():
                self.grads[j] = cur + g
            self._owned[j] = True


def _walker(ctx):
    """The arithmetic to walk back on: the forward's own final state when the graph is not kept
    (it is released as the walk goes), a copy sharing its tensors when a second backward can
    follow (``retain_graph=True``)."""
    run = ctx.run
    if _keep_graph():
        return run.arith.snapshot()
    arith, run.arith = run.arith, None
    if arith is None:
        raise RuntimeError(
            "Trying to backward through the memory-free network a second time: its final state was "
            "released by the first backward. Pass retain_graph=True to the first backward."
        )
    return arith


def _mismatch(pairs):
    """Count differing elements and the largest difference over ``(got, expected)`` pairs."""
    count = total = 0
    largest = 0.0
    for got, want in pairs:
        diff = got != want
        count += int(diff.sum())
        total += want.numel()
        if bool(diff.any()):
            largest = max(largest, float((got.to(torch.float64) - want.to(torch.float64)).abs().max()))
    return count, total, largest


#: Elements quantized at a time when the self-verification compares the reconstructed first state
#: with the forward's input (so the check allocates no int64 copy of the whole input).
_VERIFY_CHUNK = 1 << 16


def _equals_quantized(state, x, fmt):
    """Whether the int64 ``state`` equals ``fmt.quantize(x)`` bit for bit (``x=None``: the zero
    tensor), quantizing ``x`` a chunk at a time."""
    if x is None:
        return not bool(state.any())
    if state.shape != x.shape:
        return False
    s, xs = state.reshape(-1), x.reshape(-1)
    for i in range(0, xs.numel(), _VERIFY_CHUNK):
        if not torch.equal(s[i : i + _VERIFY_CHUNK], fmt.quantize(xs[i : i + _VERIFY_CHUNK])):
            return False
    return True


def _verify_exact(states, inputs, fmt, store=None, what="the network"):
    """Raise ``ReconstructionError`` unless the reconstructed int64 ``states`` equal the
    forward's float ``inputs`` quantized by ``fmt``, bit for bit (and the bit store is empty again).
    An input given as None stands for the zero tensor (the default initial velocity)."""
    if all(_equals_quantized(a, b, fmt) for a, b in zip(states, inputs)) and (store is None or not bool(store.S.any())):
        return
    expected = [torch.zeros_like(a) if b is None else fmt.quantize(b) for a, b in zip(states, inputs)]
    count, total, largest = _mismatch(list(zip(states, expected)))
    raise ReconstructionError(
        f"the exact backward walked {what} back to its input, but the reconstructed first state "
        f"differs from the forward's quantized input ({count} of {total} elements differ, the "
        f"largest by {largest * fmt.inv_scale:.3g}): recomputing the residual functions did not "
        f"reproduce the forward pass, so no gradient was returned. {_CAUSES}"
    )


def _verify_float(states, expected, scale, what="the network"):
    """Raise ``ReconstructionError`` unless the float reconstruction ``states`` is within
    ``sqrt(eps) * scale`` of the forward's input ``expected`` (norms over all tensors; ``scale`` is
    the larger norm of the input and of the final state)."""
    num = _norm(*(a.double() - b.double() for a, b in zip(states, expected)))
    tol = math.sqrt(torch.finfo(expected[0].dtype).eps)
    if math.isfinite(num) and num <= tol * scale:
        return
    raise ReconstructionError(
        f"the float backward reconstructed the input of {what} with an error of "
        f"{f'{num:.3g} (norm; {num / scale:.3g} relative)' if math.isfinite(num) and scale else 'NaN/inf'}, "
        f"above its tolerance sqrt(eps) = "
        f"{tol:.2g} for {expected[0].dtype}: the floating-point inverse amplifies rounding by "
        f"1/gamma per layer, or the recomputation differed from the forward, so no gradient was "
        f"returned. Use backward='exact', whose reconstruction is bit-exact at any depth."
    )


def _norm(*ts):
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in ts))


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
    buffers = {id(b): (b, b.detach().clone()) for m in layers.modules if m.mutable for b in m.buffers}
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
        layers.pre_buffers = [None] * len(layers.functions)
    raise AssertionError("unreachable")


class _Run:
    """One memory-free forward call, handed from the forward to the backward of an autograd
    Function (the typed record that replaces a dict of options): its layers, how to make its
    arithmetic and which formats to try, and after the forward pass the arithmetic's final state
    (released by the backward when no second backward can follow)."""

    __slots__ = ("layers", "make", "ladder", "arith", "v_zero", "scale")
    layers: _Layers  # the residual functions with their arguments, context and captured tensors
    make: Callable[[int | None], MomentumArithmetic | CouplingArithmetic] | None  # bits -> arithmetic
    ladder: Sequence[int | None]  # fixed-point formats to try, finest first ([None] for float)
    arith: MomentumArithmetic | CouplingArithmetic | None  # the final state after the forward
    v_zero: bool  # the initial velocity is the zero tensor (not saved for the check)
    scale: float  # float mode: the norm the reconstruction error is measured against

    def __init__(self, layers, make, ladder, v_zero=False):
        self.layers, self.make, self.ladder = layers, make, ladder
        self.arith = None
        self.v_zero = v_zero
        self.scale = 0.0

    def forward(self, pass_, *state):
        """Run ``pass_(layers, arith, *state)`` down the ladder of formats, without a graph."""
        with torch.no_grad():
            self.arith = _run_ladder(self.layers, self.make, self.ladder, lambda a: pass_(self.layers, a, *state))
        self.make = None
        return self.arith


# --------------------------------------------------------------------------------------------
# The arithmetic protocol: what a memory-free walk needs from a number format
# --------------------------------------------------------------------------------------------
class MomentumArithmetic(abc.ABC):
    """The state ``(x, v)`` of a Momentum ResNet held in some number format, stepped layer by layer.

    The autograd Function (``_MomentumFunction``) and ``momentum_roundtrip`` drive it; two formats
    implement it: ``_FloatMomentum`` (the float inverse) and ``_ExactMomentum`` (int64 fixed point
    with a bit store). The residual functions are evaluated by the caller, on ``x_float()``.

    Invariants an implementation must keep:

    - *Round trip.* After ``encode(x, v)`` and ``step(n, f_n(x_float()))`` for ``n = 0 .. N-1``,
      the walk ``unstep_x(); unstep_v(n, f_n(x_float()))`` for ``n = N-1 .. 0`` returns to the
      encoded state: bit for bit for the exact format, up to rounding amplified by ``1/gamma`` per
      layer for the float one. ``unstep_v`` receives the same ``fx`` that ``step`` received
      (the caller recomputes it from the same ``x``).
    - *No aliasing of outputs.* ``x_float()`` / ``v_float()`` return tensors that later updates do
      not modify in place, so the caller may hand them to the user or to autograd.
    - *Snapshots.* ``snapshot()`` returns an independent walker sharing the current tensors; walking
      it must not change this object's state (a second backward walks again from the same state).
    - *Checks.* ``finish_forward()`` raises (``secondorder.FixedPointOverflowError``) if any value
      left the format's range during the forward pass; nothing is returned before it ran.
    """

    gamma: float  #: the momentum, as the float the autograd path multiplies by

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, v: torch.Tensor) -> None:
        """Take the initial state (in float) into the format."""

    @abc.abstractmethod
    def x_float(self) -> torch.Tensor:
        """The current position as a float tensor of the input's dtype."""

    @abc.abstractmethod
    def v_float(self) -> torch.Tensor:
        """The current velocity as a float tensor of the input's dtype."""

    @abc.abstractmethod
    def step(self, n: int, fx: torch.Tensor) -> None:
        """Layer ``n`` forward: ``v <- gamma v + (1 - gamma) fx; x <- x + v`` (``_steps.momentum_step``)."""

    @abc.abstractmethod
    def unstep_x(self) -> None:
        """First half of layer ``n``'s inverse: ``x <- x - v`` (``_steps.momentum_unstep_x``)."""

    @abc.abstractmethod
    def unstep_v(self, n: int, fx: torch.Tensor) -> None:
        """Second half: ``v <- (v - (1 - gamma) fx) / gamma`` (``_steps.momentum_unstep_v``)."""

    @abc.abstractmethod
    def finish_forward(self) -> None:
        """End of the forward pass: raise on any range violation seen during it."""

    def snapshot(self) -> MomentumArithmetic:
        """An independent walker from the current state (tensors shared, never mutated in place)."""
        return copy.copy(self)


class CouplingArithmetic(abc.ABC):
    """The two halves ``s = [x1, x2]`` of a RevNet state in some number format.

    A RevNet layer is two half steps with alternating roles (``_steps.half_step``): half step
    ``k`` adds ``h_k(s[1 - k % 2])`` to ``s[k % 2]``. Implementations: ``_FloatCoupling``,
    ``_ExactCoupling`` (int64 fixed point; no bit store is needed, additions are exact).

    Invariants: ``sub(i, n, h)`` undoes ``add(i, n, h)`` for the same ``h`` (bit for bit in
    the exact format); ``get(i)`` returns a float tensor that later updates do not modify in
    place; ``snapshot()`` gives an independent walker; ``finish_forward()`` raises on a range
    violation seen during the forward pass.
    """

    s: list  #: the two halves, in the format

    @abc.abstractmethod
    def encode(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        """Take the two halves (in float) into the format."""

    @abc.abstractmethod
    def get(self, i: int) -> torch.Tensor:
        """Half ``i`` as a float tensor."""

    @abc.abstractmethod
    def add(self, i: int, n: int, h: torch.Tensor) -> None:
        """``s[i] <- s[i] + h`` (layer ``n``, for error messages)."""

    @abc.abstractmethod
    def sub(self, i: int, n: int, h: torch.Tensor) -> None:
        """``s[i] <- s[i] - h``."""

    @abc.abstractmethod
    def finish_forward(self) -> None:
        """End of the forward pass: raise on any range violation seen during it."""

    def snapshot(self) -> CouplingArithmetic:
        c = copy.copy(self)
        c.s = list(self.s)
        return c


# --------------------------------------------------------------------------------------------
# Momentum ResNet
# --------------------------------------------------------------------------------------------
class _FloatMomentum(MomentumArithmetic):
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
        self.x = momentum_unstep_x(self.x, self.v)

    def unstep_v(self, n, fx):
        self.v = momentum_unstep_v(self.v, fx, self.gamma)

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


class _ExactMomentum(MomentumArithmetic):
    """int64 fixed-point states with a bit store; the inverse is bit-exact.

    With the fused kernels (``secondorder._fused``, chosen by ``secondorder.exact.set_fused``)
    each of ``step``, ``unstep_x``, ``unstep_v`` and ``unstep`` is one compiled
    kernel that also returns the dequantized position (cached for ``x_float``) and the
    range-check maxima; the eager operations are the fallback and give the same bits."""

    def __init__(self, gamma, x, bits=None):
        self.gamma = gamma
        self.c = 1 - gamma  # the same float factor the autograd path multiplies f by
        self.frac = _exact.rational_gamma(gamma, dyadic=x.dtype != torch.float64)
        self._init_state(x, bits)

    def _init_state(self, x, bits):
        """The format, the checks and the walk's caches (what every gamma representation shares)."""
        self.fmt = _exact.FixedPoint(x.dtype, bits)
        self.checks = _Checks(self.fmt)
        # below float64, |V| is also kept under 2**53 quanta, so that the bit store divides V by n
        # in exact float64 arithmetic (velocity range |v| < 2**(53 - bits): 2.1e6 at 32 bits)
        self.v_limit = 2.0 ** (53 - self.fmt.bits) if x.dtype != torch.float64 else None
        self._xf = None  # (X, X._version, float X) left by a fused kernel
        self._next = None  # (X, V, versions, X - V, its float) left by the fused unstep_v
        self._k = None  # the fused kernels' constants, built on first use
        self._owner = None  # id(self) when X, V and store.S may be updated in place (an id, not a
        # reference to self: a reference cycle would keep the int64 states alive until gc runs)

    def encode(self, x, v):
        self.checks.add("the input x", 0, x)
        self.checks.add("the initial velocity v0", 0, v, limit=self.v_limit)
        self.checks.raise_if_bad()
        self.X, self.V = self.fmt.quantize(x), self.fmt.quantize(v)
        v_bound = _exact.FLOAT_EXACT if self.v_limit is not None else 2**63
        self.store = self._new_store(v_bound)
        self._xf = None
        self._owner = id(self)  # fresh tensors from quantize and the store

    def _new_store(self, v_bound):
        """The bit store of the quantized velocity ``self.V`` (one fraction for every entry)."""
        return _exact.BitStore(self.V, self.frac, v_bound)

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
        if self._owner == id(self) and self.X.is_contiguous() and self.V.is_contiguous() and st.S.is_contiguous():
            return
        if x_too:
            self.X = self.X.clone(memory_format=torch.contiguous_format)
        self.V = self.V.clone(memory_format=torch.contiguous_format)
        st.S = st.S.clone(memory_format=torch.contiguous_format)
        self._owner = id(self)

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
        self.X = momentum_unstep_x(self.X, self.V)

    def unstep_v(self, n, fx):
        """Undo layer ``n``'s velocity update. The fused kernel also computes the previous layer's
        ``X - V`` (the next ``unstep_x``, which then only takes it), so a backward step costs one
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
        """``unstep_v`` for layer ``n``, then (for ``n > 0``) ``unstep_x`` of layer ``n - 1``:
        the backward loop ``unstep_x(); for n in reversed(range(N)): x = x_float(); fx = f(x);
        unstep(n, fx)`` visits the same states as calling the two separately (with the fused
        kernels both cost one call either way)."""
        self.unstep_v(n, fx)
        if n > 0:
            self.unstep_x()

    def finish_forward(self):
        self.checks.raise_if_bad()

    def snapshot(self):
        c = copy.copy(self)
        c.store = self.store.copy()
        return c


class _ExactMomentumPerFeature(_ExactMomentum):
    """``_ExactMomentum`` with per-element fractions ``n_i / d_i`` (eager integer path)."""

    def __init__(self, gamma, x, bits=None):
        self.gamma = gamma.detach().to(x.dtype)
        self.c = 1 - self.gamma  # the factor the autograd path multiplies f by
        self.c_max = float(self.c.abs().max())
        self.n_t, self.d_t, self.pairs = _pf.rational_gammas(gamma, x.dtype)
        self.n_t, self.d_t = self.n_t.to(x.device), self.d_t.to(x.device)
        self.frac = None
        self._init_state(x, bits)
        self._cw = self.c.to(self.fmt._work)

    def _new_store(self, v_bound):
        return _pf.TensorBitStore(self.V, self.n_t, self.d_t, self.pairs, v_bound)

    def _term(self, n, fx, check):
        if check:
            self.checks.add("(1 - gamma) * f(x)", n, fx, self.c_max)
        # round((1 - gamma_i) * f * 2**bits): the power of two scales exactly
        return torch.round(fx.to(self.fmt._work) * (self._cw * self.fmt.scale)).to(torch.int64)

    def _fused(self, fx=None):
        return None  # the fused kernels take scalar constants: the eager path (same bits)


def _make_exact_momentum(gamma, x, bits=None):
    """The exact arithmetic of a Momentum ResNet for a scalar or a per-feature gamma."""
    if not _pf.is_per_feature(gamma):
        g = float(gamma.detach()) if isinstance(gamma, torch.Tensor) else float(gamma)
        return _ExactMomentum(g, x, bits)
    # the fractions are those of gamma in x's dtype: the values the autograd forward multiplies by
    return _ExactMomentumPerFeature(gamma.detach().to(x.dtype), x, bits)


def _momentum_pass(layers, arith, x, v):
    """The forward pass of a Momentum ResNet in ``arith`` (float or exact), no graph."""
    arith.encode(x, v)
    for n in range(len(layers.functions)):
        arith.step(n, layers.call_forward(n, arith.x_float()))
    arith.finish_forward()


class _MomentumFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, x, v, gamma_t, *inputs):
        arith = run.forward(_momentum_pass, x, v)
        with torch.no_grad():
            x_out, v_out = arith.x_float(), arith.v_float()
            if x_out is x:  # depth 0 (Function outputs must not alias inputs)
                x_out, v_out = x_out.clone(), v_out.clone()
            if isinstance(arith, _FloatMomentum):
                # the walk starts from aliases of the outputs: holding the outputs themselves would
                # make a reference cycle output -> grad_fn -> ctx -> output that gc cannot free
                arith.encode(x_out.detach(), v_out.detach())
                run.scale = max(_norm(x, v), _norm(x_out, v_out))
        ctx.run = run
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None (no zero tensor)
        ctx.gamma_needs_grad = gamma_t.requires_grad
        ctx.gamma_shape = gamma_t.shape
        ctx.save_for_backward(x, *(() if run.v_zero else (v,)))
        return x_out, v_out

    @staticmethod
    def backward(ctx, gx, gv):
        _refuse_double_backward("a MomentumResNet")
        saved = ctx.saved_tensors
        run = ctx.run
        layers = run.layers
        arith = _walker(ctx)
        gamma = arith.gamma
        layers.begin_backward()
        if gx is None:  # only v_N was used (the gradients are not materialized: no zero tensors)
            gx = torch.zeros_like(saved[0])
        g_gamma = torch.zeros(ctx.gamma_shape, dtype=torch.float64, device=gx.device)
        # gx and gv arrive from autograd and are read only; from the first layer on they are this
        # loop's own tensors and are updated in place (fewer activation-sized temporaries)
        own_gx = own_gv = False
        gamma_inplace = not isinstance(gamma, torch.Tensor) or torch.broadcast_shapes(gamma.shape, gx.shape) == gx.shape
        for n in reversed(range(len(layers.functions))):
            arith.unstep_x()
            x = arith.x_float().detach().requires_grad_(True)
            fx = layers.call_backward(n, x)
            with torch.no_grad():
                arith.unstep_v(n, fx.detach())
                # the gradient reaching v_{n+1} (in gv's buffer once gv is this loop's own)
                g_tot = gx if gv is None else gv.add_(gx) if own_gv else gx + gv
                if ctx.gamma_needs_grad:  # v_{n+1} = gamma v_n + (1-gamma) f  =>  d/dgamma = v_n - f
                    g_gamma += _pf.sum_to(g_tot * (arith.v_float() - fx.detach()), ctx.gamma_shape).to(torch.float64)
                g_f = (1 - gamma) * g_tot
                if n == 0:  # the walk is done: check it before the last product, then free its state
                    _verify_momentum(arith, saved, run)
                    arith = None
            out = _Output(fx)
            del fx
            vjp = layers.vjp(n, out, x, g_f)
            del out, x, g_f
            with torch.no_grad():
                # gv = gamma * g_tot, in g_tot's buffer unless that is gx or gamma broadcasts wider
                gv = g_tot.mul_(gamma) if g_tot is not gx and gamma_inplace else gamma * g_tot
                own_gv = True
                del g_tot
                gx = gx.add_(vjp) if own_gx else gx + vjp
            own_gx = True
            del vjp
        if arith is not None:  # depth 0
            with torch.no_grad():
                _verify_momentum(arith, saved, run)
        if gv is None:  # depth 0
            gv = torch.zeros_like(gx)
        g_gamma_out = g_gamma.reshape(ctx.gamma_shape) if ctx.gamma_needs_grad else None
        return (None, gx, gv, g_gamma_out, *layers.grads)


def _verify_momentum(arith, saved, run):
    """The self-verification of a Momentum ResNet's walk back to its input ``saved``."""
    if isinstance(arith, _FloatMomentum):
        x_in = saved[0]
        v_in = torch.zeros_like(x_in) if run.v_zero else saved[1]
        _verify_float([arith.x, arith.v], [x_in, v_in], run.scale, "the MomentumResNet")
    else:
        _verify_exact([arith.X, arith.V], [saved[0], None if run.v_zero else saved[1]], arith.fmt, arith.store,
                      "the MomentumResNet")


def momentum_memory_free(functions, x, v, gamma, args, kwargs, mode, bits=None, hint=""):
    """Run a Momentum ResNet storing no activations (``mode`` is ``"exact"`` or ``"float"``).

    ``v`` is the initial velocity, or None for zero. ``gamma`` is a float, a 0-dim tensor (e.g. a
    learnable parameter) or a per-feature tensor broadcastable against ``x``
    (``secondorder._perfeature``). ``hint`` is appended to shape errors. Returns ``(x_N, v_N)``.
    """
    per_feature = _pf.is_per_feature(gamma)  # a tensor gamma of >= 1 dimension (secondorder._perfeature)
    g = gamma.detach().to(x.dtype) if per_feature else float(gamma.detach()) if isinstance(gamma, torch.Tensor) else float(gamma)
    layers = _Layers(functions, args, kwargs, x.device, hint=hint)
    v_zero = v is None
    if v_zero:
        v = torch.zeros_like(x)
    if mode == "exact":
        run = _Run(layers, lambda b: _make_exact_momentum(g, x, b), _ladder(x.dtype, bits), v_zero)
    else:
        run = _Run(layers, lambda b: _FloatMomentum(g, x), [None], v_zero)
    gamma_t = gamma if isinstance(gamma, torch.Tensor) else torch.tensor(g, dtype=x.dtype, device=x.device)
    return _MomentumFunction.apply(run, x, v, gamma_t, *layers.inputs())


# --------------------------------------------------------------------------------------------
# RevNet (additive coupling), as 2N half steps  a <- a + h(b)  with alternating roles
# --------------------------------------------------------------------------------------------
class _FloatCoupling(CouplingArithmetic):
    def encode(self, x1, x2):
        self.s = [x1, x2]

    def get(self, i):
        return self.s[i]

    def add(self, i, n, h):
        self.s[i] = half_step(self.s[i], h)

    def sub(self, i, n, h):
        self.s[i] = half_unstep(self.s[i], h)

    def finish_forward(self):
        pass


class _ExactCoupling(CouplingArithmetic):
    """int64 fixed-point RevNet states ``s = [X1, X2]``; ``add`` and ``sub`` run as one fused
    kernel each when ``secondorder._fused`` is on, which also leaves the dequantized state for
    ``get`` (the next half step reads the state just updated)."""

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
        self.s[i] = half_step(self.s[i], self.fmt.quantize(h))
        self.checks.add("the state x", n + 1, self.s[i], self.fmt.inv_scale)

    def sub(self, i, n, h):
        k = self._fused(self.s[i])
        if k is not None and h.shape == self.s[i].shape:
            out = _fused.call("coupling_sub", _fused.flat(self.s[i]), _fused.flat(h), k["k"], k["inv_scale"], self.fmt.dtype)
            if out is not None:
                self._update(i, out)
                return
        self.s[i] = half_unstep(self.s[i], self.fmt.quantize(h))

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


def _coupling_layers(F_functions, G_functions, args, kwargs, device, hint="", rule=None):
    """The RevNet's functions interleaved as half steps F_0, G_0, F_1, G_1, ...; ``rule(k, got)``
    words the shape error of half step ``k``."""
    interleaved = [h for pair in zip(F_functions, G_functions) for h in pair]
    return _Layers(interleaved, args, kwargs, device, _coupling_label, hint, rule)


class _CouplingFunction(torch.autograd.Function):
    """Half step k (k = 0 .. 2N-1): target ``t = k % 2`` gets ``h_k(state[1 - t])`` added."""

    @staticmethod
    def forward(ctx, run, x1, x2, *inputs):
        arith = run.forward(_coupling_pass, x1, x2)
        with torch.no_grad():
            y1, y2 = arith.get(0), arith.get(1)
            if y1 is x1:
                y1, y2 = y1.clone(), y2.clone()
            if isinstance(arith, _FloatCoupling):  # no reference cycle through the outputs
                arith.encode(y1.detach(), y2.detach())
                run.scale = max(_norm(x1, x2), _norm(y1, y2))
        ctx.run = run
        ctx.save_for_backward(x1, x2)
        return y1, y2

    @staticmethod
    def backward(ctx, g1, g2):
        _refuse_double_backward("a RevNet")
        x1, x2 = ctx.saved_tensors
        run = ctx.run
        layers = run.layers
        arith = _walker(ctx)
        layers.begin_backward()
        g = [g1, g2]
        own = [False, False]  # g[i] is this loop's own tensor (updated in place), not autograd's
        for k in reversed(range(len(layers.functions))):
            t = k % 2
            b = arith.get(1 - t).detach().requires_grad_(True)
            h = layers.call_backward(k, b)
            with torch.no_grad():
                arith.sub(t, k // 2, h.detach())
                if k == 0:  # the walk is done: check it before the last product, then free its state
                    _verify_coupling(arith, x1, x2, run)
                    arith = None
            out = _Output(h)
            del h
            vjp = layers.vjp(k, out, b, g[t])
            del out, b
            with torch.no_grad():
                g[1 - t] = g[1 - t].add_(vjp) if own[1 - t] else g[1 - t] + vjp
            own[1 - t] = True
            del vjp
        if arith is not None:  # depth 0
            with torch.no_grad():
                _verify_coupling(arith, x1, x2, run)
        return (None, g[0], g[1], *layers.grads)


def _verify_coupling(arith, x1, x2, run):
    """The self-verification of a RevNet's walk back to its input halves."""
    if isinstance(arith, _FloatCoupling):
        _verify_float(arith.s, [x1, x2], run.scale, "the RevNet")
    else:
        _verify_exact(arith.s, [x1, x2], arith.fmt, None, "the RevNet")


def _coupling_label(k):
    return (f"{'FG'[k % 2]} function", k // 2)


def coupling_memory_free(F_functions, G_functions, x1, x2, args, kwargs, mode, bits=None, hint="", rule=None):
    """Run a RevNet storing no activations (``mode`` is ``"exact"`` or ``"float"``); return ``(y1, y2)``."""
    layers = _coupling_layers(F_functions, G_functions, args, kwargs, x1.device, hint, rule)
    if mode == "exact":
        run = _Run(layers, lambda b: _ExactCoupling(x1, b), _ladder(x1.dtype, bits))
    else:
        run = _Run(layers, lambda b: _FloatCoupling(), [None])
    return _CouplingFunction.apply(run, x1, x2, *layers.inputs())


# --------------------------------------------------------------------------------------------
# Round trip in fixed point, for tests and teaching (secondorder.exact_roundtrip)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def momentum_roundtrip(functions, x, v, gamma, args, kwargs, bits=None, hint=""):
    """A Momentum ResNet run forward in exact fixed point, then inverted (``secondorder.exact_roundtrip``).

    ``v`` is the initial velocity or None (zero); ``gamma`` a float in (0, 1], or a per-feature
    tensor broadcastable against ``x`` (``secondorder._perfeature``). Returns the dict described in
    ``exact_roundtrip``.
    """
    v = torch.zeros_like(x) if v is None else v
    layers = _Layers(functions, args, kwargs, x.device, hint=hint)
    arith = _Run(layers, lambda b: _make_exact_momentum(gamma, x, b), _ladder(x.dtype, bits)).forward(_momentum_pass, x, v)
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


@torch.no_grad()
def coupling_roundtrip(F_functions, G_functions, x1, x2, args, kwargs, bits=None, rule=None):
    """A RevNet (halves ``x1``, ``x2``) run forward in exact fixed point, then inverted.

    Returns ``{"y": (y1, y2), "x": (x1', x2'), "bit_exact", "bits"}``: the forward output, the
    reconstructed halves and whether their int64 states equal the quantized input bit for bit.
    """
    layers = _coupling_layers(F_functions, G_functions, args, kwargs, x1.device, rule=rule)
    arith = _Run(layers, lambda b: _ExactCoupling(x1, b), _ladder(x1.dtype, bits)).forward(_coupling_pass, x1, x2)
    S0 = [arith.fmt.quantize(x1), arith.fmt.quantize(x2)]  # what encode started from
    out = {"y": (arith.get(0), arith.get(1)), "bits": arith.fmt.bits}
    layers.begin_backward()
    for k in reversed(range(len(layers.functions))):
        arith.sub(k % 2, k // 2, layers.call_backward(k, arith.get(1 - k % 2)))
        layers.restore()
    out.update(x=(arith.get(0), arith.get(1)), bit_exact=all(torch.equal(a, b) for a, b in zip(arith.s, S0)))
    return out
