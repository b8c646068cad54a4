"""The manual: Sphinx with MyST Markdown, built offline by `make docs`
(warnings are errors there)."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent)]  # its extension; bench and the package

project = "nbhosting"
author = "the nbhosting team"
extensions = ["myst_parser", "nbhdocs"]
myst_heading_anchors = 3          # [text](operate.md#idle-servers)
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Jupyter notebooks for MOOC students, on systemd and podman"}
html_static_path = []
suppress_warnings = []
