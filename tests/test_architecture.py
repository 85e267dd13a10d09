"""The package's shape (docs/architecture.md): private implementation modules behind one
``__init__``, import arrows that only point down (no cycle, lazy imports included), and a public
surface that is exactly what the API reference documents."""

import ast
import re
from pathlib import Path

import secondorder as so

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "secondorder"
PUBLIC_MODULES = {"__init__", "__main__", "compat", "data", "exact", "linear"}


def _modules():
    """``{dotted name: path}`` for every module of the package (subpackages included)."""
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["secondorder", *parts])] = path
    return out


def _package_imports(name, path, modules):
    """The package modules ``name`` imports anywhere in its body (also inside functions)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - node.level + 1]
                target = ".".join(parent + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def test_no_import_cycle():
    modules = _modules()
    graph = {m: _package_imports(m, p, modules) for m, p in modules.items()}
    # a package imports its submodules; importing a package from its own submodule is what counts
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if n.startswith(m + "."):
                continue  # a package importing its own submodules is not an arrow up
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_implementation_modules_are_private():
    top = {p.stem for p in PKG.glob("*.py")} | {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    public = {m for m in top if not m.startswith("_")}
    assert public <= PUBLIC_MODULES, f"unexpected public modules: {sorted(public - PUBLIC_MODULES)}"
    sub = [p for p in (PKG / "linear").glob("*.py") if p.name != "__init__.py"] if (PKG / "linear").is_dir() else []
    assert all(p.stem.startswith("_") for p in sub), "linear's implementation modules must be private"


def test_public_names_are_exactly_the_documented_ones():
    api = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: secondorder\.(\w+)", api, flags=re.M))
    documented |= set(re.findall(r"`secondorder\.(\w+)`", api))
    public = set(so.__all__) - {"__version__"}
    assert public - documented == set(), f"public but not in docs/api.md: {sorted(public - documented)}"
    directives = set(re.findall(r"^::: secondorder\.(\w+)", api, flags=re.M))
    assert directives <= public, f"documented but not public: {sorted(directives - public)}"
    for name in so.__all__:
        assert hasattr(so, name), name
    exported = {n for n in vars(so) if not n.startswith("_")}
    submodules = {n for n in exported if getattr(getattr(so, n), "__name__", "").startswith("secondorder.")}
    assert exported - set(so.__all__) == set(), f"importable but not in __all__: {sorted(exported - set(so.__all__))}"
    assert submodules <= {"compat", "data", "exact", "linear"}
