"""The manual (docs/) says what the product has, and only what it has:
every `nbh` command and configuration key is in it, the keys with the
defaults the code has; every command, module, make target and unit it shows
exists; the README's figures are the benchmarks' own. `make docs` builds it
with warnings as errors (.ci/run): broken links and references fail there."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

from nbhosting import cli, config

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def manual() -> str:
    return "\n".join(page.read_text() for page in PAGES)


def subcommands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(words, parser) of every command of `nbh`, groups included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*words, name), sub
                yield from subcommands(sub, (*words, name))


def shown_lines(text: str) -> list[str]:
    """What the manual shows as commands: the lines of its sh blocks, and
    its inline code, without comments and placeholders' brackets."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        joined = block.replace("\\\n", " ")
        lines += [line.split(" #", 1)[0].strip() for line in joined.splitlines()]
    lines += [" ".join(span.split()) for span in re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", text)]
    return [line for line in lines if line]


def shown(prefixes: tuple[str, ...]) -> list[list[str]]:
    found = []
    for line in shown_lines(manual()):
        for prefix in prefixes:
            if line.startswith(prefix + " ") or line == prefix:
                found.append(shlex.split(line.replace("[", " ").replace("]", " ").replace("...", " "))[1:])
    return found


def test_the_manual_is_read():
    assert len(PAGES) >= 8 and "nbh course create" in manual()
    assert ["course", "create", "python-mooc", "https://git.example.org/python-mooc.git"] in shown(("nbh",))


# -- nbh ----------------------------------------------------------------------

def test_every_nbh_command_is_in_the_manual():
    text = manual()
    missing = [" ".join(words) for words, _ in subcommands(cli.parser()) if f"nbh {' '.join(words)}" not in text]
    assert missing == []


def test_every_nbh_command_the_manual_shows_exists_with_its_options():
    checked = 0
    for argv in shown(("nbh",)):
        parser, words = cli.parser(), []
        for word in argv:
            choices = next((action.choices for action in parser._actions
                            if isinstance(action, argparse._SubParsersAction)), None)
            if choices is None or word.startswith("-"):
                break
            assert word in choices or not word.islower() or "/" in word or "." in word or "-" in word, (argv, word)
            if word not in choices:
                break
            parser, words = choices[word], [*words, word]
        assert words or not argv or argv[0].startswith("-") or argv[0].isupper(), argv  # nbh COMMAND --help
        options = {option for action in parser._actions for option in action.option_strings}
        for word in argv:
            if word.startswith("--"):
                assert word.split("=", 1)[0] in options, (argv, word)
        checked += 1
    assert checked > 40


def test_a_made_up_command_or_option_is_caught():
    """The check above, on what the manual must not show."""
    parser = cli.parser()
    groups = {words: sub for words, sub in subcommands(parser)}
    assert ("course", "frobnicate") not in groups
    options = {option for action in groups[("course", "create")]._actions for option in action.option_strings}
    assert "--branch" in options and "--colour" not in options


# -- configuration ------------------------------------------------------------

REFERENCE_ROW = re.compile(r"^\| `([a-z_]+)\.([a-z_]+)` \| `([^`]*)` \|", re.MULTILINE)


def test_every_configuration_key_is_in_the_reference_with_its_default():
    rows = {(section, key): default for section, key, default in REFERENCE_ROW.findall(manual())}
    for section, cls in config._SECTIONS.items():
        for field in dataclasses.fields(cls):
            assert (section, field.name) in rows, f"{section}.{field.name}"
            default = (field.default if field.default is not dataclasses.MISSING else field.default_factory())
            written = tomllib.loads(f"value = {rows.pop((section, field.name))}")["value"]
            assert written == (list(default) if isinstance(default, tuple) else default), f"{section}.{field.name}"
    assert rows == {}, "keys the code does not have"


def test_the_example_configuration_shows_every_key():
    example = (REPO / "packaging/nbhosting.toml.example").read_text()
    for section, cls in config._SECTIONS.items():
        assert f"[{section}]" in example
        for field in dataclasses.fields(cls):
            assert re.search(rf"^# {field.name} = ", example, re.MULTILINE), f"{section}.{field.name}"


# -- what else the manual runs ------------------------------------------------

def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))


def test_every_make_target_the_manual_shows_exists():
    targets = make_targets()
    shown_targets = {word for argv in shown(("make",)) for word in argv if "=" not in word and not word.startswith("-")}
    assert {"demo", "test", "docs", "bench", "rpm"} <= shown_targets
    assert shown_targets - targets == set()


def test_every_module_the_manual_runs_exists_with_its_words():
    """`python -m M WORD --flag`: M is found, and each of its words is one
    the module's code spells out (its argparse's, or bench's argv)."""
    runs = shown(("python -m", ".venv/bin/python -m", "python3 -m"))
    assert len(runs) > 10
    for argv in runs:
        module, words = argv[1], argv[2:]
        words = words[:words.index("--")] if "--" in words else words  # then a command run inside
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        origin = Path(spec.origin)
        source = (origin.parent / "__main__.py" if origin.name == "__init__.py" else origin).read_text()
        for word in words:
            if word.isupper() or "/" in word or "=" in word or "*" in word or word.startswith("'"):
                continue  # a placeholder, a path, a pattern
            assert f'"{word}"' in source, (argv, word)


UNIT = re.compile(r"\b(nbh-[a-z0-9-]+)(@[^\s`'\"|),]*)?\.(service|socket|timer|slice)\b")


def test_every_unit_the_manual_names_exists():
    named = set()
    for page in [*PAGES, REPO / "README.md"]:
        for name, instance, kind in UNIT.findall(page.read_text()):
            named.add(f"{name}@.{kind}" if instance else f"{name}.{kind}")
    assert "nbh-jupyter@.service" in named and "nbh-web.socket" in named
    assert sorted(unit for unit in named if not (REPO / "units" / unit).exists()) == []
    # and the other way: every unit is in the manual
    assert sorted(unit.name for unit in (REPO / "units").iterdir() if unit.name not in named) == []


def test_every_unit_documents_an_installed_page():
    for unit in (REPO / "units").iterdir():
        for link in re.findall(r"^Documentation=file:///usr/share/doc/nbhosting/(\S+)$", unit.read_text(), re.MULTILINE):
            assert (DOCS / link).exists(), (unit.name, link)


# -- the README -----------------------------------------------------------------

def test_the_readme_is_short_and_its_links_lead_somewhere():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert "docs/install.md" in links and "docs/images/lms-page.png" in links
    assert [link for link in links if not (REPO / link).exists()] == []


def test_the_readme_figures_are_the_benchmarks():
    """The headline figures, as the last `make bench-peer` and `make bench`
    wrote them (bench/*.json): a new run that changes them fails here until
    the README says the same."""
    readme = (REPO / "README.md").read_text()
    peer = json.loads((REPO / "bench/peer.json").read_text())
    results = json.loads((REPO / "bench/results.json").read_text())
    rows = {
        "cold start, request to Jupyter's answer": ("{:.2f} s", lambda r: r["cold_s"]["p50"]),
        "host CPU per cold start": ("{:.2f} s", lambda r: r["cold_cpu_s"]["p50"]),
        "open → first cell result, a new student in Chromium": ("{:.2f} s", lambda r: r["first_result_s"]["p50"]),
        "one idle server's memory (PSS)": ("{:.0f} MiB", lambda r: r["server_pss_kib"] / 1024),
    }
    for name, (form, value) in rows.items():
        row = f"| {name} | {form.format(value(peer['nbhosting']))} | {form.format(value(peer['asis']))} |"
        assert row in readme, row
    assert f"takes {results['entry']['warm_ms']['p50']:.1f} ms" in readme
