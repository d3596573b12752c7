"""The package's architecture, checked on its source: imports go one way (no cycle between
modules, also through imports inside functions), the core never imports the edge (the
CLI, the plots, the experiments, the report), and every name imported from the package,
also inside a function that no test may reach, exists."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import diffeosense

ROOT = Path(diffeosense.__file__).parent
EDGE = ("diffeosense.cli", "diffeosense.plots", "diffeosense.experiments", "diffeosense.report")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """The absolute module name of a ``from ... import`` inside ``package``."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _package_of(path: Path) -> str:
    mod = _module(path)
    return mod if path.name == "__init__.py" else mod.rpartition(".")[0]


def _imports(path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, anywhere in the file."""
    package = _package_of(path)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("diffeosense")}
        elif isinstance(node, ast.ImportFrom):
            name = _resolve(node, package)
            if not name.startswith("diffeosense"):
                continue
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}  # `from . import x`: a module
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        # A package's __init__ runs before its modules: an import of a.b depends on a.b only.
        graph[mod] = {m for m in _imports(path) if m in files and m != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph):
    """Edges into a package's ``__init__`` from its own modules are the re-export pattern
    (the ``__init__`` imports them, they do not import it); drop them."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles():
    assert _cycles(_without_package_inits(_graph())) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_never_imports_the_edge():
    graph = _graph()
    bad = {m: sorted(d for d in deps if d.startswith(EDGE)) for m, deps in graph.items()
           if not m.startswith(EDGE) and m != "diffeosense"}
    assert {m: d for m, d in bad.items() if d} == {}


def _missing_names(path: Path, source: str | None = None) -> list[str]:
    """``from diffeosense.x import y`` in ``path`` (or in ``source``, read as if it were that
    file) where ``y`` is neither an attribute nor a submodule of ``diffeosense.x``."""
    package, out = _package_of(path), []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        name = _resolve(node, package)
        if not name.startswith("diffeosense"):
            continue
        module = importlib.import_module(name)
        for alias in node.names:
            if alias.name == "*" or hasattr(module, alias.name):
                continue
            try:
                importlib.import_module(f"{name}.{alias.name}")
            except ImportError:
                out.append(f"{_module(path)}:{node.lineno}: {name}.{alias.name}")
    return out


def test_every_imported_name_exists():
    # An import inside a function fails only when that function runs (a renamed helper
    # once broke `train --track-sensitivity` and nothing else).
    assert [m for p in sorted(ROOT.rglob("*.py")) for m in _missing_names(p)] == []


def test_the_name_checker_finds_a_missing_name():
    src = "from . import measure\n\ndef f():\n    from .measure import no_such_helper\n"
    assert _missing_names(ROOT / "cli" / "probe.py", src) == [
        "diffeosense.cli.probe:4: diffeosense.cli.measure.no_such_helper"]
