"""What the service counts, for Prometheus at ``/metrics``.

Metrics are process-wide, as prometheus-client has them. Under ``taskstream serve --workers N``
the command gives the workers a shared ``PROMETHEUS_MULTIPROC_DIR`` before they start, each
writes its values there, and whichever worker answers a scrape reports the sum (gauges: per the
mode given below) of all live workers.

Hot paths pay one increment per group commit, publish or backfill page, never one per event
or per subscriber.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

events_appended = Counter("taskstream_events_appended", "Events appended, by type.", ["type"])
append_seconds = Histogram(
    "taskstream_append_seconds",
    "Time from a request's arrival at the appender to its commit, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
append_group_events = Histogram(
    "taskstream_append_group_events",
    "Commands committed together in one transaction (group commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
append_errors = Counter(
    "taskstream_append_errors",
    "Appends the database refused or could not take (not the ones the rules refuse).",
    ["reason"],
)
streams_open = Gauge(
    "taskstream_streams_open", "Server-Sent Events streams open.", multiprocess_mode="livesum"
)
streams_ended = Counter("taskstream_streams_ended", "Streams ended, by why.", ["reason"])
frames_delivered = Counter(
    "taskstream_frames_delivered", "Event frames written to live streams (once per subscriber)."
)
backfilled_events = Counter(
    "taskstream_backfilled_events", "Events sent to streams from the table (resume, catch-up)."
)
slow_disconnects = Counter(
    "taskstream_slow_subscriber_disconnects",
    "Streams cut off because their client fell too far behind (they resume).",
)
progress_dropped = Counter(
    "taskstream_progress_dropped",
    "Superseded progress events not sent to ?progress=latest streams that fell behind.",
)
listener_reconnects = Counter(
    "taskstream_listener_reconnects", "Times the LISTEN connection was lost and made again."
)
listener_connected = Gauge(
    "taskstream_listener_connected",
    "1 while the process's LISTEN connection is up and caught up.",
    multiprocess_mode="livemin",
)
listener_position = Gauge(
    "taskstream_listener_position",
    "The newest seq fanned out to this process's streams.",
    multiprocess_mode="livemin",
)
newest_seq = Gauge(
    "taskstream_events_newest_seq",
    "The newest seq in the events table, read when scraped.",
    multiprocess_mode="livemax",
)
listener_lag = Gauge(
    "taskstream_listener_lag_events",
    "The newest seq in the table minus the newest fanned out, as of the scrape.",
    multiprocess_mode="livemax",
)
pool_connections = Gauge(
    "taskstream_pool_connections",
    "Database connections of the pool, by state.",
    ["state"],
    multiprocess_mode="livesum",
)
leases_expired = Counter(
    "taskstream_leases_expired", "Running tasks failed because their worker fell silent."
)


ENDPOINTS = ("create", "single", "batch", "cancel", "lease")
append_timers = {endpoint: append_seconds.labels(endpoint) for endpoint in ENDPOINTS}
"""Bound once: ``labels()`` is a dictionary lookup under a lock, on every append otherwise."""


def render() -> bytes:
    """The text exposition of every metric (of every live worker, in multiprocess mode)."""
    directory = os.environ.get(MULTIPROCESS_DIR)
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def process_exited(pid: int) -> None:
    """Forget a worker's live gauges once it is gone (multiprocess mode)."""
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
