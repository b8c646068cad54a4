"""Course repositories: in the sandbox, owned by the checkouts' account (for
nbh course create and the update units), and on the host (git alone); and
notebooks as text (MyST, percent)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import nbh

# -- in the sandbox ------------------------------------------------------------------

CONTAINERFILE = ("ARG NBH_BASE_IMAGE\nFROM $NBH_BASE_IMAGE\n"
                 "COPY extra.py /opt/jupyter/lib/python3.11/site-packages/nbh_extra.py\n")
EMPTY_NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def make_repo(sandbox, name: str, files: dict[str, str | bytes]) -> str:
    """A course repository owned by the checkouts' account, as git wants a local one."""
    repo = f"/var/lib/nbhosting/sandbox-repos/{name}"
    sandbox.run("rm", "-rf", repo)
    sandbox.run("install", "-d", "-o", "nbh-courses", "-g", "nbh-courses", repo)
    sandbox.run("git", "init", "--quiet", "--initial-branch=main", repo, user="nbh-courses")
    commit(sandbox, repo, files, "first")
    return repo


def commit(sandbox, repo: str, files: dict[str, str | bytes], message: str = "change") -> str:
    for relative, content in files.items():
        path = sandbox.path(f"{repo}/{relative}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    sandbox.run("chown", "-R", "nbh-courses:nbh-courses", repo)
    git = ["git", "-C", repo, "-c", "user.name=Teacher", "-c", "user.email=teacher@example.org"]
    sandbox.run(*git, "add", "--all", user="nbh-courses")
    sandbox.run(*git, "commit", "--quiet", "--message", message, user="nbh-courses")
    return sandbox.run(*git, "rev-parse", "--short", "HEAD", user="nbh-courses").stdout.strip()


def show(sandbox, course: str) -> dict[str, str]:
    result = nbh(sandbox, "course", "show", course)
    assert result.returncode == 0, result.stderr
    return {key.strip(): value.strip() for key, _, value in
            (line.partition(":") for line in result.stdout.splitlines() if not line.startswith("  "))}


# -- on the host: git alone ----------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_all(repo: Path, message: str = "change") -> str:
    git(repo, "add", "--all", "--force")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def write(repo: Path, relative: str, text: str = '{"cells": []}') -> None:
    path = repo / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# -- notebooks as text (jupytext): MyST markdown and the percent format --------------

MYST = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Lists

Some prose, then code.

```{code-cell} ipython3
print(sum([6, 7, 29]))
```
"""
PERCENT = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Loops

# %%
for n in range(3):
    print(n)
"""
