"""`make demo`: a course and a student's running server in the sandbox."""

from __future__ import annotations

import sys
from pathlib import Path

from . import sandbox, tokens
from .names import Instance

COURSE, STUDENT = "demo", "student"
NGINX = "http://127.0.0.1:8780"
NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "hello", "metadata": {},
               "outputs": [], "source": ["print('hello from nbhosting')"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def main() -> int:
    import json
    instance = Instance(COURSE, STUDENT)
    sandbox.run(["mkdir", "-p", f"/var/lib/nbhosting/courses/{COURSE}"])
    sandbox.run(["nbh", "start", COURSE, STUDENT], timeout=120)
    workspace = sandbox.path(f"/var/lib/nbhosting/workspaces/{instance.path}")
    hello = workspace / "hello.ipynb"
    if not hello.exists():  # never overwrite the student's work
        hello.write_text(json.dumps(NOTEBOOK, indent=1))
        sandbox.run(["chown", "nbh-jupyter:nbh-jupyter", f"/var/lib/nbhosting/workspaces/{instance.path}/hello.ipynb"])
    token = tokens.server_token(tokens.read_secret(sandbox.path(str(tokens.SECRET_PATH))), instance.path)
    module = f"{Path(sys.executable).parent.parent.name}/bin/python -m nbhosting.sandbox"
    print(f"""
The sandbox is up, with {instance.path}'s server running.

  open:     {NGINX}{instance.base_url}notebooks/hello.ipynb?token={token}
            (from another machine: ssh -L 8780:127.0.0.1:8780 this-host)
  a shell:  {module} exec -- bash
  status:   {module} exec -- nbh status
  logs:     {module} exec -- nbh logs {COURSE} {STUDENT}
  stop it:  make demo-down
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
