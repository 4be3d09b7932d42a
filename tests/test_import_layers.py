"""The package's import graph (grimp, the graph import-linter reads): no cycles, and the layers
below, each importing only from the layers under it.

A cycle made ``config.validate`` import the strategy, task, optimizer and population registries
(13 modules in one cycle, 58 imports moved into functions to dodge them); the graph counts
imports written inside functions too, so such a dodge does not hide a cycle.
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")

#: From the top down: a layer may import the layers below it, never one above.
LAYERS = (
    "jaxhpo.cli",
    "jaxhpo.api",
    "jaxhpo.run",
    "jaxhpo.reporting",
    "jaxhpo.strategies",
    "jaxhpo.population",
    "jaxhpo.tasks",
    "jaxhpo.models",
    "jaxhpo.optim",
    "jaxhpo.space",
    "jaxhpo.conditions",
    "jaxhpo.dims",
    "jaxhpo.config",
)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("jaxhpo")


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_cycles(graph):
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    """The check above could fail: a two-module cycle is found."""

    class Graph:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(m):
            return {"a": {"b"}, "b": {"a"}, "c": {"a"}}[m]

    assert _cycles(Graph()) == [["a", "b"]]


def test_layers_import_only_downwards(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS)
    found = sorted(f"{d.importer} -> {d.imported}" for d in illegal)
    assert not found, "imports against the layers: " + "; ".join(found)


def test_config_knows_no_registry(graph):
    """Parsing a config imports no strategy, task, optimizer or population: the registries
    resolve names in jaxhpo.run.validate."""
    imported = graph.find_upstream_modules("jaxhpo.config")
    assert imported <= {"jaxhpo.strict_yaml"}, sorted(imported)


#: Modules that import inside functions on purpose: the entry points, so that ``import jaxhpo``
#: and ``jaxhpo --help`` do not start JAX (the command line sets XLA's flags first).
ENTRY_POINTS = {"jaxhpo/cli.py", "jaxhpo/api.py", "jaxhpo/data/cli.py"}


def test_imports_inside_functions_only_where_they_keep_import_light():
    """An import of the package written inside a function is a dodge of a cycle unless it is in
    an entry point or says why (``# lazy: ...`` on its line)."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    found = []
    for path in sorted((root / "jaxhpo").rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel in ENTRY_POINTS:
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                ours = isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxhpo")
                if ours and "# lazy:" not in lines[node.lineno - 1]:
                    found.append(f"{rel}:{node.lineno}")
    assert not found, "imports inside functions: " + ", ".join(found)
