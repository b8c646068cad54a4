"""A course's statistics page, under /staff/courses/<course>/stats: one
Vega-Lite plot per stats.py function, each drawn from its CSV, which the
page links to. Who may see a course's staff pages may see its stats
(StaffHandler.course: its staff and the admins).

Handlers are thin: the data is stats.table's, as `nbh stats` prints it; the
queries run off the event loop, on a read-only connection of their own. The
plotting libraries are served by nginx from /usr/share/nbhosting/_static
(make install), named with their content's hash so that they are cached for
long; the page draws with the SVG renderer and Vega's expression
interpreter (the pages' CSP allows no eval).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import sqlite3
from urllib.parse import urlencode

import tornado.web

from .. import paths, stats, store
from .staff import StaffHandler

log = logging.getLogger("nbh-web")
BUNDLES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")


@functools.cache
def static_url(name: str) -> str:
    """/_static/<name>?v=<its content's hash>: a new version is a new URL."""
    try:
        digest = hashlib.sha256((paths.STATIC_DIR / name).read_bytes()).hexdigest()[:16]
    except OSError as error:
        log.warning("stats pages: no %s (make static; make install): %s", name, error)
        return f"/_static/{name}"
    return f"/_static/{name}?v={digest}"


def _range(handler: StaffHandler) -> stats.Days:
    try:
        return stats.days(handler.get_query_argument("from", None) or None,
                          handler.get_query_argument("to", None) or None)
    except ValueError as error:
        raise tornado.web.HTTPError(400, "%s", str(error), reason="Bad dates") from None


def _staff(handler: StaffHandler) -> bool:
    """?staff=1: the staff's own workspaces counted as students."""
    return handler.get_query_argument("staff", "") == "1"


def _table(course: str, plot: str, days: stats.Days, staff: bool) -> stats.Table:
    """In a worker thread: its own read-only connection (sqlite3's are per thread)."""
    db = store.open_reader(store.DEFAULT_PATH)
    try:
        return stats.table(db, course, plot, days.since, days.until, staff=staff)
    finally:
        db.close()


class StatsHandler(StaffHandler):
    def get(self, name: str) -> None:
        course = self.course(name)
        days, staff = _range(self), _staff(self)
        query = urlencode({"from": days.first.isoformat(), "to": days.last.isoformat(),
                           **({"staff": "1"} if staff else {})})
        plots = [(plot, TITLES[plot], f"/staff/courses/{course.name}/stats/{plot}.csv?{query}")
                 for plot in stats.PLOTS]
        self.render("staff/stats.html", course=course, days=days, staff=staff, plots=plots, specs=SPECS,
                    scripts=[static_url(name) for name in BUNDLES])


class StatsCsvHandler(StaffHandler):
    async def get(self, name: str, plot: str) -> None:
        course = self.course(name)
        if plot not in stats.PLOTS:
            raise tornado.web.HTTPError(404, "no plot %r", plot, reason="No such plot")
        days = _range(self)
        try:
            table = await asyncio.get_running_loop().run_in_executor(None, _table, course.name, plot, days,
                                                                     _staff(self))
        except (store.StoreError, sqlite3.Error) as error:
            raise tornado.web.HTTPError(503, "%s", str(error), reason="The event store cannot be read") from None
        self.set_header("Content-Type", "text/csv; charset=utf-8")
        self.set_header("Content-Disposition",
                        f'inline; filename="{course.name}-{plot}-{days.first}-{days.last}.csv"')
        self.finish(table.csv())


def routes() -> list[tuple]:
    course = r"/staff/courses/([^/]+)"
    return [(course + r"/stats", StatsHandler), (course + r"/stats/([a-z_]+)\.csv", StatsCsvHandler)]


# -- the plots ------------------------------------------------------------------
# Vega-Lite specifications, without their data: the page fetches each plot's
# CSV, parses it and hands the rows over as values.

TITLES = {
    "students_per_notebook": "Distinct students per notebook",
    "students_per_day": "Students per day: active, new, cumulative",
    "heatmap": "Opens per student: notebooks x students (ranked by notebooks read, binned)",
    "notebooks_per_student": "Notebooks read per student",
    "sessions_per_notebook": "Sessions per notebook: median and longest (open to close)",
    "servers_over_time": "Running servers and kernels: the course and the host",
    "host_over_time": "The host: load, available memory, free disk",
    "start_latency": "Start latency (start to ready)",
    "incidents_per_day": "Culls, failures, refusals and 'host full' per day",
}
WIDTH = 900


def _folded(fields: list[str], x: dict, mark: str | dict, y_title: str, **encoding) -> dict:
    """Several columns as one series each: a line or bars per column."""
    return {"transform": [{"fold": fields, "as": ["series", "value"]}], "mark": mark,
            "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "title": y_title},
                         "color": {"field": "series", "type": "nominal", "sort": fields, "title": None},
                         **encoding}}


GIB = 1 << 30
HOST_BYTES = ["mem_available_bytes", "mem_total_bytes", "workspaces_free_bytes", "containers_free_bytes"]
SPECS = {
    "students_per_notebook": {
        "mark": "bar",
        "encoding": {"x": {"field": "notebook", "type": "ordinal", "sort": None, "title": "notebook (course order)"},
                     "y": {"field": "students", "type": "quantitative"},
                     "tooltip": [{"field": "notebook"}, {"field": "students"}, {"field": "opens"}]}},
    "students_per_day": _folded(["active", "new", "cumulative"],
                                {"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate", "title": "day"},
                                {"type": "line", "point": True}, "students"),
    "heatmap": {
        "mark": "rect",
        "height": {"step": 10},  # a row a notebook; the students' groups fill the width
        "encoding": {
            "x": {"field": "first_rank", "type": "ordinal", "sort": None,
                  "title": "students, ranked by notebooks read (first rank of each group)",
                  "axis": {"labelAngle": 0, "labelOverlap": "greedy"}},
            "y": {"field": "notebook", "type": "ordinal", "sort": None, "title": "notebook (course order)"},
            "color": {"field": "opens_per_student", "type": "quantitative", "title": "opens per student",
                      "scale": {"range": ["#ffffff", "#08306b"], "interpolate": "rgb"}},  # nobody: white
            "tooltip": [{"field": "notebook"}, {"field": "first_rank"}, {"field": "last_rank"},
                        {"field": "readers"}, {"field": "students"}, {"field": "opens"}]}},
    "notebooks_per_student": {
        "mark": "bar",
        "encoding": {"x": {"field": "notebooks_read", "type": "ordinal", "title": "notebooks read"},
                     "y": {"field": "students", "type": "quantitative"}}},
    "sessions_per_notebook": _folded(["median_s", "longest_s"],
                                     {"field": "notebook", "type": "ordinal", "sort": None},
                                     "bar", "seconds", xOffset={"field": "series", "sort": ["median_s", "longest_s"]}),
    "servers_over_time": _folded(["servers", "kernels", "busy_kernels"],
                                 {"field": "time", "type": "temporal", "title": "time"}, "line", "count",
                                 strokeDash={"field": "scope", "type": "nominal"}),
    "host_over_time": {"vconcat": [
        {"width": WIDTH, "height": 120, "mark": "line",
         "encoding": {"x": {"field": "time", "type": "temporal"},
                      "y": {"field": "load1", "type": "quantitative", "title": "load (1 min)"}}},
        {"width": WIDTH, "height": 160,
         **_folded(HOST_BYTES, {"field": "time", "type": "temporal"}, "line", "GiB"),
         # in GiB: folded as bytes, then divided
         "transform": [{"fold": HOST_BYTES, "as": ["series", "bytes"]},
                       {"calculate": f"datum.bytes / {GIB}", "as": "value"}]},
    ]},
    "start_latency": {
        "mark": "bar",
        "encoding": {"x": {"field": "le_seconds", "type": "ordinal", "sort": None, "title": "at most (seconds)"},
                     "y": {"field": "starts", "type": "quantitative"}}},
    "incidents_per_day": _folded(["culls", "failures", "refusals", "full"],
                                 {"field": "day", "type": "ordinal", "title": "day"}, "bar", "count"),
}
for _name, _spec in SPECS.items():
    if "vconcat" not in _spec:
        _spec.setdefault("width", WIDTH)
        _spec.setdefault("height", 260)
