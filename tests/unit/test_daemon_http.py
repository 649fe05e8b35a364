"""The loopback listener: /healthz and /metrics over real HTTP, on a real state database."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync import config
from klaviyo_sync.business.order_tracker import OrdersReport
from klaviyo_sync.daemon.health import compute_status
from klaviyo_sync.daemon.http import HealthServer, parse_listen
from klaviyo_sync.daemon.metrics import Metrics, StatusBoard
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.parsers.report import IngestReport
from klaviyo_sync.state import meta
from klaviyo_sync.state.db import open_state


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, sa.Engine, Metrics]]:
    log = tmp_path / "system.log"
    log.write_bytes(b"x" * 120)
    settings = config.from_mapping({"state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
                                    "log": {"path": str(log)}})
    engine = open_state(settings.state.url)
    metrics = Metrics()
    metrics.board = StatusBoard(lambda: compute_status(settings, engine), max_age_s=0)
    server = HealthServer("127.0.0.1:0", metrics)
    server.start()
    host, port = server.address
    yield f"http://{host}:{port}", engine, metrics
    server.stop()
    engine.dispose()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_healthz_answers_200_while_healthy_and_503_when_failing(
        served: tuple[str, sa.Engine, Metrics]) -> None:
    base, engine, _ = served
    code, ctype, body = get(base + "/healthz")
    assert code == 200 and ctype == "application/json"
    assert json.loads(body)["health"] == "healthy"
    meta.put_json(engine, meta.AUTH_FAILURE, {"at": "now", "status": 401, "detail": "revoked"})
    code, _, body = get(base + "/healthz")
    data = json.loads(body)
    assert code == 503 and data["health"] == "failing" and data["auth_failure"]["status"] == 401


def test_metrics_exposes_gauges_and_counters(served: tuple[str, sa.Engine, Metrics]) -> None:
    base, _, metrics = served
    report = IngestReport(lines_read=40, events_enqueued=7)
    metrics.observe_job("tail", report, 0.02)
    metrics.observe_job("orders", OrdersReport(events_enqueued=3), 0.5)
    metrics.observe_requests([(202, 80.0), (202, 120.0), (500, 30.0), (None, 30000.0)])
    code, ctype, text = get(base + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    lines = set(text.splitlines())
    assert "klaviyo_sync_log_lines_read_total 40.0" in lines
    assert 'klaviyo_sync_events_enqueued_total{source="log"} 7.0' in lines
    assert 'klaviyo_sync_events_enqueued_total{source="order"} 3.0' in lines
    assert 'klaviyo_sync_klaviyo_requests_total{status_code="202"} 2.0' in lines
    assert 'klaviyo_sync_klaviyo_requests_total{status_code="none"} 1.0' in lines
    assert "klaviyo_sync_klaviyo_request_duration_seconds_count 4.0" in lines
    assert 'klaviyo_sync_klaviyo_request_duration_seconds_bucket{le="0.1"} 2.0' in lines
    assert 'klaviyo_sync_queue_events{state="pending"} 0.0' in lines
    assert "klaviyo_sync_tail_bytes_behind 120.0" in lines
    assert "klaviyo_sync_health 0.0" in lines and "klaviyo_sync_up 1.0" in lines
    assert 'klaviyo_sync_job_runs_total{job="tail",outcome="ok"} 1.0' in lines


def test_metrics_still_answer_when_the_database_does_not(
        served: tuple[str, sa.Engine, Metrics]) -> None:
    base, _, metrics = served

    def broken() -> None:
        raise RuntimeError("database gone")

    metrics.board = StatusBoard(broken, max_age_s=0)  # type: ignore[arg-type]
    code, _, text = get(base + "/metrics")
    assert code == 200 and "klaviyo_sync_up 0.0" in text.splitlines()
    code, _, body = get(base + "/healthz")
    assert code == 503 and "database gone" in json.loads(body)["reasons"][0]


def test_unknown_paths_are_404(served: tuple[str, sa.Engine, Metrics]) -> None:
    assert get(served[0] + "/")[0] == 404


@pytest.mark.parametrize("listen", ["0.0.0.0:9377", "192.168.1.4:9377", "example.com:80"])
def test_only_loopback_addresses_are_accepted(listen: str) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        parse_listen(listen)


def test_loopback_forms() -> None:
    assert parse_listen("127.0.0.1:9377") == ("127.0.0.1", 9377)
    assert parse_listen("[::1]:9377") == ("::1", 9377)
    assert parse_listen("localhost:80") == ("localhost", 80)


def test_a_busy_port_is_a_clear_error(served: tuple[str, sa.Engine, Metrics]) -> None:
    port = served[0].rsplit(":", 1)[1]
    with pytest.raises(ConfigError, match="cannot listen on"):
        HealthServer(f"127.0.0.1:{port}", Metrics())
