"""The package's imports run one way: no module imports a higher layer (db never imports report, executors
never import the CLI), no import circle (lazy imports in functions count too), the executor protocol knows
no Slurm type, and the CLI holds no SQL and no plotting. Read from the source with ast: nothing is imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"

# lowest first; a module may import its own layer and those below it
LAYERS = [
    ("foundations", ("harness", "harness.numerics", "harness.schema", "harness.resume", "harness.streams",
                     "harness.stats", "harness.checksums", "harness.disk",
                     "harness.plugins")),
    ("data, models and metrics", ("harness.datasets", "harness.models", "harness.metrics")),
    ("what a job is and what it leaves", ("harness.spec", "harness.shards")),
    ("the store", ("harness.db",)),
    ("computing", ("harness.train", "harness.packing", "harness.workers", "harness.evaluation", "harness.bench")),
    ("executors", ("harness.executors",)),
    ("reports", ("harness.report",)),
    ("the driver", ("harness.driver",)),
    ("the command line", ("harness.cli", "harness.__main__")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The harness modules that `path` imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in MODULES else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("harness"))
    return {name for name in names if name in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "harness" and module.startswith(prefix + ".")):
                best = index
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_runs_back_up():
    upward = [f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
              for module, targets in GRAPH.items() for target in targets if _layer(target) > _layer(module)]
    assert upward == []


def test_no_import_circle():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
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
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == []


def test_the_executor_protocol_knows_no_slurm():
    assert not GRAPH["harness.executors.base"] & {"harness.executors.slurm", "harness.executors.local"}
    assert "slurm" not in MODULES["harness.executors.base"].read_text().lower()


SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)\b", re.IGNORECASE)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("harness.cli")))
def test_the_cli_holds_no_sql_and_no_plotting(module):
    tree = ast.parse(MODULES[module].read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] == "matplotlib"}
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert [s for s in strings if SQL.match(s)] == []
    calls = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute)}
    assert not calls & {"execute", "executemany", "sql"}
