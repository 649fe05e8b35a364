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
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
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
                   limits: bool, concurrency: int = 4) -> Path:
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
concurrency = {concurrency}
[suppression]
enabled = false
[logging]
level = "warning"
""")
    return path


def _peak_rss_kb(pid: int) -> int:
    # VmHWM of the running child: ru_maxrss of RUSAGE_CHILDREN would also count the pages
    # a forked child shares with this process (and its stand-in) before it execs.
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_send(config: Path) -> tuple[dict[str, object], int, float]:
    """Run `send --json` as a child; its summary, its peak RSS in KB and its CPU seconds."""
    env = dict(os.environ, KLAVIYO_API_KEY=API_KEY, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "klaviyo_sync", "--config", str(config),
                             "send", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    deadline = time.monotonic() + 1800
    while proc.poll() is None and time.monotonic() < deadline:
        peak = max(peak, _peak_rss_kb(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"send failed ({proc.returncode}): {err[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return dict(json.loads(out)), peak, cpu


def phase(folder: Path, business_url: str, events: int, limits: bool, concurrency: int
          ) -> dict[str, float]:
    """Drain ``events`` through a fresh stand-in: seconds, 429s, peak RSS, answer times."""
    state_url = f"sqlite:///{folder / ('state-limits.db' if limits else 'state-free.db')}"
    fill_queue(state_url, events)
    with KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=limits) as standin:
        config = write_settings(folder, state_url, business_url, standin.base_url, limits,
                                concurrency)
        # CPU of this process while `send` runs is the stand-in's (the loop above sleeps):
        # on a shared machine the two compete, so both are printed.
        standin_cpu = time.process_time()
        report, peak_kb, send_cpu = run_send(config)
        standin_cpu = time.process_time() - standin_cpu
        recorded = len(standin.events)
        answers = sorted(r.duration_s for r in standin.requests if r.status == 202)
        refused = sum(1 for r in standin.requests if r.status == 429)
    if report["sent"] != events or recorded != events:
        raise SystemExit(f"expected {events} events sent, got {report}")
    return {"seconds": float(str(report["elapsed_s"])), "refused": refused,
            "peak_mb": peak_kb / 1024, "answer_p50_ms": answers[len(answers) // 2] * 1000,
            "send_cpu_s": send_cpu, "standin_cpu_s": standin_cpu}


def cpu_note(figures: dict[str, float], events: int) -> str:
    """CPU the sender (start-up included) and the stand-in spent, per event."""
    return (f"CPU: send {figures['send_cpu_s']:.2f} s "
            f"({figures['send_cpu_s'] / events * 1e6:.0f} us/event), stand-in "
            f"{figures['standin_cpu_s']:.2f} s ({figures['standin_cpu_s'] / events * 1e6:.0f} "
            f"us/event)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30,000 events instead of 100,000")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="[sender] concurrency of the send process (default 4)")
    args = parser.parse_args()
    events = 30_000 if args.quick else 100_000
    # The stand-in (in this process) plays Klaviyo's servers, which do not share the
    # sender's CPU: its garbage-collector passes over the ever-growing record of events
    # are not the sender's time. The measured sender is the child process, untouched.
    gc.freeze()
    gc.disable()
    folder = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        business_url = make_business(folder / "business.db")
        limited = phase(folder, business_url, events, limits=True,
                        concurrency=args.concurrency)
        least = least_bulk_time_s(events)
        print(f"(a) {events:,} events with Klaviyo's limits enforced: "
              f"{limited['seconds']:.2f} s; least the limits allow {least:.1f} s; ratio "
              f"{limited['seconds'] / least:.3f} (target <= 1.15); 429s met: "
              f"{limited['refused']:.0f}; stand-in's median answer to a bulk request: "
              f"{limited['answer_p50_ms']:.0f} ms; {cpu_note(limited, events)}")
        singles = least_single_time_s(events)
        print(f"(b) one POST /api/events per event at its published limit: >= "
              f"{singles / 60:.1f} min; speed-up x{singles / limited['seconds']:.0f}")
        free = phase(folder, business_url, events, limits=False,
                     concurrency=args.concurrency)
        print(f"(c) limits off: {events / free['seconds']:,.0f} events/s "
              f"({free['seconds']:.2f} s; stand-in's median answer "
              f"{free['answer_p50_ms']:.0f} ms; {cpu_note(free, events)}) (target >= 5,000)")
        print(f"(d) peak RSS of `send`: {max(limited['peak_mb'], free['peak_mb']):.0f} MB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
