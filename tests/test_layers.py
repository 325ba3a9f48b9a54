"""The package's modules import each other without cycles, in layers.

The graph is read from the source (every ``import`` and ``from ... import`` of a
kaleem_telemetry module, the lazy ones inside functions and the type-only ones
included), so an import that would only cycle at run time under some call order
is caught as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kaleem_telemetry"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # ``from kaleem_telemetry import metrics`` imports the submodule;
                # ``from kaleem_telemetry import setup_telemetry`` the package.
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    """Return module -> the package modules it imports (itself excluded)."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        graph[name] = _imports(ast.parse(path.read_text()), modules) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


GRAPH = import_graph()

# Lower layers never reach the higher ones, even through other modules.
LAYERS = [
    # The metric families know nothing of how they are served or set up.
    ("kaleem_telemetry._metric_specs", "kaleem_telemetry.metrics"),
    ("kaleem_telemetry.metrics", "kaleem_telemetry.exposition"),
    # The exposition renders the families; it does not run a server.
    ("kaleem_telemetry.exposition", "kaleem_telemetry._metrics_server"),
    # The server is started by setup, never the other way round.
    ("kaleem_telemetry._metrics_server", "kaleem_telemetry._setup"),
    # The guard, the bounded runner and the compatibility fence are leaves.
    ("kaleem_telemetry._guard", "kaleem_telemetry.logs"),
    ("kaleem_telemetry._compat", "kaleem_telemetry.tracing"),
    ("kaleem_telemetry._bounded", "kaleem_telemetry.tracing"),
    # Redaction is below everything that emits: logs, spans, Sentry.
    ("kaleem_telemetry.redaction", "kaleem_telemetry.logs"),
    ("kaleem_telemetry.redaction", "kaleem_telemetry.tracing"),
    ("kaleem_telemetry.redaction", "kaleem_telemetry.sentry"),
    # Propagation reads headers; the job decorator built on it is above it.
    ("kaleem_telemetry.propagation", "kaleem_telemetry.decorators"),
    # Integrations sit on top: the decorators and the package root never reach them.
    ("kaleem_telemetry.decorators", "kaleem_telemetry.integrations.pika"),
    ("kaleem_telemetry.decorators", "kaleem_telemetry.integrations.aio_pika"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations.pika"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations.aio_pika"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations._messaging"),
    # The dashboard and rule generators read the contract only, never the live
    # families or the pipeline; nothing at run time imports them (the CLI does).
    ("kaleem_telemetry._observability", "kaleem_telemetry.metrics"),
    ("kaleem_telemetry._observability", "kaleem_telemetry._setup"),
    ("kaleem_telemetry", "kaleem_telemetry._observability"),
    ("kaleem_telemetry.metrics", "kaleem_telemetry._observability"),
    ("kaleem_telemetry._setup", "kaleem_telemetry._observability"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations.redis"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations.httpx"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations.requests"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations.sqlalchemy"),
    ("kaleem_telemetry", "kaleem_telemetry.integrations.pymongo"),
    ("kaleem_telemetry._setup", "kaleem_telemetry.integrations._http_client"),
    ("kaleem_telemetry.db", "kaleem_telemetry.integrations._clients"),
]


class TestImportGraph:
    def test_the_graph_is_read(self) -> None:
        """The graph has the known edges (so an empty graph cannot pass the tests below)."""
        assert "kaleem_telemetry.metrics" in GRAPH["kaleem_telemetry.exposition"]
        assert "kaleem_telemetry._metric_specs" in GRAPH["kaleem_telemetry.metrics"]

    def test_no_import_cycle(self) -> None:
        """No two modules of the package import each other, directly or through others."""
        assert cycles(GRAPH) == []

    def test_a_cycle_is_found(self) -> None:
        """The cycle finder finds a three-module cycle and leaves the acyclic rest out."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        assert cycles(graph) == [["a", "b", "c"]]

    @pytest.mark.parametrize(("lower", "higher"), LAYERS)
    def test_a_lower_layer_never_imports_a_higher_one(self, lower: str, higher: str) -> None:
        """The lower module does not reach the higher one through any chain of imports."""
        assert higher not in _reaches(GRAPH, lower) | {lower}
