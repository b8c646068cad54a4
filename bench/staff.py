"""Benchmarks of the staff pages: ``make bench`` runs them after the others.

The course list and a course page of a course with 5,000 enrolled students
(a workspace and a listening socket each, as after their first visit), a
few of them running, through nginx and nbh-web, logged in as an admin: its
first page of students, one in the middle, and a search for one student
(the page lists 100 at a time), each with the name an LTI launch gave, and a
search by such a name; and the view of a student's notebook (40
cells, a 100 KiB figure), rendered by a new nbh-render@ each time.
``python -m bench.staff`` runs these alone,
into bench/results.json (key staff_pages).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
from urllib.parse import urlsplit

import httpx

from devtools import sandbox
from nbhosting.names import Instance
from nbhosting.systemd import Systemd
from nbhosting.web.staff import STUDENTS_PAGE

from .common import RUN, percentiles, write_key

COURSE = "bench-staff"
ENROLLED = 5000
RUNNING = 5
RUNS = 50
ACCOUNT, PASSWORD = "bench-admin", "bench staff password"


def ms(samples: list[float]) -> dict:
    return {k: v * 1000 if k != "n" else v for k, v in percentiles(samples).items()}


def enrol(students: list[Instance]) -> None:
    """Their workspaces, as their servers' first start makes them (StateDirectory=)."""
    group = sandbox.run(["stat", "-c", "%g", "/var/lib/nbhosting/workspaces"]).stdout.strip()
    sandbox.run(["mkdir", "-p", f"/var/lib/nbhosting/workspaces/{COURSE}"])
    script = (f"cd /var/lib/nbhosting/workspaces/{COURSE} && xargs mkdir -p -m 2770 && "
              f"chgrp -R {group} /var/lib/nbhosting/workspaces/{COURSE}")
    sandbox.run(["sh", "-c", script], input="\n".join(s.student for s in students), timeout=300)
    # and the names their LTI launches gave (ltinames.py), as nbh-web keeps them
    names = f"/var/lib/nbhosting/lti/names/{COURSE}"
    script = (f"mkdir -p -m 0700 {names} && cd {names} && while read student name; do "
              f"printf '%s' \"$name\" > \"$student\"; done && chown -R nbh:nbh {names} && chmod 0600 {names}/*")
    sandbox.run(["sh", "-c", script], input="\n".join(f"{s.student} {known_as(i)}" for i, s in enumerate(students)),
                timeout=300)


def known_as(i: int) -> str:
    return f"Person {i:05d}"


VIEWS = 10


def students_notebook() -> bytes:
    """What a student saves: 40 code cells and their output, one figure."""
    cells = [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": i,
              "source": f"values = [x * {i} for x in range(10)]\nprint(sum(values))",
              "outputs": [{"output_type": "stream", "name": "stdout", "text": f"{45 * i}\n"}]} for i in range(40)]
    figure = base64.b64encode(os.urandom(75 << 10)).decode()  # as large as a PNG plot, incompressible
    cells[-1]["outputs"].append({"output_type": "display_data", "metadata": {}, "data": {"image/png": figure}})
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()


def logged_in() -> httpx.Client:
    result = sandbox.run(["nbh", "staff", "add", ACCOUNT, "--admin", "--password-stdin"], input=PASSWORD + "\n",
                         check=False)
    if result.returncode and "exists already" not in result.stderr:
        raise RuntimeError(result.stderr)
    staff_host = {"Host": urlsplit(sandbox.STAFF_URL).netloc}  # the staff pages' own origin
    client = httpx.Client(base_url=sandbox.SITE_URL, headers=staff_host, timeout=60)
    page = client.get("/staff/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    response = client.post("/staff/login", data={"name": ACCOUNT, "password": PASSWORD, "_xsrf": xsrf},
                           follow_redirects=False)
    if response.status_code != 303:
        raise RuntimeError(f"login: {response.status_code}")
    return client


def timed(client: httpx.Client, path: str, runs: int = RUNS) -> list[float]:
    """Seconds per GET of path, after 3 to warm up."""
    for _ in range(3):  # warm up
        client.get(path)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(path)
        samples.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code}")
    return samples


async def run(systemd: Systemd) -> dict:
    sandbox.make_course(COURSE, {f"w{i}/n{j}.ipynb": {"cells": [], "metadata": {}, "nbformat": 4,
                                                       "nbformat_minor": 5} for i in range(5) for j in range(10)})
    students = [Instance(COURSE, f"enrolled-{RUN}-{i}") for i in range(ENROLLED)]
    enrol(students)
    viewed = students[0]
    sandbox.run(["sh", "-c", f"cat > /var/lib/nbhosting/workspaces/{viewed.path}/answers.ipynb"],
                input=students_notebook().decode(), user="nbh-jupyter")
    for chunk in range(0, len(students), 100):  # as idle.py does: 100 at a time
        await asyncio.gather(*(systemd.start(i.socket) for i in students[chunk:chunk + 100]))
    running = students[:RUNNING]
    await asyncio.gather(*(systemd.start_instance(i) for i in running))
    loop = asyncio.get_running_loop()
    try:
        client = await loop.run_in_executor(None, logged_in)
        page = client.get(f"/staff/courses/{COURSE}").text
        rows = page.count("<tr><td><a href=")
        if rows != STUDENTS_PAGE or f"Students ({ENROLLED})" not in page:
            raise RuntimeError(f"the course page lists {rows} students, not a page of {STUDENTS_PAGE}")
        one = students[ENROLLED // 2].student
        found = client.get(f"/staff/courses/{COURSE}", params={"q": one}).text
        if found.count("<tr><td><a href=") != 1:
            raise RuntimeError(f"a search for {one} did not find one student")
        listing = await loop.run_in_executor(None, timed, client, "/staff/")
        course = await loop.run_in_executor(None, timed, client, f"/staff/courses/{COURSE}")
        middle = await loop.run_in_executor(None, timed, client, f"/staff/courses/{COURSE}?from={ENROLLED // 2}")
        search = await loop.run_in_executor(None, timed, client, f"/staff/courses/{COURSE}?q={one}")
        by_name = client.get(f"/staff/courses/{COURSE}", params={"q": known_as(ENROLLED // 2)}).text
        if by_name.count("<tr><td><a href=") != 1 or one not in by_name:
            raise RuntimeError(f"a search for {known_as(ENROLLED // 2)} did not find {one}")
        search_name = await loop.run_in_executor(None, timed, client,
                                                 f"/staff/courses/{COURSE}?q={known_as(ENROLLED // 2)}")
        view = await loop.run_in_executor(None, timed, client, f"/staff/courses/{COURSE}/students/{viewed.student}/"
                                          "view?path=answers.ipynb", VIEWS)
        size = len(page.encode())
        client.close()
    finally:
        await asyncio.gather(*(systemd.stop_instance(i) for i in running))
        for chunk in range(0, len(students), 100):
            await asyncio.gather(*(systemd.stop(i.socket) for i in students[chunk:chunk + 100]))
    return {"enrolled": ENROLLED, "running": RUNNING, "course_list_ms": ms(listing), "course_page_ms": ms(course),
            "course_page_middle_ms": ms(middle), "course_page_search_ms": ms(search),
            "course_page_search_name_ms": ms(search_name), "course_page_bytes": size,
            "notebook_view_ms": ms(view), "notebook_bytes": len(students_notebook())}


def table(results: dict) -> list[str]:
    listing, course = results["course_list_ms"], results["course_page_ms"]
    return [
        f"| staff course list, {results['enrolled']} enrolled, {results['running']} running | "
        f"{listing['p50']:.1f} ms ({listing['p95']:.1f} ms) | < 100 ms |",
        f"| staff course page, {results['enrolled']} enrolled, its first {STUDENTS_PAGE} "
        f"({results['course_page_bytes'] // 1024} KiB) | {course['p50']:.1f} ms ({course['p95']:.1f} ms) | < 100 ms |",
        *(f"| staff course page, {results['enrolled']} enrolled, {what} | "
          f"{results[key]['p50']:.1f} ms ({results[key]['p95']:.1f} ms) | < 100 ms |"
          for key, what in (("course_page_middle_ms", "a page in the middle"),
                            ("course_page_search_ms", "a search for one student"),
                            ("course_page_search_name_ms", "a search by an LTI student's name")) if key in results),
    ] + ([f"| staff view of a student's notebook ({results['notebook_bytes'] // 1024} KiB), one render each | "
          f"{view['p50']:.0f} ms ({view['p95']:.0f} ms) | < 2 s |"]
         if (view := results.get("notebook_view_ms")) else [])


async def main() -> dict:
    sandbox.up()
    systemd = await Systemd.connect(f"unix:path={sandbox.path('/run/dbus/system_bus_socket')}")
    try:
        return await run(systemd)
    finally:
        await systemd.close()


if __name__ == "__main__":
    results = asyncio.run(main())
    write_key("staff_pages", results)
    print("\n".join(["| measure | p50 (p95) | target |", "| --- | --- | --- |", *table(results)]))
