"""Benchmark of delivery: `klaviyo-sync send` against the Klaviyo stand-in.

    python bench/send.py [--quick]

(a) drain 100,000 queued events with Klaviyo's real limits enforced by the stand-in, as a
    ratio to the least time those limits allow (target <= 1.15). The least time: bulk jobs
    carry 1,000 events and the bulk endpoint takes 10 requests per 1 s window (150 per
    minute), so N events need ceil(N/1000) requests, whose last group of 10 cannot start
    before (ceil(requests/10) - 1) s after the first;
(b) the speed-up over one POST /api/events per event at that endpoint's published limit
    (350/s burst, 3,500/min steady: about 58 events/s sustained), which is what the
    existing Klaviyo plugins do; that baseline is computed from the published limits (a
    real run would take half an hour), the measured time is (a)'s;
(c) with limits off, events/s the sender pushes through the stand-in (target >= 5,000,
    twice Klaviyo's bulk ceiling of 2,500/s, so the sender is never the bottleneck);
(d) peak RSS of the `send` process.
The sender runs as a child process (`python -m klaviyo_sync send`), on a SQLite state
database and a SQLite business database with current customer data, as deployed; the
stand-in runs in this process. --quick: 30,000 events. Data lives in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from klaviyo_sync.queue import NewEvent, QueueStore  # noqa: E402
from klaviyo_sync.state.db import open_state  # noqa: E402
from tests.klaviyo_standin import KlaviyoStandIn  # noqa: E402

API_KEY = "pk_bench_standin"
CUSTOMERS = 5000
BULK_EVENTS, BULK_BURST, BULK_STEADY = 1000, 10, 150
SINGLE_BURST, SINGLE_STEADY = 350, 3500


def least_bulk_time_s(events: int) -> float:
    requests = math.ceil(events / BULK_EVENTS)
    by_burst = math.ceil(requests / BULK_BURST) - 1
    by_steady = (math.ceil(requests / BULK_STEADY) - 1) * 60
    return float(max(by_burst, by_steady, 0))


def least_single_time_s(events: int) -> float:
    minutes = math.ceil(events / SINGLE_STEADY) - 1
    last = events - minutes * SINGLE_STEADY
    return minutes * 60.0 + math.ceil(last / SINGLE_BURST) - 1


def make_business(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, "
            "last_name TEXT, status TEXT, schedule TEXT, box INTEGER, signup_date DATE, "
            "email_opt_in BOOLEAN, updated_at TIMESTAMP)"))
        conn.execute(sa.text(
            "INSERT INTO customers VALUES (:id, :email, 'Ann', 'Lee', 'Active', 'weekly', "
            ":box, '2020-05-15', 1, NULL)"),
            [{"id": i, "email": f"c{i}@example.com", "box": 700 + i % 9}
             for i in range(CUSTOMERS)])
    engine.dispose()
    return url


def fill_queue(state_url: str, count: int) -> None:
    engine = open_state(state_url)
    t0 = datetime(2024, 1, 1)
    QueueStore(engine).enqueue_many(
        NewEvent(unique_id=f"bench:{i:08d}", metric="started.signup", source="log",
                 occurred_at=t0 + timedelta(seconds=i), properties={"box": i % 9, "n": i},
                 customer_id=str(i % CUSTOMERS), email=f"c{i % CUSTOMERS}@example.com",
                 value=47.95, backfill=True)
        for i in range(count))
    engine.dispose()


def write_settings(folder: Path, state_url: str, business_url: str, base_url: str,
                   limits: bool) -> Path:
    path = folder / f"settings-{'limits' if limits else 'nolimits'}.toml"
    path.write_text(f"""
[state]
url = "{state_url}"
[business]
url = "{business_url}"
[klaviyo]
base_url = "{base_url}"
respect_published_limits = {"true" if limits else "false"}
[sender]
concurrency = 4
[suppression]
enabled = false
[logging]
level = "warning"
""")
    return path


def run_send(config: Path) -> dict[str, object]:
    env = dict(os.environ, KLAVIYO_API_KEY=API_KEY, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config", str(config),
                           "send", "--json"], env=env, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"send failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def phase(folder: Path, business_url: str, events: int, limits: bool) -> tuple[float, int, int]:
    """Drain ``events`` through a fresh stand-in; (seconds, events recorded, 429s)."""
    state_url = f"sqlite:///{folder / ('state-limits.db' if limits else 'state-free.db')}"
    fill_queue(state_url, events)
    with KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=limits) as standin:
        config = write_settings(folder, state_url, business_url, standin.base_url, limits)
        report = run_send(config)
        recorded = len(standin.events)
        refused = sum(1 for r in standin.requests if r.status == 429)
    if report["sent"] != events or recorded != events:
        raise SystemExit(f"expected {events} events sent, got {report}")
    return float(str(report["elapsed_s"])), recorded, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30,000 events instead of 100,000")
    args = parser.parse_args()
    events = 30_000 if args.quick else 100_000
    folder = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        business_url = make_business(folder / "business.db")
        limited_s, _, refused = phase(folder, business_url, events, limits=True)
        least = least_bulk_time_s(events)
        print(f"(a) {events:,} events with Klaviyo's limits enforced: {limited_s:.2f} s; "
              f"least the limits allow {least:.1f} s; ratio {limited_s / least:.3f} "
              f"(target <= 1.15); 429s met: {refused}")
        singles = least_single_time_s(events)
        print(f"(b) one POST /api/events per event at its published limit: >= "
              f"{singles / 60:.1f} min; speed-up x{singles / limited_s:.0f}")
        free_s, _, _ = phase(folder, business_url, events, limits=False)
        print(f"(c) limits off: {events / free_s:,.0f} events/s ({free_s:.2f} s) "
              f"(target >= 5,000)")
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(f"(d) peak RSS of `send`: {peak_kb / 1024:.0f} MB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
