"""The File menu's cost: ``python -m bench --menus [BASELINE_TAR]``.

- Share: from the request (nbh/share on the student's server, which renders
  the saved notebook) to the page read through nginx, for a notebook of 50
  cells with 5 figures (PNG outputs of about 85 KiB each, a large matplotlib figure).
- Cold open: the entry URL to the notebook page (bench/common.py's
  open_notebook), with this checkout's image, and, given the tarball of an
  earlier test image (BASELINE_TAR, e.g. one of main's
  /var/cache/nbhosting/jupyter-test-*.tar), with that image, alternately, in
  one run: the extension's cost side by side.
"""

from __future__ import annotations

import base64
import json
import random
import statistics
import struct
import sys
import time
import zlib
from pathlib import Path

from nbhosting import access, podman
from devtools import sandbox
from nbhosting.names import Instance

from .common import fetch, lms_client, open_notebook, percentiles, write_key

COURSE, BASE_COURSE = "bench-menus", "bench-menus-base"
BIG = "w1/fifty-cells.ipynb"
INTRO = "w1/intro"
BASE_IMAGE = "localhost/nbhosting/jupyter:baseline"
RUNS = 7


def png(width: int, height: int, seed: int) -> bytes:
    """A valid PNG of noisy bands: compresses like a plot, not like a blank."""
    rng = random.Random(seed)
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        shade = (y * 255) // height
        rows += bytes((shade + rng.randrange(2) * 8) % 256 if x % 7 else 255 for x in range(width * 3))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b""))


def fifty_cells() -> dict:
    cells = []
    for i in range(50):
        if i % 10 == 5:
            outputs = [{"output_type": "display_data", "metadata": {}, "data": {
                "image/png": base64.b64encode(png(400, 300, i)).decode(), "text/plain": ["<Figure>"]}}]
            source = f"plt.plot(data[{i}])\nplt.show()"
        elif i % 2:
            outputs = [{"output_type": "stream", "name": "stdout", "text": [f"line {n}\n" for n in range(20)]}]
            source = f"for n in range(20):\n    print('line', n)  # cell {i}"
        else:
            cells.append({"cell_type": "markdown", "id": f"m{i}", "metadata": {},
                          "source": [f"## Part {i}\n\nSome text, *emphasis*, `code`, $x^2$.\n"]})
            continue
        cells.append({"cell_type": "code", "execution_count": i, "id": f"c{i}", "metadata": {},
                      "outputs": outputs, "source": [source]})
    cells.append({"cell_type": "markdown", "id": "end", "metadata": {}, "source": ["the last cell"]})
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def make_courses(baseline: Path | None) -> None:
    notebooks = {f"{INTRO}.ipynb": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                 BIG: fifty_cells()}
    sandbox.make_course(COURSE, notebooks)
    if baseline:
        args = (Path(baseline).with_suffix(".import-args").read_text().splitlines()
                if Path(baseline).with_suffix(".import-args").exists() else [])
        sandbox.run(podman.argv(["import", *[a for a in args if a.strip()], "/run/nbh-baseline.tar", BASE_IMAGE],
                                f"BindReadOnlyPaths={baseline}:/run/nbh-baseline.tar"), timeout=600)
        sandbox.make_course(BASE_COURSE, notebooks, "--image", BASE_IMAGE)


def entry(course: str, student: str, notebook: str) -> str:
    key = access.read_key(sandbox.path(str(access.LMS_KEY_PATH)))
    return f"/ipythonExercice/{course}/{notebook}/{student}?{access.signed_query(key, course, notebook, student, 3600)}"


def cold_open(course: str, student: str) -> float:
    return open_notebook(student, entry(course, student, INTRO))


def stop(instance: Instance) -> None:
    sandbox.run(["systemctl", "stop", instance.service, instance.socket], check=False)


def share_once(instance: Instance) -> tuple[float, int]:
    began = time.perf_counter()
    status, body = sandbox.request(instance, "POST", "nbh/share", {"path": BIG})
    if status != 200:
        raise RuntimeError(f"share: {status} {body[:300]!r}")
    url = json.loads(body)["url"]
    connection = lms_client()
    status, _, page = fetch(connection, url)
    connection.close()
    if status != 200 or b"the last cell" not in page:
        raise RuntimeError(f"shared page: {status}")
    return time.perf_counter() - began, len(page)


def run(baseline: Path | None) -> dict:
    sandbox.up()
    make_courses(baseline)
    run_id = f"{int(time.time()) % 10**7:07d}"
    courses = [COURSE] + ([BASE_COURSE] if baseline else [])
    cold = {course: [] for course in courses}
    for i in range(RUNS):
        for course in courses:
            instance = Instance(course, f"menus-{run_id}-{i}")
            cold[course].append(cold_open(course, instance.student))
            stop(instance)
    # the share: a student who opened the big notebook (so it is in the workspace)
    instance = Instance(COURSE, f"menus-{run_id}-share")
    connection = lms_client(timeout=120)
    status, location, _ = fetch(connection, entry(COURSE, instance.student, BIG.removesuffix(".ipynb")),
                                sandbox.LMS_ORIGINS[0] + "/")
    connection.close()
    shares = [share_once(instance) for _ in range(RUNS + 1)][1:]  # the first imports nbconvert
    stop(instance)
    result = {
        "share_50_cells_5_figures_s": percentiles([s for s, _ in shares]),
        "shared_page_bytes": shares[0][1],
        "cold_open_s": percentiles(cold[COURSE]),
    }
    if baseline:
        result["cold_open_baseline_s"] = percentiles(cold[BASE_COURSE])
        result["cold_open_ratio"] = (statistics.median(cold[COURSE]) / statistics.median(cold[BASE_COURSE]))
        result["baseline_image"] = Path(baseline).name
    return result


def main(argv: list[str]) -> dict:
    baseline = Path(argv[0]) if argv else None
    result = run(baseline)
    write_key("menus", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
