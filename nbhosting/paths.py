"""Where nbhosting keeps things; the environment overrides them for tests."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("NBH_DATA_DIR", "/var/lib/nbhosting"))
CONF_DIR = Path(os.environ.get("NBH_CONF_DIR", "/etc/nbhosting"))
COURSES_DIR = DATA_DIR / "courses"
WORKSPACES_DIR = DATA_DIR / "workspaces"
# What each course's image build made (nbh-course-build@): builds/<course>.json.
BUILDS_DIR = DATA_DIR / "builds"
# Each course's settings (git URL, branch, image), written by `nbh course`.
COURSE_SETTINGS_DIR = CONF_DIR / "courses"
# The students' shared pages (nbh_menus in the image): shared/<course>/<id>/.
SHARED_DIR = DATA_DIR / "shared"
# Each pair's token generation, bumped by `nbh revoke`: tokens/<course>/<student>.
TOKENS_DIR = DATA_DIR / "tokens"
# What the package installs for nginx to serve: error pages, the statistics
# pages' plotting libraries (_static/, `make install`).
SHARE_DIR = Path(os.environ.get("NBH_SHARE_DIR", "/usr/share/nbhosting"))
STATIC_DIR = SHARE_DIR / "_static"
