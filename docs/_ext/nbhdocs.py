"""What the manual shows that a file of the project already says: the
benchmarks' tables from bench/*.json and the package's modules from their
docstrings, made at each build so that they are never copied by hand."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

REPO = Path(__file__).resolve().parents[2]


def bench_tables(name: str) -> list[str]:
    """The Markdown tables that `python -m bench --table` (and bench.peer) print."""
    results = json.loads((REPO / "bench" / f"{name}.json").read_text())
    if name == "peer":
        return importlib.import_module("bench.peer.__main__").table(results).splitlines()
    lines = importlib.import_module("bench.__main__").table(results).splitlines()
    for key in ("disks", "releases", "statics"):  # measured alone, kept under their own key
        if key in results:
            lines += ["", *importlib.import_module(f"bench.{key}").table(results[key])]
    return lines


def module_lines() -> list[str]:
    """One row per module of nbhosting/: its name and its docstring's first sentence."""
    package = REPO / "nbhosting"
    rows = ["| module | why it is there |", "| --- | --- |"]
    for path in sorted(package.rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = " ".join(docstring.split("\n\n")[0].split()).replace("|", "\\|")
        rows.append(f"| `{path.relative_to(REPO)}` | {first} |")
    return rows


class Generated(SphinxDirective):
    """```{generated} bench results``` (or ``bench peer``, ``modules``)."""

    required_arguments = 1
    optional_arguments = 1

    def run(self):
        what = self.arguments
        if what[0] == "bench":
            lines = bench_tables(what[1])
            self.env.note_dependency(str(REPO / "bench" / f"{what[1]}.json"))
        elif what[0] == "modules":
            lines = module_lines()
        else:
            raise self.error(f"generated: unknown {what[0]!r}")
        node = nodes.container()
        self.state.nested_parse(StringList(lines), self.content_offset, node)
        return node.children


def setup(app):
    app.add_directive("generated", Generated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
