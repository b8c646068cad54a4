"""nbh-metrics: Prometheus metrics, from the event store, on loopback.

Not part of the public site: nbh-metrics.socket listens on 127.0.0.1:9184
only (systemd makes the socket; the service itself has no network of its
own), and nginx does not proxy it. Every metric is read from the store at
each scrape, as prometheus_client's custom collectors do, so the counters
are those of every event kept, and survive restarts of anything:

- nbh_events_total{event}, nbh_starts_total, nbh_culls_total,
  nbh_failures_total, nbh_refusals_total{status}, and
  nbh_entries_total{outcome,status} (opened, refused, full);
- nbh_start_seconds, a histogram of start to ready;
- nbh_running_servers, nbh_running_kernels (the latest sample's),
  nbh_enrolled_students{course} (students who opened a notebook);
- nbh_store_lag_seconds: how far the store is behind the journal.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import sys
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import MetricsHandler
from systemd import daemon, journal

from . import events, store

log = logging.getLogger("nbh-metrics")


def journal_tail() -> tuple[str, float] | None:
    """The cursor and time of nbhosting's latest journal entry."""
    reader = journal.Reader()
    try:
        reader.add_match(SYSLOG_IDENTIFIER=events.IDENTIFIER)
        reader.seek_tail()
        entry = reader.get_previous()
        return (entry["__CURSOR"], entry["__REALTIME_TIMESTAMP"].timestamp()) if entry else None
    finally:
        reader.close()


def store_lag(followed: tuple[str, float] | None, tail: tuple[str, float] | None) -> float:
    """Seconds between the journal's latest event and the store's: 0 when caught up."""
    if tail is None or (followed is not None and followed[0] == tail[0]):
        return 0.0
    if followed is None:  # nothing stored yet: unknown
        return float("nan")
    return max(0.0, tail[1] - followed[1])


class StoreCollector:
    """Reads the store at each scrape (prometheus_client's custom collector)."""

    def __init__(self, path: Path):
        self.path = path

    def collect(self):
        tail = journal_tail()
        db = store.open_reader(self.path)
        try:
            yield from self._from(db, tail)
        finally:
            db.close()

    def _from(self, db, tail):
        counts = db.execute("SELECT event, status, n FROM counts").fetchall()
        by_event = {}
        for event, _, n in counts:
            by_event[event] = by_event.get(event, 0) + n
        total = CounterMetricFamily("nbh_events", "Events kept in the store, by kind", labels=["event"])
        for event in sorted(events.EVENTS):
            total.add_metric([event], by_event.get(event, 0))
        yield total
        for name, event, text in (("nbh_starts", "start", "Server starts"), ("nbh_culls", "cull", "Idle servers stopped"),
                                  ("nbh_failures", "failure", "Servers that failed or could not start")):
            yield CounterMetricFamily(name, text, value=by_event.get(event, 0))
        refusals = CounterMetricFamily("nbh_refusals", "Entries refused, by HTTP status", labels=["status"])
        entries = CounterMetricFamily("nbh_entries", "Entries, by outcome and HTTP status", labels=["outcome", "status"])
        entries.add_metric(["opened", "302"], by_event.get("open", 0))
        for event, status, n in counts:
            if event == "refused":
                refusals.add_metric([status], n)
                entries.add_metric(["refused", status], n)
        entries.add_metric(["full", "503"], by_event.get("full", 0))
        yield refusals
        yield entries
        buckets, cumulative = [], 0
        for le, n in db.execute("SELECT le, n FROM start_latency ORDER BY le"):
            cumulative += n
            buckets.append(("+Inf" if le == float("inf") else f"{le:g}", cumulative))
        if not buckets or buckets[-1][0] != "+Inf":
            buckets.append(("+Inf", cumulative))
        (seconds,) = db.execute("SELECT coalesce(sum(seconds), 0) FROM start_latency_sum").fetchone()
        yield HistogramMetricFamily("nbh_start_seconds", "Server start to ready, in seconds",
                                    buckets=buckets, sum_value=seconds)
        sample = db.execute("SELECT time, fields FROM events WHERE event = 'sample' AND course IS NULL "
                            "ORDER BY time DESC LIMIT 1").fetchone()
        fields = json.loads(sample[1]) if sample else {}
        yield GaugeMetricFamily("nbh_running_servers", "Student servers running, at the latest sample",
                                value=int(fields.get("servers", 0)))
        yield GaugeMetricFamily("nbh_running_kernels", "Kernels, at the latest sample",
                                value=int(fields.get("kernels", 0)))
        yield GaugeMetricFamily("nbh_sample_age_seconds", "Age of the latest sample",
                                value=time.time() - sample[0] if sample else float("nan"))
        enrolled = GaugeMetricFamily("nbh_enrolled_students", "Students who opened a notebook, by course",
                                     labels=["course"])
        for course, n in db.execute("SELECT course, count(*) FROM students GROUP BY course"):
            enrolled.add_metric([course], n)
        yield enrolled
        yield GaugeMetricFamily("nbh_store_lag_seconds", "How far the event store is behind the journal",
                                value=store_lag(store.followed(db), tail))


def registry(path: Path = store.DEFAULT_PATH) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(StoreCollector(path))
    return found


class PassedSocketServer(ThreadingHTTPServer):
    """An HTTP server on the socket systemd passed: it makes no socket of its
    own (the unit allows AF_UNIX only, and no network)."""

    daemon_threads = True

    def __init__(self, listening: socket.socket, handler):
        socketserver.BaseServer.__init__(self, listening.getsockname()[:2], handler)
        self.socket = listening


def main() -> int:
    """Serve /metrics on the socket nbh-metrics.socket passes."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    passed = daemon.listen_fds()
    if len(passed) != 1:
        print("nbh-metrics: expected one listening socket from nbh-metrics.socket", file=sys.stderr)
        return 2
    server = PassedSocketServer(socket.socket(fileno=passed[0]), MetricsHandler.factory(registry()))
    daemon.notify("READY=1")
    log.info("serving /metrics on %s", server.server_address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
