"""The page's export menu (api/nbconvert) is answered from the list the image
computed as it was built, not by importing nbconvert at every page; by
Jupyter itself when other exporters are installed
(images/jupyter/nbh_exporters.py)."""

from __future__ import annotations

import json

import pytest

from nbhosting import podman
from nbhosting.names import Instance

from .sandbox_helpers import server_journal
from .web_helpers import entry

pytestmark = pytest.mark.sandbox

NOTEBOOK = "w1/w1-s1-c1-intro"
COMPUTED = "import json, nbh_exporters; print(json.dumps(nbh_exporters.exporters()))"


def test_the_export_menu_comes_from_the_image(sandbox, course, student, stop):
    instance = Instance(course, student)
    stop(instance)
    entry(course, NOTEBOOK, student)
    answer = sandbox.api(instance, "api/nbconvert")
    assert "nbh_exporters: api/nbconvert answered from /opt/jupyter/share/nbhosting/exporters.json" \
        in server_journal(sandbox, instance)
    # What Jupyter would have answered, computed in the same container now.
    computed = sandbox.run(*podman.argv(["exec", instance.container, "python3", "-c", COMPUTED]))
    assert answer == json.loads(computed.stdout)
    assert {"html", "notebook", "script"} <= set(answer)


# An exporter installed in the image after the list was made, as a course's
# image may add one: a distribution in the user's site-packages.
ANOTHER_EXPORTER = """
import os, site, sys
import nbh_exporters
assert nbh_exporters.cached() == nbh_exporters.exporters(), "the image's list is not what is installed"
info = os.path.join(site.getusersitepackages(), "nbh_extra-1.0.dist-info")
os.makedirs(info)
with open(os.path.join(info, "METADATA"), "w") as f:
    f.write("Metadata-Version: 2.1\\nName: nbh-extra\\nVersion: 1.0\\n")
with open(os.path.join(info, "entry_points.txt"), "w") as f:
    f.write("[nbconvert.exporters]\\nextra = nbconvert.exporters:HTMLExporter\\n")
sys.path.append(site.getusersitepackages())  # as a server started after the install has it
assert "extra" in nbh_exporters.exporters()
print(nbh_exporters.cached())
"""


def test_with_another_exporter_installed_the_list_is_stale(sandbox):
    result = sandbox.in_image(ANOTHER_EXPORTER)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "None"
