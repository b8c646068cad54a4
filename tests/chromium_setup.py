"""Debian's Chromium as it runs here, headless: for the tests' browser
(tests/browser_helpers.py) and bench's first result (bench/firstresult.py),
which share it without importing a test module. Nothing but constants: no
selenium, no pytest."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# As root, without a display, a GPU, /dev/shm room or the internet.
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
)
