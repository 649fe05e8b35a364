"""The pacer: published burst/steady limits, RateLimit headers, Retry-After."""

from __future__ import annotations

from klaviyo_sync.senders.pacing import PUBLISHED, Limit, Pacer

BULK = "POST /api/event-bulk-create-jobs"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def pacer(limits: dict[str, Limit] | None = PUBLISHED) -> tuple[Pacer, FakeTime]:
    t = FakeTime()
    return Pacer(limits, clock=t.clock, sleep=t.sleep), t


def test_burst_window_lets_ten_bulk_requests_a_second() -> None:
    p, t = pacer()
    times = []
    for _ in range(30):
        p.acquire(BULK)
        times.append(t.now - 1000.0)
    assert times[:10] == [0.0] * 10
    assert 1.0 <= times[10] < 1.1 and 2.0 <= times[20] < 2.2
    # No interval of one second (however aligned) holds more than 10 requests.
    for i in range(len(times) - 10):
        assert times[i + 10] - times[i] >= 1.0


def test_steady_window_caps_a_minute_at_150() -> None:
    p, t = pacer()
    times = []
    for _ in range(160):
        p.acquire(BULK)
        times.append(t.now - 1000.0)
    assert times[149] < 15.0
    assert times[150] >= 60.0


def test_endpoints_are_paced_separately() -> None:
    p, t = pacer()
    for _ in range(10):
        p.acquire(BULK)
    for _ in range(300):
        p.acquire("POST /api/events")
    assert t.now == 1000.0


def test_ratelimit_headers_and_retry_after_hold_the_endpoint() -> None:
    p, t = pacer(None)  # limits off: only what Klaviyo says counts
    p.acquire(BULK)
    p.observe(BULK, remaining=0, reset_s=12.0)
    p.acquire(BULK)
    assert t.now >= 1012.0
    p.observe(BULK, remaining=5, reset_s=30.0)
    start = t.now
    p.acquire(BULK)
    assert t.now == start
    p.block(BULK, 3.0)
    p.acquire(BULK)
    assert t.now >= start + 3.0
