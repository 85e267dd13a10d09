"""Named mutations of the implementation, to prove that the theory claims can fail.

Each mutation replaces one function (or method) of ``secondorder`` by a subtly wrong version, at
every place it is looked up at call time (a function imported by name, ``from ._steps import
momentum_step``, is a separate binding in the importing module, so each binding is patched).
:data:`MUTATIONS` lists, for each, the claims that must notice it: ``(script, name substring)``
pairs. ``tests/test_theory_mutations.py`` applies each mutation with pytest's ``monkeypatch``, runs only
those claims (quick settings), and asserts every one of them fails, while the unmutated run passes.

``python -m theory._mutations`` prints the table (mutation -> claims that caught it), running each
mutation's claims once.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field

import torch

import secondorder as so

# the private modules themselves, where the names are looked up at call time
_disc = importlib.import_module("secondorder._discretize")
_lin = importlib.import_module("secondorder.linear")
# the package and its modules: a function is looked up at call time in the module that calls it
_LIN = [_lin] + [importlib.import_module(f"secondorder.linear.{m}")
                 for m in ("_scalar", "_matrix", "_spectral", "_construct")]
_nets = importlib.import_module("secondorder._nets")
_ode = importlib.import_module("secondorder._ode")
_rev = importlib.import_module("secondorder._reversible")
_split = importlib.import_module("secondorder._splitting")
_steps = importlib.import_module("secondorder._steps")


@dataclass
class Mutation:
    """A named change: :meth:`patches` returns ``(object, attribute, replacement)`` triples built
    by ``make()`` (the replacements call the originals captured at import); ``catches`` lists
    ``(script, name substring)`` of the claims that must fail under it."""

    name: str
    description: str
    make: object
    catches: list = field(default_factory=list)

    def patches(self):
        """The ``(object, attribute, replacement)`` triples of this mutation."""
        return self.make()


# originals, captured at import (before any patch)
_momentum_step = _steps.momentum_step
_coupling_step = _steps.coupling_step
_gamma_from_eps = _disc.gamma_from_eps
_psi = _lin.psi
_Psi = _lin.Psi
_analyse = importlib.import_module("secondorder.linear._spectral")._analyse
_m_eps = _lin.m_eps
_ode_init = _ode._ODE.__init__
_strang_gamma = _split.strang_gamma


def _bind_all(name, fn, modules):
    return [(m, name, fn) for m in modules if hasattr(m, name)]


def _momentum(fn):
    # momentum_step is bound in steps, nets and reversible (and the package namespace)
    return _bind_all("momentum_step", fn, [_steps, _nets, _rev, so])


def _swap_gamma():
    def step(x, v, fx, gamma):
        v = (1 - gamma) * v + gamma * fx
        return x + v, v

    return _momentum(step)


def _drop_one_minus_gamma():
    def step(x, v, fx, gamma):
        v = gamma * v + fx
        return x + v, v

    return _momentum(step)


def _halve_eps():
    def gamma_from_eps(eps, depth, t1=1.0):
        _gamma_from_eps(eps, depth, t1)  # validation as before, then 1 - h/(eps/2)
        return 0.0 if eps == 0 else max(0.0, 1.0 - 2.0 * (t1 / depth) / float(eps))

    return _bind_all("gamma_from_eps", gamma_from_eps, [_disc, so])


def _psi_half_eps():
    def psi(lam, eps, t1=1.0):
        return _psi(lam, eps / 2, t1)

    import theory.representability as rep

    return _bind_all("psi", psi, [*_LIN, so, rep])


def _Psi_half_eps():
    def Psi(theta, eps, t1=1.0):
        return _Psi(theta, eps / 2, t1)

    import theory.nesting as nest
    import theory.representability as rep

    return _bind_all("Psi", Psi, [*_LIN, so, rep, nest])


def _drop_parity():
    def analyse(D, eps, merge=True):
        info, problems, m = _analyse(D, eps, merge)
        if eps == 0:  # forget Culver's condition on negative eigenvalues
            problems = [p for p in problems if "Culver" not in p]
        return info, problems, m

    return _bind_all("_analyse", analyse, _LIN)


def _m_eps_shifted():
    def m_eps(eps, t1=1.0):
        m, lam = _m_eps(eps, t1)
        return 0.9 * m, lam  # 10% too high a threshold

    import theory.nesting as nest
    import theory.representability as rep

    return _bind_all("m_eps", m_eps, [*_LIN, so, rep, nest])


def _m_eps_not_monotone():
    def m_eps(eps, t1=1.0):
        # the threshold of 1/eps: a set that shrinks with eps (no longer nested)
        return _m_eps(1.0 / eps, t1) if eps > 0 else _m_eps(eps, t1)

    import theory.nesting as nest
    import theory.representability as rep

    return _bind_all("m_eps", m_eps, [*_LIN, so, rep, nest])


def _contracting_coupling():
    def coupling_step(x1, x2, F, G):
        y1 = 0.9 * x1 + F(x2)
        y2 = x2 + G(y1)
        return y1, y2

    return _bind_all("coupling_step", coupling_step, [_steps, _nets, _rev, so])


def _second_order_node():
    def init(self, F, eps, t1, method, rtol, atol, adjoint, options):
        # a NeuralODE (eps == 0) secretly built as eps x'' + x' = F with eps = 0.05
        if not isinstance(eps, _ode.nn.Parameter) and eps == 0.0:
            eps = 0.05
        _ode_init(self, F, eps, t1, method, rtol, atol, adjoint, options)

    return [(_ode._ODE, "__init__", init)]


def _ode_eps_half():
    def init(self, F, eps, t1, method, rtol, atol, adjoint, options):
        if not isinstance(eps, _ode.nn.Parameter) and eps > 0:
            eps = eps / 2  # the solver's damping is wrong by 2
        _ode_init(self, F, eps, t1, method, rtol, atol, adjoint, options)

    return [(_ode._ODE, "__init__", init)]


def _ignore_init_velocity():
    original = _nets.MomentumResNet._start  # captured when the mutation is made, before patching

    def start(self, x, v0):
        return original(self, x, v0) if v0 is not None else torch.zeros_like(x)

    return [(_nets.MomentumResNet, "_start", start)]


def _strang_euler_gamma():
    def strang_gamma(eps, h):
        _strang_gamma(eps, h)  # validation as before, then the Euler scheme's 1 - h/eps
        return 0.0 if eps == 0 else max(0.0, 1.0 - float(h) / float(eps))

    return [(_split, "strang_gamma", strang_gamma)]


def _strang_no_final_drift():
    def forward(self, x, *args, v0=None, return_velocity=False, **kwargs):
        v = self._start(x, v0)
        z = x if v is None else x + 0.5 * v
        z, v = _nets.MomentumResNet.forward(self, z, *args, v0=v, return_velocity=True, **kwargs)
        return (z, v) if return_velocity else z  # x_N = z_N: the last half drift is missing

    return [(_split.StrangMomentumResNet, "forward", forward)]


R, C, F, E = "representability", "continuous_limit", "fixed_points", "expressivity"
S = "splitting"
MUTATIONS = [
    Mutation("swap_gamma", "v <- (1 - gamma) v + gamma f(x) in the momentum step", _swap_gamma,
             [(F, "momentum: det of 1 layer"), (F, "== heavy ball"), (C, "linear closed form")]),
    Mutation("drop_one_minus_gamma", "v <- gamma v + f(x) (no (1 - gamma) factor)", _drop_one_minus_gamma,
             [(F, "Jacobian block dv'/dx"), (F, "== heavy ball"), (C, "linear closed form")]),
    Mutation("halve_eps", "gamma = 1 - h/(eps/2) in the gamma <-> eps map", _halve_eps,
             [(C, "linear closed form"), (C, "order of x_N -> closed form")]),
    Mutation("psi_half_eps", "psi evaluated at eps/2", _psi_half_eps,
             [(R, "psi = scalar ODE solution"), (R, "psi(-1/(4 eps))")]),
    Mutation("Psi_half_eps", "the matrix map Psi evaluated at eps/2", _Psi_half_eps,
             [(R, "Psi = so.SecondOrderODE time-t1 map (eps=0.5")]),
    Mutation("drop_culver_parity", "eps = 0 criterion without Culver's parity condition", _drop_parity,
             [(R, "eps = 0 (Culver)"), (R, "eps = 0: c * reflection")]),
    Mutation("m_eps_shifted", "threshold m_eps 10% too high", _m_eps_shifted,
             [(R, "m_1 = -0.613499"), (R, "criterion threshold on diag(mu, 1) = independent min of psi (eps=1.0)"),
              (R, "nesting: is_representable = ")]),
    Mutation("m_eps_not_monotone", "threshold of 1/eps instead of eps (sets not nested)", _m_eps_not_monotone,
             [(R, "nesting: representable at eps =>"), (R, "m_eps strictly decreasing")]),
    Mutation("contracting_coupling", "RevNet coupling y1 = 0.9 x1 + F(x2)", _contracting_coupling,
             [(F, "revnet: det of 1 coupling"), (F, "revnet: det of 3 coupling")]),
    Mutation("second_order_node", "NeuralODE secretly solves 0.05 x'' + x' = F", _second_order_node,
             [(C, "NeuralODE on a linear F = expm(A)"), (C, "eps -> 0: |x_eps(1) - x_0(1)| slope")]),
    Mutation("ode_eps_half", "SecondOrderODE solves with eps/2", _ode_eps_half,
             [(R, "Psi = so.SecondOrderODE time-t1 map (eps=0.5"), (C, "solver matches psi_eps")]),
    Mutation("ignore_init_velocity", "MomentumResNet starts from v_0 = 0 whatever init_velocity says",
             _ignore_init_velocity, [("initial_velocity", "Momentum ResNet, v_0 = B x_0 learned")]),
    Mutation("strang_euler_gamma", "the splitting's kick with gamma = 1 - h/eps instead of exp(-h/eps)",
             _strang_euler_gamma, [(S, "strang: order of x_N"), (S, "linear closed form S^-1 M^N S")]),
    Mutation("strang_no_final_drift", "the splitting network returns z_N = x_N + v_N/2 (no last half drift)",
             _strang_no_final_drift, [(S, "strang: order of x_N"), (S, "linear closed form S^-1 M^N S")]),
]
BY_NAME = {m.name: m for m in MUTATIONS}
# catches that need a training run (tests/test_theory_mutations.py runs them under the ``slow`` mark)
SLOW_CATCHES = {
    "second_order_node": [(E, "neural_ode: trajectories never cross")],  # measured: 4547 inversions
}


def apply(mutation, setattr_fn):
    """Apply ``mutation`` with ``setattr_fn(obj, name, value)`` (e.g. ``monkeypatch.setattr``)."""
    for obj, name, value in mutation.patches():
        setattr_fn(obj, name, value)


def run_claims(catches, quick=True, seed=0):
    """Run only the claims named by ``catches`` (``[(script, substring)]``); returns
    ``{(script, substring): [Claim, ...]}``."""
    from theory.__main__ import run_script

    out = {}
    scripts = {}
    for script, sub in catches:
        scripts.setdefault(script, []).append(sub)
    for script, subs in scripts.items():
        claims = run_script(script, quick, seed, only=subs)
        for sub in subs:
            out[(script, sub)] = [c for c in claims if sub in c.name]
    return out


def behaviour_changes(mutation):
    """A direct probe that the patch changes what the library computes (not only the claims)."""
    import numpy as np

    name = mutation.name
    sin, cos = torch.nn.Tanh(), torch.nn.Sigmoid()
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    if name in ("swap_gamma", "drop_one_minus_gamma"):
        net = so.MomentumResNet([sin] * 3, gamma=0.9)
        return net(x)
    if name == "ignore_init_velocity":
        return so.MomentumResNet([sin] * 3, gamma=0.9, init_velocity=cos)(x)
    if name == "halve_eps":
        return so.discretize(so.SecondOrderODE(lambda z: -z, eps=1.0), 8).gamma
    if name == "contracting_coupling":
        return so.RevNet([sin], [cos])(torch.tensor([[0.3, -0.2, 0.5, 0.1]],
                                                                                           dtype=torch.float64))
    if name in ("second_order_node",):
        return so.NeuralODE(lambda z: -z)(x)
    if name == "ode_eps_half":
        return so.SecondOrderODE(lambda z: -z, eps=1.0)(x)
    if name == "psi_half_eps":
        return _lin.psi(-3.0, 1.0)
    if name == "Psi_half_eps":
        return float(np.abs(_lin.Psi(-3.0 * np.eye(2), 1.0)).sum())
    if name == "drop_culver_parity":
        return _lin.is_representable(torch.diag(torch.tensor([-1.0, 1.0])).numpy(), 0.0)
    if name.startswith("strang"):
        return so.discretize(so.SecondOrderODE(lambda z: -z, eps=1.0), 8, scheme="strang")(x)
    if name.startswith("m_eps"):
        return _lin.m_eps(2.0)[0]
    return None


def main():
    """Print the mutation table: for each mutation, which of its listed claims failed."""

    class Patcher:
        def __init__(self):
            self.saved = []

        def __call__(self, obj, name, value):
            self.saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)

        def undo(self):
            for obj, name, value in reversed(self.saved):
                setattr(obj, name, value)
            self.saved.clear()

    p = Patcher()
    ok = True
    for m in MUTATIONS:
        apply(m, p)
        try:
            res = run_claims(m.catches)
        finally:
            p.undo()
        caught = [f"{s}: {sub}" for (s, sub), cs in res.items() if cs and all(not c.passed for c in cs)]
        missed = [f"{s}: {sub}" for (s, sub), cs in res.items() if not cs or any(c.passed for c in cs)]
        ok &= not missed
        print(f"| {m.name} | {m.description} | {'; '.join(caught)} | {'; '.join(missed) or '-'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
