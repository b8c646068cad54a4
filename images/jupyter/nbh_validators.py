"""Jupyter checks every notebook it reads or saves against nbformat's JSON
schema. nbformat's validator is Python source that fastjsonschema generates
from the schema and compiles, in each server process, at the first notebook
of each format version: 0.02 to 0.03 CPU second at every start, on the
server's request path.

The source depends only on the schema: the image generates it once, as it is
built (``python -m nbh_validators``, in install), as modules that are
byte-compiled with the rest. This server extension hands them to nbformat
for each format version whose schema is the one they were made from, and
leaves nbformat to compile its own otherwise (a course's image may bring
another nbformat).

The same holds for JupyterLab's settings: the page's ``lab/api/settings``
checks each of the ~90 plugins' schemas against JSON Schema's Draft 7
meta-schema with jsonschema, 0.02 CPU second at each page. The image
generates a validator of that meta-schema too; a schema it passes is
valid, and one it does not is checked by jsonschema as before, which
says why.
"""

import copy
import hashlib
import importlib
import json
import os
import re
import sysconfig

import nbformat
from nbformat import v4, validator
from nbformat.json_compat import JsonSchemaValidator

# Generated, in the environment's site-packages: nbformat 4's validators and,
# despite the name, the settings schemas' meta-schema's.
PACKAGE = "nbh_validators_v4"
META_MODULE = "draft7_meta"  # in it: the settings schemas' meta-schema


def _jupyter_server_extension_points():
    return [{"module": "nbh_validators"}]


def schema(minor: int) -> dict:
    return validator._get_schema_json(v4, version=4, version_minor=minor)


def digest(schema_json: dict) -> str:
    return hashlib.sha256(json.dumps(schema_json, sort_keys=True).encode()).hexdigest()


def generate(folder: str) -> None:
    """One module per nbformat 4 minor version, and one for JSON Schema's
    Draft 7 meta-schema, each with its schema's digest."""
    import fastjsonschema

    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, "__init__.py"), "w").close()
    for major, minor in v4.nbformat_schema:
        if major is None:  # the latest, under its own number too
            continue
        schema_json = schema(minor)
        with open(os.path.join(folder, f"v4_{minor}.py"), "w") as f:
            f.write(f"SCHEMA_SHA256 = {digest(schema_json)!r}\n")
            f.write(fastjsonschema.compile_to_code(schema_json))
    from jsonschema import Draft7Validator

    meta = copy.deepcopy(Draft7Validator.META_SCHEMA)  # fastjsonschema changes what it is given
    made_for = digest(meta)
    # jsonschema only reads the schema; fastjsonschema by default fills in the
    # meta-schema's defaults, which would change what the page is sent.
    code = fastjsonschema.compile_to_code(meta, use_default=False)
    entry = re.search(r"^def (validate\w*)\(", code, re.M).group(1)
    with open(os.path.join(folder, f"{META_MODULE}.py"), "w") as f:
        f.write(f"SCHEMA_SHA256 = {made_for!r}\n")
        f.write("from decimal import Decimal\n")  # used (multipleOf), not always imported by the code
        f.write(code)
        f.write(f"\nvalidate = {entry}\n")


def precompiled(cls, version, minor):
    """nbformat's validator `cls` (fastjsonschema's) for that version, made
    from the image's module; None if there is none or its schema is not this one."""
    if version != 4 or not isinstance(minor, int) or cls.name != "fastjsonschema":
        return None
    try:
        module = importlib.import_module(f"{PACKAGE}.v4_{minor}")
    except ImportError:
        return None
    schema_json = schema(minor)
    if getattr(module, "SCHEMA_SHA256", None) != digest(schema_json):
        return None
    checker = cls.__new__(cls)
    JsonSchemaValidator.__init__(checker, schema_json)  # its errors' details, as nbformat's own
    checker._validator = module.validate
    return checker


def install(log=None) -> None:
    """nbformat's get_validator, given the image's validators first."""
    original = validator.get_validator
    if getattr(original, "nbh_validators", False):
        return

    def get_validator(version=None, version_minor=None, relax_add_props=False, name=None):
        # nbformat's defaults, which its key has (validate asks with no minor first)
        if version is None:
            version = nbformat.current_nbformat
        if version == 4 and version_minor is None:
            version_minor = v4.nbformat_minor
        if name is None and not relax_add_props:
            cls = validator.get_current_validator()
            key = (cls.name, version, version_minor, relax_add_props)
            if key not in validator.validators:
                try:
                    checker = precompiled(cls, version, version_minor)
                except Exception:  # nbformat changed inside: its own validator, as without us
                    checker = None
                if checker is not None:
                    validator.validators[key] = checker
                if log:
                    log.info("nbh_validators: v%s.%s notebooks checked by %s", version, version_minor,
                             "the validator made with the image" if checker else "nbformat's own")
        return original(version, version_minor, relax_add_props=relax_add_props, name=name)

    get_validator.nbh_validators = True
    validator.get_validator = get_validator


def install_schema_check(log=None) -> None:
    """jsonschema's Draft 7 check_schema, the image's validator first."""
    from jsonschema import Draft7Validator

    original = Draft7Validator.check_schema
    if getattr(original, "nbh_validators", False):
        return
    try:
        module = importlib.import_module(f"{PACKAGE}.{META_MODULE}")
        made_for = module.SCHEMA_SHA256 == digest(Draft7Validator.META_SCHEMA)
    except Exception:  # not generated, or jsonschema changed inside: its own, as without us
        made_for = False
    if log:
        log.info("nbh_validators: settings schemas checked by %s",
                 "the validator made with the image" if made_for else "jsonschema alone")
    if not made_for:
        return

    def check_schema(cls, schema, *args, **kwargs):
        if cls is Draft7Validator and not args and not kwargs:
            try:
                module.validate(schema)
                return None
            except Exception:  # invalid, or unsure: jsonschema says
                pass
        return original.__func__(cls, schema, *args, **kwargs)

    check_schema.nbh_validators = True
    Draft7Validator.check_schema = classmethod(check_schema)


def _load_jupyter_server_extension(serverapp):
    install(serverapp.log)
    install_schema_check(serverapp.log)


if __name__ == "__main__":
    generate(os.path.join(sysconfig.get_paths()["purelib"], PACKAGE))
