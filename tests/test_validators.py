"""Notebooks are checked against nbformat's schema by validators generated
as the image was built, not compiled at the first notebook of every server;
by nbformat's own when the schema is not the one they were made from
(images/jupyter/nbh_validators.py)."""

from __future__ import annotations

import re

import pytest

from nbhosting import podman
from nbhosting import sandbox as nbh_sandbox
from nbhosting.names import Instance

from .test_prestart import server_journal
from .test_web import entry

pytestmark = pytest.mark.sandbox

NOTEBOOK = "w1/w1-s1-c1-intro"

# In the image: every nbformat 4 version checked, good and bad notebooks,
# while compiling a validator fails; then, with a schema the image's modules
# were not made from, nbformat's own (compiled) validator.
CHECK = """
import json
import fastjsonschema, nbformat
from nbformat import validator
import nbh_validators

nbh_validators.install()
compile_ = fastjsonschema.compile
def refuse(*args, **kwargs):
    raise AssertionError("a validator compiled at run time")
fastjsonschema.compile = refuse

def notebook(minor, source="x = 1"):
    nb = {"nbformat": 4, "nbformat_minor": minor, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}]}
    if minor >= 5:
        nb["cells"][0]["id"] = "c1"
    return nb

for minor in range(6):
    nbformat.validate(notebook(minor))
    made = validator.validators[("fastjsonschema", 4, minor, False)]._validator
    assert made.__globals__["__name__"] == f"nbh_validators_v4.v4_{minor}", made.__globals__["__name__"]
    try:
        nbformat.validate(notebook(minor, source=42))
    except nbformat.ValidationError as error:
        assert "42" in str(error), str(error)
    else:
        raise AssertionError(f"v4.{minor}: a bad notebook passed")
    nbformat.reads(json.dumps(notebook(minor)), as_version=4)

fastjsonschema.compile = compile_
validator.validators.clear()
nbh_validators.digest = lambda schema: "another schema"
nbformat.validate(notebook(5))
made = validator.validators[("fastjsonschema", 4, 5, False)]._validator
assert not made.__globals__.get("__name__", "").startswith("nbh_validators_v4")  # fastjsonschema's exec
print("ok")
"""


def test_notebooks_are_checked_by_the_validators_made_with_the_image(sandbox):
    result = sandbox.run(*podman.argv(["run", "--rm", "--network=none", nbh_sandbox.IMAGE,
                                       "python3", "-c", CHECK]), check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_a_student_server_uses_them(sandbox, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    entry(course, NOTEBOOK, student)
    sandbox.api(instance, f"api/contents/{NOTEBOOK}.ipynb")
    journal = server_journal(sandbox, instance)
    assert re.search(r"nbh_validators: v4\.\d notebooks checked by the validator made with the image", journal), \
        journal[-3000:]
    assert "checked by nbformat's own" not in journal
