"""The shape of the code a newcomer takes over: small modules, an import graph without
cycles, runs created in one place."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 450  # hard limit; about 400 is the aim (runner/testing/ is exempt)


def test_no_module_in_runner_is_over_the_line_limit() -> None:
    runner = ROOT / "runner"
    too_long = {str(path.relative_to(ROOT)): n for path in sorted(runner.rglob("*.py"))
                if (runner / "testing") not in path.parents
                and (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert too_long == {}, f"split these by noun (at most {MAX_LINES} lines): {too_long}"


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        # Iterative, so a deep import chain cannot exhaust Python's recursion limit.
        work = [(node, iter(sorted(edges.get(node, ()))))]
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_import_graph_has_no_cycle() -> None:
    """Every import that runs (function-level ones too); ``if TYPE_CHECKING:`` imports,
    which never run, are left out."""
    graph = grimp.build_graph("runner", "gates", exclude_type_checking_imports=True)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert cycles(edges) == [], "modules that import each other, directly or not"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_runs_are_created_in_one_place() -> None:
    """Only runner/run_creation.py asks a store to create a run (the stores define it)."""
    callers = []
    for path in sorted((ROOT / "runner").rglob("*.py")):
        if path.parent.name in ("store", "testing") or path.name == "run_creation.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "create_run" \
                    and not (isinstance(node.func.value, ast.Name)
                             and node.func.value.id == "run_creation"):
                callers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert callers == [], "create runs with runner.run_creation: " + ", ".join(callers)
