"""The engine's shape, read from its source with ``ast`` (issue 9, "untangle the engine").

* the modules import each other in one direction: no import cycle, counting imports made
  inside functions;
* an engine module imports other engine modules at the top, never inside a function;
* no module imports another module's private (``_name``) names: what is shared is public;
* no function is longer than ``MAX_FUNCTION_LINES`` in the modules listed in ``FINISHED``
  (lines from ``def`` to the function's last line, docstring included);
* frozen values are not written once built: what the engine makes on first read (a trade's
  sentence, a drift report's items, a reference's lookups) is kept beside them.

``NOT_YET`` lists the modules held to the rules later, and why; when one is done, take it out
of ``NOT_YET`` and add it to ``FINISHED``.
"""

from __future__ import annotations

import ast
import gc
from dataclasses import dataclass
from pathlib import Path

import ballast_engine
import pytest
from ballast_engine.builders import synthetic_sma_book
from ballast_engine.model import FIRST_READS, AccountDrift, RebalanceInput, Trade
from ballast_engine.rebalance import rebalance
from ballast_engine.validate import ref_index

PACKAGE = "ballast_engine"
ROOT = Path(ballast_engine.__file__).parent
MAX_FUNCTION_LINES = 80

# Modules whose own imports are not checked yet (their module-level imports still count
# towards cycles), and why.
NOT_YET: dict[str, str] = {}

# Private names still imported across modules until their owner makes them public:
# (importer, module, name). An entry that no longer occurs fails the test: delete it.
PENDING_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()

# Modules held to the function-length limit.
FINISHED = (
    "ballast_engine.account_drift",
    "ballast_engine.amounts",
    "ballast_engine.builders",
    "ballast_engine.cli",
    "ballast_engine.commands",
    "ballast_engine.core",
    "ballast_engine.derived",
    "ballast_engine.drift",
    "ballast_engine.engine_cli",
    "ballast_engine.errors",
    "ballast_engine.harvesting",
    "ballast_engine.model",
    "ballast_engine.rebalance",
    "ballast_engine.restrictions",
    "ballast_engine.scenario",
    "ballast_engine.sleeves",
    "ballast_engine.strategic",
    "ballast_engine.tactical",
    "ballast_engine.tax",
    "ballast_engine.tax.choice",
    "ballast_engine.tax.cli",
    "ballast_engine.tax.corporate",
    "ballast_engine.tax.errors",
    "ballast_engine.tax.harvest",
    "ballast_engine.tax.ledger",
    "ballast_engine.tax.lots",
    "ballast_engine.tax.model",
    "ballast_engine.tax.tradefile",
    "ballast_engine.tax.wash",
    "ballast_engine.taxaware",
    "ballast_engine.validate",
)


@dataclass(frozen=True)
class Import:
    importer: str
    module: str  # the engine module imported
    names: tuple[str, ...]  # names taken from it (``from m import a, b``); () for ``import m``
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(ROOT.rglob("*.py"))}


def _absolute(importer: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def engine_imports(name: str, tree: ast.Module, known: set[str]) -> list[Import]:
    """Every import of an engine module in ``tree``, with where it is made."""
    out: list[Import] = []
    is_package = name in {m.rsplit(".", 1)[0] for m in known if "." in m}

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name in known:
                        out.append(Import(name, alias.name, (), child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                source = _absolute(name, child, is_package)
                if source.split(".")[0] != PACKAGE:
                    continue
                plain = []
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    if sub in known:  # ``from package import submodule``
                        out.append(Import(name, sub, (), child.lineno, in_function))
                    else:
                        plain.append(alias.name)
                if plain:
                    out.append(Import(name, source, tuple(plain), child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return out


def import_graph() -> tuple[dict[str, set[str]], list[Import]]:
    trees = modules()
    known = set(trees)
    graph: dict[str, set[str]] = {m: set() for m in trees}
    every: list[Import] = []
    for name, tree in trees.items():
        for imp in engine_imports(name, tree, known):
            every.append(imp)
            if imp.in_function and name in NOT_YET:
                continue  # not checked yet (see NOT_YET)
            if imp.module != name:
                graph[name].add(imp.module)
    return graph, every


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that starts and ends with the same module), if any."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def walk(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state:
                found = walk(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = walk(m)
            if found:
                return found
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports() -> set[tuple[str, str, str]]:
    """(importer, module, name) for each private name one module takes from another."""
    _, every = import_graph()
    return {
        (imp.importer, imp.module, n)
        for imp in every
        if imp.importer not in NOT_YET and imp.module != imp.importer
        for n in imp.names
        if _private(n)
    }


def function_lengths(tree: ast.Module) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                assert child.end_lineno is not None
                out.append((prefix + child.name, child.end_lineno - child.lineno + 1))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


# --------------------------------------------------------------------------------------------


def test_no_import_cycle() -> None:
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_are_composed_in_one_direction() -> None:
    """The core knows nothing of the layers above it; only the entry module knows them all."""
    graph, _ = import_graph()

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for n in graph[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    layers = ["ballast_engine.harvesting", "ballast_engine.taxaware", "ballast_engine.core"]
    assert "ballast_engine.core" in reaches("ballast_engine.taxaware")
    assert "ballast_engine.taxaware" in reaches("ballast_engine.harvesting")
    for low, high in zip(layers[1:], layers, strict=False):
        assert high not in reaches(low), f"{low} reaches up to {high}"
    assert "ballast_engine.rebalance" not in set().union(*(reaches(m) for m in layers))
    for m in layers:
        assert m in graph["ballast_engine.rebalance"]  # the dispatch knows every layer


def test_no_function_level_engine_imports() -> None:
    _, every = import_graph()
    inside = [
        f"{imp.importer}:{imp.line} imports {imp.module}"
        for imp in every
        if imp.in_function and imp.importer not in NOT_YET
    ]
    assert not inside, "import at the top of the module instead:\n" + "\n".join(inside)


def test_no_private_names_across_modules() -> None:
    found = private_imports()
    new = sorted(found - PENDING_PRIVATE_IMPORTS)
    assert not new, "make these public (with a docstring) instead:\n" + "\n".join(map(str, new))
    stale = sorted(PENDING_PRIVATE_IMPORTS - found)
    assert not stale, "no longer imported, delete from PENDING_PRIVATE_IMPORTS: " + str(stale)


def test_functions_are_short_in_finished_modules() -> None:
    trees = modules()
    assert set(FINISHED) <= set(trees), set(FINISHED) - set(trees)
    assert not set(FINISHED) & set(NOT_YET)
    long = [
        f"{m}.{fn}: {n} lines"
        for m in FINISHED
        for fn, n in function_lengths(trees[m])
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, f"split into steps of at most {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_the_checks_catch_what_they_are_for() -> None:
    """The cycle finder and the private-import reader on small made-up cases."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    src = (
        "from ballast_engine.model import Trade, _hidden\n"
        "def f():\n"
        "    from ballast_engine import core\n"
    )
    known = {"ballast_engine.model", "ballast_engine.core", "ballast_engine.x"}
    found = engine_imports("ballast_engine.x", ast.parse(src), known)
    assert [(i.module, i.names, i.in_function) for i in found] == [
        ("ballast_engine.model", ("Trade", "_hidden"), False),
        ("ballast_engine.core", (), True),
    ]
    tree = ast.parse("def f():\n    x = 1\n\n    return x\n")
    assert function_lengths(tree) == [("f", 4)]


def test_no_writes_to_frozen_objects_outside_construction() -> None:
    """``object.__setattr__`` only where a frozen object is built (``deferred``)."""
    trees = modules()
    writes = []
    for m in FINISHED:
        for fn in ast.walk(trees[m]):
            if not isinstance(fn, ast.FunctionDef) or fn.name in ("deferred", "__init__"):
                continue
            for node in ast.walk(fn):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "__setattr__"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "object"
                ):
                    writes.append(f"{m}.{fn.name}:{node.lineno}")
    assert not writes, "keep the value beside the object (derived.DerivedValues):\n" + "\n".join(
        writes
    )


def test_first_reads_leave_the_frozen_result_as_built() -> None:
    book = synthetic_sma_book(3, 10, seed=2)
    result = rebalance(RebalanceInput(book.accounts[0], book.reference))
    trade = result.trades[0]
    slot = vars(Trade)["explanation"]  # the field's slot, unset while the sentence waits
    with pytest.raises(AttributeError):
        slot.__get__(trade, Trade)
    text = trade.explanation
    assert text and trade.explanation is text  # made once, then the same
    with pytest.raises(AttributeError):
        slot.__get__(trade, Trade)  # still unset: the sentence is kept beside the trade
    items = result.drift_after.items
    assert items and result.drift_after.items is items
    with pytest.raises(AttributeError):
        vars(AccountDrift)["items"].__get__(result.drift_after, AccountDrift)
    kept = len(FIRST_READS)
    del result, trade, items
    gc.collect()
    assert len(FIRST_READS) < kept  # dropped with the result


def test_reference_lookups_are_kept_beside_the_reference() -> None:
    ref = synthetic_sma_book(2, 5, seed=3).reference
    index = ref_index(ref)
    assert ref_index(ref) is index
    assert not any(k.startswith("_") for k in vars(ref))  # nothing written into it
