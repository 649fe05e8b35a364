"""Prometheus metrics of one daemon process, in a registry of its own.

Gauges come from the latest :class:`~klaviyo_sync.daemon.health.Status` (so /metrics,
/healthz, `status` and STATUS= never disagree); counters and histograms are fed by the
jobs as they finish: lines read and events enqueued from the tail pass's report, requests
by status code and their latency from the audit rows this process wrote.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from klaviyo_sync.business.order_tracker import OrdersReport
from klaviyo_sync.daemon.health import Health, Status
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.parsers.report import IngestReport

log = get_logger(__name__)

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StatusBoard:
    """The latest Status, recomputed on demand when older than ``max_age_s``."""

    def __init__(self, compute: Callable[[], Status], max_age_s: float) -> None:
        self._compute = compute
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._status: Status | None = None
        self._at = 0.0

    def refresh(self) -> Status:
        with self._lock:
            self._status = self._compute()
            self._at = time.monotonic()
            return self._status

    def latest(self) -> Status:
        """The cached status, or a fresh one if it is stale (a failure propagates)."""
        with self._lock:
            if self._status is not None and time.monotonic() - self._at <= self.max_age_s:
                return self._status
        return self.refresh()


class Metrics:
    """Counters fed by the jobs, plus gauges read from a :class:`StatusBoard`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.lines_read = Counter("klaviyo_sync_log_lines_read", "Log lines read by the tailer",
                                  registry=r)
        self.events_enqueued = Counter("klaviyo_sync_events_enqueued",
                                       "Events added to the queue", ["source"], registry=r)
        self.requests = Counter("klaviyo_sync_klaviyo_requests",
                                "Requests to Klaviyo by HTTP status code (none: no answer)",
                                ["status_code"], registry=r)
        self.request_seconds = Histogram("klaviyo_sync_klaviyo_request_duration_seconds",
                                         "Latency of requests to Klaviyo",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.job_runs = Counter("klaviyo_sync_job_runs", "Job runs by outcome",
                                ["job", "outcome"], registry=r)
        self.job_seconds = Histogram("klaviyo_sync_job_duration_seconds", "Duration of job runs",
                                     ["job"], buckets=_LATENCY_BUCKETS, registry=r)
        self.board: StatusBoard | None = None
        r.register(_StatusCollector(self))

    def observe_job(self, job: str, result: Any, duration_s: float) -> None:
        """A job finished with ``result`` (its report, or the exception it raised)."""
        failed = isinstance(result, BaseException)
        self.job_runs.labels(job, "error" if failed else "ok").inc()
        self.job_seconds.labels(job).observe(duration_s)
        if failed or result is None:
            return
        # The tail pass reports an IngestReport, the orders pass an OrdersReport; the
        # other passes add nothing to these counters.
        if isinstance(result, IngestReport):
            if result.lines_read:
                self.lines_read.inc(result.lines_read)
            if result.events_enqueued:
                self.events_enqueued.labels("log").inc(result.events_enqueued)
        elif isinstance(result, OrdersReport) and result.events_enqueued:
            self.events_enqueued.labels("order").inc(result.events_enqueued)

    def observe_requests(self, requests: Iterable[tuple[int | None, float]]) -> None:
        """(status code or None, duration in ms) of requests made to Klaviyo."""
        for status_code, duration_ms in requests:
            self.requests.labels(str(status_code) if status_code else "none").inc()
            self.request_seconds.observe(duration_ms / 1000)


def _timestamp(value: datetime | str | None) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class _StatusCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # gauges are produced on collect only; nothing to check up front

    def collect(self) -> Iterator[Metric]:
        board = self.metrics.board
        if board is None:
            return
        try:
            status = board.latest()
        except Exception as exc:  # a scrape must answer even when the database does not
            log.warning("metrics_status_failed", error=str(exc))
            yield _gauge("klaviyo_sync_up", "1 when the state database could be read", 0)
            return
        yield _gauge("klaviyo_sync_up", "1 when the state database could be read", 1)
        queue = GaugeMetricFamily("klaviyo_sync_queue_events", "Events in the queue by state",
                                  labels=["state"])
        for state, count in status.queue.items():
            queue.add_metric([state], count)
        yield queue
        yield _gauge("klaviyo_sync_health", "0 healthy, 1 degraded, 2 failing",
                     status.health.exit_code)
        yield _gauge("klaviyo_sync_oldest_due_age_seconds",
                     "Age of the oldest event due for delivery", status.oldest_due_age_s or 0)
        yield _gauge("klaviyo_sync_rejects", "Log lines kept as rejects", status.rejects)
        yield _gauge("klaviyo_sync_dead_letters", "Dead-lettered events", status.dead_letters)
        yield _gauge("klaviyo_sync_suppressions_pending", "Suppressions not yet sent",
                     status.suppressions_pending)
        yield _gauge("klaviyo_sync_tail_offset_bytes", "Tail checkpoint offset",
                     status.tail.offset)
        if status.tail.bytes_behind is not None:
            yield _gauge("klaviyo_sync_tail_bytes_behind", "Bytes of log not yet read",
                         status.tail.bytes_behind)
        yield _gauge("klaviyo_sync_auth_refused", "1 while Klaviyo refuses our credentials",
                     1 if status.auth_failure else 0)
        for name, value, text in (
            ("last_send_ok", status.last_send_ok_at, "Last request Klaviyo accepted"),
            ("last_orders_pass", status.last_orders_pass_at, "Last orders pass"),
            ("last_tail", status.last_tail_at, "Last tail pass"),
        ):
            stamp = _timestamp(value)
            if stamp is not None:
                yield _gauge(f"klaviyo_sync_{name}_timestamp_seconds", f"{text} (Unix time)",
                             stamp)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


__all__ = ["Health", "Metrics", "StatusBoard"]
