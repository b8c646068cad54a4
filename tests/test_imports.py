"""The package's modules import one another without a cycle (issue 27):
each can be read, and tested, knowing only those below it. Read with ast,
imports inside functions included (a late import only hides a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nbhosting"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules this one imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = f"{base}.{node.module}" if node.level and node.module else base if node.level else node.module
            found.add(source)
            found |= {f"{source}.{alias.name}" for alias in node.names}  # from . import courses
    return {module for module in found if module in modules and module != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports(path, modules) for path in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for following in sorted(edges[node]):
            if state.get(following) == "open":
                found.append(trail[trail.index(following):] + [following])
            elif following not in state:
                visit(following, [*trail, following])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_the_graph_is_read():
    edges = graph()
    assert "nbhosting.cli" in edges and "nbhosting.courses" in edges["nbhosting.cli"]
    assert "nbhosting.web.base" in edges["nbhosting.web.staff"]


def test_no_module_of_the_package_imports_itself_back():
    # the package's __init__ is imported by each of its modules: not an edge
    edges = {module: {m for m in targets if m not in ("nbhosting", "nbhosting.web")}
             for module, targets in graph().items()}
    assert cycles(edges) == []


def test_the_product_imports_nothing_of_the_development_tools():
    """devtools/ (the sandbox, the demo, rpminstall) is not in the package,
    nor in the RPM: a module of the package that imported it would fail there."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            assert not any(name.split(".")[0] in ("devtools", "tests", "bench") for name in names), (path, names)


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
