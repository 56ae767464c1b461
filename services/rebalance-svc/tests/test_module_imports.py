"""rebalance_svc's modules import each other in one direction: no cycle, counting imports
under `if TYPE_CHECKING:`, and no import of a module of the package hidden in a function
(the usual way to dodge a cycle). Read from the source with `ast`, nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import rebalance_svc

PACKAGE = "rebalance_svc"
ROOT = Path(rebalance_svc.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join((PACKAGE, *parts)).removesuffix(".__init__")


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The package's modules an import statement names."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = module.rsplit(".", node.level)[0]
            base = f"{package}.{base}" if base else package
        names = {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in names if n in MODULES and n != PACKAGE}


def _imports(module: str) -> tuple[set[str], list[str]]:
    """The package's modules `module` imports, and those it imports inside a function."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    edges: set[str] = set()
    hidden: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    hidden += [
                        f"{module}.{node.name} imports {n}" for n in _imported(inner, module)
                    ]
        if isinstance(node, ast.Import | ast.ImportFrom):
            edges |= _imported(node, module)
    return edges, hidden


def import_graph() -> dict[str, set[str]]:
    return {module: _imports(module)[0] for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the path that closes it (depth-first search)."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            found.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert cycles(graph) == []
    # the modules the brief of the split names, so the check above is about the real graph
    assert "rebalance_svc.preparation" in graph["rebalance_svc.scan"]
    assert "rebalance_svc.preparation" in graph["rebalance_svc.service"]
    assert "rebalance_svc.scan" in graph["rebalance_svc.service"]


def test_no_module_of_the_package_is_imported_inside_a_function() -> None:
    assert [h for module in MODULES for h in _imports(module)[1]] == []


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
