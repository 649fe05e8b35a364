"""Benchmark: the initial profile sync (`profiles --all`) of 1,000,000 customers.

    python bench/profiles.py              # 1,000,000 customers (a few minutes)
    python bench/profiles.py --quick      # 100,000 customers
    python bench/profiles.py --repeat 3   # three runs, the median kept (a noisy machine)

Generates the customers into a SQLite business database (with the (updated_at, id) index
the pass's keyset pages use), starts the Klaviyo stand-in in a process of its own with
its limits off, and runs the profiles pass with the published limits off. Prints
profiles/s, the import requests used against the minimum (one per 10,000 profiles), the
time of a plain read of the same customers table in the same run divided by the pass's
(target >= 0.3; the read runs just before and just after the pass and their mean is
taken) and the pass's peak RSS (target <= 200 MB: the pass's process and the page
process it starts to read and build the customers, their peaks added). Each phase runs
in a process of its own, so a phase's peak RSS is its own. The pass runs with the collector tuned as
the console script tunes it (klaviyo_sync.gctune); BENCH_DEFAULT_GC=1 leaves CPython's
defaults, to compare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

API_KEY = "pk_bench_standin"
TARGET_RATIO = 0.3
TARGET_RSS_MB = 200
PER_REQUEST = 10_000


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _settings(business_url: str, base_url: str, state_url: str):  # type: ignore[no-untyped-def]
    from klaviyo_sync import config

    return config.from_mapping({
        "state": {"url": state_url},
        "business": {"url": business_url},
        "klaviyo": {"base_url": base_url, "respect_published_limits": False,
                    "timeout_s": 120.0},
        "profiles": {"readback_poll_s": 0.05},
        "logging": {"level": "warning"},
    })


def phase_generate(business_url: str, customers: int) -> dict:
    import sqlalchemy as sa

    from klaviyo_sync.business import sample_data
    from klaviyo_sync.config import BusinessSettings

    business = BusinessSettings()
    engine = sa.create_engine(business_url)
    sample_data.create_schema(engine, business)
    table = sample_data.tables(business)[0]
    base = datetime(2026, 1, 1)
    boxes = ("Organic Box", "Classic Box", "Family Box")
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(1, customers + 1, 20_000):
            conn.execute(table.insert(), [
                {"id": n, "email": f"customer{n}@example.com", "first_name": f"First{n}",
                 "last_name": f"Last{n}", "status": "Active" if n % 7 else "Paused",
                 "schedule": "Weekly" if n % 2 else "Fortnightly", "box": boxes[n % 3],
                 "signup_date": date(2024, 1, 1) + timedelta(days=n % 700),
                 "email_opt_in": bool(n % 5), "updated_at": base + timedelta(seconds=n * 7)}
                for n in range(start, min(customers, start + 19_999) + 1)])
        conn.execute(sa.text("CREATE INDEX ix_customers_updated ON customers (updated_at, id)"))
    return {"seconds": time.perf_counter() - started, "customers": customers}


def phase_plain(business_url: str, page: int) -> dict:
    """Read every customer with the same columns, in keyset pages by id: the floor."""
    import sqlalchemy as sa

    engine = sa.create_engine(business_url)
    started = time.perf_counter()
    rows, after = 0, 0
    with engine.connect() as conn:
        while True:
            batch = conn.execute(sa.text(
                "SELECT id, email, first_name, last_name, status, schedule, box, signup_date, "
                "email_opt_in, updated_at FROM customers WHERE id > :after ORDER BY id "
                "LIMIT :page"), {"after": after, "page": page}).fetchall()
            if not batch:
                break
            rows += len(batch)
            after = batch[-1][0]
    return {"seconds": time.perf_counter() - started, "rows": rows}


def phase_sync(business_url: str, state_url: str, base_url: str) -> dict:
    from klaviyo_sync.app import App
    from klaviyo_sync.gctune import tune_collector
    from klaviyo_sync.logconfig import configure

    configure("warning")
    if not os.environ.get("BENCH_DEFAULT_GC"):
        tune_collector()  # as the console script does before any command
    os.environ["KLAVIYO_API_KEY"] = API_KEY
    settings = _settings(business_url, base_url, state_url)
    with App(settings, worker_id="bench") as app:
        sync = app.profile_sync()
        assert sync is not None
        started, cpu = time.perf_counter(), time.process_time()
        report = sync.run_once(all_customers=True)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # The page process (the pass's only child): its CPU and peak RSS, once reaped.
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": seconds, "cpu_seconds": cpu, "sent": report.sent,
            "imported": report.imported,
            "failed": report.failed, "requests": report.requests, "rss_mb": _peak_rss_mb(),
            "child_cpu_seconds": child.ru_utime + child.ru_stime,
            "child_rss_mb": child.ru_maxrss / 1024}


def _run_phase(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], check=True,
                         capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _one_run(folder: Path, business: str, run: int) -> dict:
    """A plain read, the pass against a fresh stand-in and a fresh state, a plain read
    again: the baseline brackets the pass, so a machine that slows down (or speeds up)
    while the pass runs moves both sides of the ratio."""
    state = f"sqlite:///{folder / f'state{run}.db'}"
    standin = subprocess.Popen(
        [sys.executable, "-m", "tests.klaviyo_standin", "--no-limits", "--api-key", API_KEY],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert standin.stdout is not None
        base_url = standin.stdout.readline().strip()
        before = _run_phase("plain", business, "5000")
        idle_cpu = _cpu_seconds(standin.pid)
        sync = _run_phase("sync", business, state, base_url)
        standin_cpu = _cpu_seconds(standin.pid) - idle_cpu
        after = _run_phase("plain", business, "5000")
    finally:
        standin.terminate()
        stats = json.loads((standin.communicate(timeout=300)[0] or "{}").splitlines()[-1])
    plain = (before["seconds"] + after["seconds"]) / 2
    return {"sync": sync, "standin_cpu": standin_cpu, "stats": stats, "plain": plain,
            "plain_each": (before["seconds"], after["seconds"]), "rows": before["rows"],
            "ratio": plain / sync["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 customers instead of 1M")
    parser.add_argument("--customers", type=int, help="number of customers")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the pass (each with its baseline); the median is kept")
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        result = {"generate": lambda: phase_generate(rest[0], int(rest[1])),
                  "plain": lambda: phase_plain(rest[0], int(rest[1])),
                  "sync": lambda: phase_sync(rest[0], rest[1], rest[2])}[name]()
        print(json.dumps(result))
        return
    customers = args.customers or (100_000 if args.quick else 1_000_000)
    runs = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        business = f"sqlite:///{folder / 'business.db'}"
        print(f"generating {customers:,} customers ...", flush=True)
        gen = _run_phase("generate", business, str(customers))
        print(f"  in {gen['seconds']:.1f} s")
        for run in range(max(1, args.repeat)):
            print(f"plain read, profiles --all, plain read (run {run + 1}) ...", flush=True)
            runs.append(_one_run(folder, business, run))
            last = runs[-1]
            print(f"  pass {last['sync']['seconds']:.1f} s, plain "
                  f"{last['plain_each'][0]:.1f} / {last['plain_each'][1]:.1f} s, "
                  f"ratio {last['ratio']:.2f}", flush=True)
    runs.sort(key=lambda r: r["ratio"])
    median = runs[(len(runs) - 1) // 2]  # of an even count, the lower of the middle two
    sync, stats = median["sync"], median["stats"]
    minimum = math.ceil(customers / PER_REQUEST)
    ratio = median["ratio"]
    print()
    if len(runs) > 1:
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in runs)
        print(f"median of {len(runs)} runs (ratios {ratios})")
    print(f"customers            {customers:>12,}")
    print(f"profiles imported    {sync['imported']:>12,}  ({sync['failed']} failed; "
          f"stand-in holds {stats.get('profiles', 0):,})")
    print(f"pass time            {sync['seconds']:>12.1f} s  "
          f"({sync['cpu_seconds']:.1f} s of CPU in the pass's process, "
          f"{sync['child_cpu_seconds']:.1f} s in its page process)")
    print(f"stand-in CPU         {median['standin_cpu']:>12.1f} s  (parsing and validating "
          "the jobs; it applies imports when next read)")
    print(f"profiles/s           {sync['sent'] / sync['seconds']:>12,.0f}")
    print(f"import requests      {sync['requests']:>12,}  (minimum {minimum}) "
          f"{'OK' if sync['requests'] <= minimum else 'MORE'}")
    print(f"plain read time      {median['plain']:>12.1f} s  ({median['rows']:,} rows; mean of "
          f"the reads before and after the pass, {median['plain_each'][0]:.1f} and "
          f"{median['plain_each'][1]:.1f} s)")
    print(f"ratio plain/pass     {ratio:>12.2f}  (target >= {TARGET_RATIO}) "
          f"{'OK' if ratio >= TARGET_RATIO else 'MISSED'}")
    rss = sync["rss_mb"] + sync["child_rss_mb"]  # the two peaks, as if at the same moment
    print(f"peak RSS (pass)      {rss:>12.0f} MB  (target <= {TARGET_RSS_MB} MB) "
          f"{'OK' if rss <= TARGET_RSS_MB else 'MISSED'}  ({sync['rss_mb']:.0f} MB the "
          f"pass's process + {sync['child_rss_mb']:.0f} MB its page process)")


if __name__ == "__main__":
    main()
