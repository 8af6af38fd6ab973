"""The modules of quranft.cluster import each other without a cycle (issue 14 item 6: nodeagent and podworker
imported each other; podworker now names what it needs from the agent in podworker.NodeServices).

Imports are read with ast, so ones under `if TYPE_CHECKING:` or inside functions count too."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from quranft.cluster import nodeagent, podworker

PACKAGE = "quranft.cluster"
PACKAGE_DIR = Path(podworker.__file__).parent


def imported_siblings(path: Path) -> set[str]:
    """The quranft.cluster modules that the module at `path` imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = PACKAGE if node.level == 1 else (node.module or "") if node.level == 0 else ""
            base = f"{base}.{node.module}" if node.level == 1 and node.module else base
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}  # `from . import volumes`
    modules = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {"__init__"}
    return {n.removeprefix(PACKAGE + ".") for n in names if n.startswith(PACKAGE + ".")} & modules - {path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: imported_siblings(p) for p in sorted(PACKAGE_DIR.glob("*.py")) if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it began, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep] if dep in path else [module, dep]
            if dep not in state and (cycle := visit(dep, path + [dep])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert "podworker" in graph["nodeagent"]  # the agent runs pod workers
    assert {"images", "volumes", "podstatus"} <= graph["podworker"]  # `from . import` and `from .x import`


def test_quranft_cluster_has_no_import_cycle():
    graph = import_graph()
    assert "nodeagent" not in graph["podworker"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


@pytest.mark.parametrize("module", sorted(import_graph()))
def test_each_module_imports_on_its_own(module):
    importlib.import_module(f"{PACKAGE}.{module}")


def test_node_agent_provides_what_a_pod_worker_needs():
    """Every NodeServices member is a NodeAgent method or an attribute its __init__ sets."""
    members = {n for n in vars(podworker.NodeServices) if not n.startswith("_")}
    agent = next(c for c in ast.parse(Path(nodeagent.__file__).read_text()).body
                 if isinstance(c, ast.ClassDef) and c.name == "NodeAgent")
    init = next(f for f in agent.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    assigned = {t.attr for node in ast.walk(init) if isinstance(node, (ast.Assign, ast.AnnAssign))
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                for t in ast.walk(target) if isinstance(t, ast.Attribute)}
    methods = {n for n in vars(nodeagent.NodeAgent) if callable(getattr(nodeagent.NodeAgent, n))}
    assert members and members <= assigned | methods, members - assigned - methods
