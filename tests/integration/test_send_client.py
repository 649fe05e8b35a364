"""The Klaviyo client on its own: reads (paginated, paced), suppression, pacing vs 429s."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from klaviyo_sync.exceptions import ConfigError, RejectedSendError
from klaviyo_sync.senders.audit import AuditLog
from klaviyo_sync.senders.auth import ApiKeyAuth
from klaviyo_sync.senders.client import KlaviyoClient, check_base_url
from klaviyo_sync.senders.pacing import PUBLISHED, Pacer
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY, StandInFactory
from tests.unit.test_send_batching import make_event


def client(url: str, pacer: Pacer | None = None) -> KlaviyoClient:
    return KlaviyoClient(url, "2026-07-15", ApiKeyAuth(API_KEY), pacer or Pacer(None),
                         AuditLog(None))


def test_metrics_and_paginated_events(standin: KlaviyoStandIn) -> None:
    metric_id = standin.add_metric("Started Checkout")
    t0 = datetime(2024, 1, 1)
    for i in range(450):
        standin.add_event("Started Checkout", f"c{i}@example.com", t0 + timedelta(minutes=i),
                          {"n": i})
    c = client(standin.base_url)
    assert any(m["id"] == metric_id for m in c.get_metrics())
    events = list(c.iter_events(metric_id))
    assert len(events) == 450
    later = list(c.iter_events(metric_id, since="2024-01-01T05:00:00+00:00"))
    assert len(later) == 450 - 300
    assert sum(1 for r in standin.requests if r.path == "/api/events") >= 3


def test_suppression_jobs(standin: KlaviyoStandIn) -> None:
    c = client(standin.base_url)
    c.suppress_profiles(["a@example.com", "b@example.com"])
    c.unsuppress_profiles(["b@example.com"])
    assert "a@example.com" in standin.suppressed
    assert "b@example.com" in standin.unsuppressed
    with pytest.raises(ValueError):
        c.suppress_profiles([f"x{i}@example.com" for i in range(101)])


def test_a_single_bad_event_is_rejected_with_klaviyos_detail(standin: KlaviyoStandIn) -> None:
    standin.faults.reject_unique_ids({"u1": "Event property too large"})
    with pytest.raises(RejectedSendError, match="Event property too large"):
        client(standin.base_url).post_event(make_event(1))


def test_pacing_to_published_limits_meets_no_429(make_standin: StandInFactory) -> None:
    scale = 0.05  # windows of 50 ms and 3 s, on both sides
    s = make_standin(enforce_limits=True, window_scale=scale)
    c = client(s.base_url, Pacer(PUBLISHED, window_scale=scale))
    for i in range(40):
        c.post_bulk(b'{"data":{"type":"event-bulk-create-job","attributes":'
                    b'{"events-bulk-create":{"data":[{"type":"event-bulk-create",'
                    b'"attributes":{"profile":{"data":{"type":"profile","attributes":'
                    b'{"email":"p' + str(i).encode() + b'@example.com"}}},"events":'
                    b'{"data":[{"type":"event","attributes":{"metric":{"data":'
                    b'{"type":"metric","attributes":{"name":"m"}}},"properties":{},'
                    b'"unique_id":"x' + str(i).encode() + b'"}}]}}}]}}}}', 1)
    statuses = [r.status for r in s.requests]
    assert statuses.count(202) == 40 and 429 not in statuses


def test_base_url_must_be_https_unless_loopback() -> None:
    assert check_base_url("https://a.klaviyo.com/") == "https://a.klaviyo.com"
    assert check_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert check_base_url("http://localhost:8080")
    with pytest.raises(ConfigError):
        check_base_url("http://a.klaviyo.com")
