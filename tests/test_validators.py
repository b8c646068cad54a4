"""Notebooks are checked against nbformat's schema by validators generated
as the image was built, not compiled at the first notebook of every server;
by nbformat's own when the schema is not the one they were made from. The
same for the settings' schemas, which the page's settings request checks
against JSON Schema's meta-schema (images/jupyter/nbh_validators.py). And
the server lists its kernels without importing IPython
(images/jupyter/jupyter_server_config.py)."""

from __future__ import annotations

import re

import pytest

from nbhosting.names import Instance

from .sandbox_helpers import server_journal
from .web_helpers import entry

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

# In the image: every settings schema it has passes the generated validator,
# jsonschema never asked, and is left as it was read; a bad schema is refused by jsonschema, which says
# why; with a meta-schema the module was not made from, jsonschema alone.
SETTINGS_CHECK = """
import copy, glob, json, sys
import jsonschema
from jsonschema import Draft7Validator
import nbh_validators

original = Draft7Validator.check_schema
nbh_validators.install_schema_check()
assert Draft7Validator.check_schema.nbh_validators
paths = glob.glob(sys.prefix + "/share/jupyter/lab/schemas/**/*.json", recursive=True)
assert len(paths) > 50, paths
iter_errors = Draft7Validator.iter_errors
def refuse(*args, **kwargs):
    raise AssertionError("a schema checked by jsonschema")
Draft7Validator.iter_errors = refuse
for path in paths:
    with open(path) as f:
        schema = json.load(f)
    read = copy.deepcopy(schema)
    Draft7Validator.check_schema(schema)
    assert schema == read, f"{path}: changed by its check"
Draft7Validator.iter_errors = iter_errors
try:
    Draft7Validator.check_schema({"type": "object", "properties": {"a": {"type": 12}}})
except jsonschema.SchemaError as error:
    assert "12" in str(error), str(error)
else:
    raise AssertionError("a bad schema passed")

Draft7Validator.check_schema = original
nbh_validators.digest = lambda schema: "another meta-schema"
nbh_validators.install_schema_check()
assert not getattr(Draft7Validator.check_schema, "nbh_validators", False)
print("ok")
"""

# In the image: the server's kernel spec manager, as its configuration makes
# it, lists the image's kernel and has not imported IPython for it.
KERNELS = """
import os, sys
os.makedirs("/run/nbh", exist_ok=True)
with open("/run/nbh/token", "w") as f:
    f.write("a token")
from jupyter_client.kernelspec import KernelSpecManager
from traitlets.config.loader import PyFileConfigLoader
config = PyFileConfigLoader("jupyter_server_config.py", path="/etc/jupyter").load_config()
manager = config.ServerApp.get("kernel_spec_manager_class", KernelSpecManager)  # Jupyter's default
specs = manager(config=config).get_all_specs()
assert "python3" in specs, specs
assert "IPython" not in sys.modules, "IPython imported"
print("ok")
"""


def test_notebooks_are_checked_by_the_validators_made_with_the_image(sandbox):
    result = sandbox.in_image(CHECK)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_settings_schemas_are_checked_by_the_validator_made_with_the_image(sandbox):
    result = sandbox.in_image(SETTINGS_CHECK)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_the_server_lists_its_kernels_without_importing_ipython(sandbox):
    result = sandbox.in_image(KERNELS)
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
    assert "nbh_validators: settings schemas checked by the validator made with the image" in journal
    # The page's first lists, answered (the settings' schemas checked, the kernels found).
    assert "@jupyterlab/notebook-extension:tracker" in {p["id"] for p in sandbox.api(instance, "lab/api/settings")["settings"]}
    assert "python3" in sandbox.api(instance, "api/kernelspecs")["kernelspecs"]
