"""The package's modules import one another without a cycle (issue 27):
each can be read, and tested, knowing only those below it. Read with ast,
imports inside functions included (a late import only hides a cycle).

The same for bench/, and the tests' own rule: a test module imports
helper modules and conftest.py, never another test module (whose tests,
fixtures and module-level state would come along)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nbhosting"
TESTS = ROOT / "tests"
BENCH = ROOT / "bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module this one names in an import, absolute, and `from x import y`'s
    x.y too (y may be a module): some are not modules, which the callers drop."""
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
    return found


def imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` this one imports."""
    return {module for module in imported_names(path) if module in modules and module != module_name(path)}


def graph(folder: Path = PACKAGE) -> dict[str, set[str]]:
    paths = sorted(folder.rglob("*.py"))
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


def test_no_module_of_the_tests_imports_a_test_module():
    """Helpers are in tests/*_helpers.py, shared fixtures in conftest.py."""
    found = {(module, target) for module, targets in graph(TESTS).items() for target in targets
             if target.rpartition(".")[2].startswith("test_")}
    assert found == set()


def test_bench_has_no_import_cycle():
    """What the bench modules share is in bench/common.py, not bench/__main__.py."""
    edges = {module: {m for m in targets if m not in ("bench", "bench.peer")}
             for module, targets in graph(BENCH).items()}
    assert "bench.firstresult" in edges["bench.kernel"]  # read, late imports too
    assert cycles(edges) == []


def test_bench_imports_no_test_module():
    """Bench may use the tests' helpers (tests.lti_platform, tests.chromium_setup), not their tests."""
    for path in BENCH.rglob("*.py"):
        names = imported_names(path)
        assert not {name for name in names if name.startswith("tests.test_")}, path
