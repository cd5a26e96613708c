"""The layering DESIGN.md §3 promises, checked on the source: the core knows no family.

* no module of the core (``nnvtv/``) imports ``nnvtv.adapters`` (built-in families reach the
  core only through the entry-point group, like third-party plug-ins);
* no import cycle among nnvtv's modules, counting imports inside functions too (only
  ``if TYPE_CHECKING:`` blocks are left out);
* every package folder is listed in pyproject's ``packages`` (a missing one would be left out
  of a regular install), and the built-in plug-ins are declared as entry points.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (pyproject checks only)

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"nnvtv": REPO / "nnvtv", "nnvtv.adapters": REPO / "adapters"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, root in ROOTS.items():
        for path in root.rglob("*.py"):
            if "weights" in path.parts:
                continue
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Modules of nnvtv that ``name`` imports (anywhere but under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names]
            targets = [s for s in subs if s in MODULES]
            if len(targets) < len(subs):
                targets.append(module)
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_core_imports_no_adapter_module():
    core = [m for m in GRAPH if not m.startswith("nnvtv.adapters")]
    offenders = {m: sorted(d for d in GRAPH[m] if d.startswith("nnvtv.adapters")) for m in core}
    assert not {m: d for m, d in offenders.items() if d}


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles


def test_the_checker_sees_a_cycle_and_a_core_import(tmp_path):
    # the two checks above are only worth something if they can fail
    saved = dict(GRAPH)
    try:
        GRAPH["nnvtv.sites"] = GRAPH["nnvtv.sites"] | {"nnvtv.model"}
        with pytest.raises(AssertionError):
            test_no_import_cycle()
        GRAPH["nnvtv.find"] = GRAPH["nnvtv.find"] | {"nnvtv.adapters.hf_vit"}
        with pytest.raises(AssertionError):
            test_the_core_imports_no_adapter_module()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_is_listed_for_installation():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert packages == listed


def test_builtin_plugins_are_entry_points():
    eps = _pyproject()["project"]["entry-points"]["nnvtv.adapters"]
    for value in eps.values():
        module, _, attr = value.partition(":")
        assert module in MODULES, value
        assert attr == "PLUGIN", value
    # every family module that holds a PLUGIN is declared
    declared = {v.partition(":")[0] for v in eps.values()}
    holders = {m for m, p in MODULES.items() if m.startswith("nnvtv.adapters") and "\nPLUGIN" in p.read_text()}
    nested = {m for m in holders if any(m != d and m.startswith(d + ".") for d in declared)}
    assert holders - nested == declared
