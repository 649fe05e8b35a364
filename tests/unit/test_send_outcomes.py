"""Typed send outcomes: a refusal carries its HTTP status as a field, not in a message."""

from __future__ import annotations

from typing import Any

from klaviyo_sync.exceptions import AuthError, BusinessDataError, KlaviyoSyncError
from klaviyo_sync.senders.base import AuthFailure, DeliveryReport
from klaviyo_sync.senders.batching import BatchCaps
from klaviyo_sync.senders.delivery import deliver, deliver_profiles
from klaviyo_sync.senders.runner import SendReport
from tests.unit.test_send_batching import make_event
from tests.unit.test_send_delivery import FakeKlaviyo


class RefusingProfiles:
    """A profile sender whose every import is refused with ``status``."""

    def __init__(self, status: int) -> None:
        self.status = status

    def import_profile(self, profile: dict[str, Any]) -> None:
        raise AuthError(f"/api/profile-import/: {self.status} not allowed", self.status)


def test_a_refused_bulk_reports_its_status_and_detail() -> None:
    fake = FakeKlaviyo()
    # The message says nothing about the status: the field is what travels.
    fake.fail_with = AuthError("scope missing", 403)
    report = deliver(fake, [make_event(i) for i in range(5)], BatchCaps(max_events=10))
    assert report.auth_failure == AuthFailure(status=403, detail="scope missing")
    assert report.auth_error == "scope missing"


def test_a_refused_profile_import_reports_its_status() -> None:
    events = [make_event(i) for i in range(3)]
    report = deliver_profiles(RefusingProfiles(401), events)
    assert report.auth_failure is not None and report.auth_failure.status == 401
    assert report.halted and sorted(report.deferred) == [e.queue_id for e in events]


def test_merge_keeps_the_first_refusal() -> None:
    first, second = DeliveryReport(), DeliveryReport(auth_failure=AuthFailure(401, "a"))
    first.merge(second)
    first.merge(DeliveryReport(auth_failure=AuthFailure(403, "b")))
    assert first.auth_failure == AuthFailure(401, "a")


def test_a_refusal_stops_the_drain_with_one_auth_error() -> None:
    report = SendReport()
    report._refused(AuthFailure(401, "/api/events/: 401 bad key"))
    report._refused(AuthFailure(403, "later"))
    stopped = report.stopped_by()
    assert isinstance(stopped, AuthError) and stopped.status == 401
    assert stopped.exit_code == 6 and "401 bad key" in str(stopped)
    assert report.to_json()["auth_error"] == "/api/events/: 401 bad key"
    assert "auth_failure" not in report.to_json() and "failure" not in report.to_json()


def test_a_stop_keeps_the_error_it_was_given() -> None:
    report = SendReport()
    report._stop(BusinessDataError("business database unreachable"))
    report._stop(KlaviyoSyncError("second"))
    stopped = report.stopped_by()
    assert type(stopped) is BusinessDataError and stopped.exit_code == 5
    assert report.error == "business database unreachable"
    assert SendReport().stopped_by() is None
