"""Benchmark: the initial orders sync of 1,000,000 orders / 3,000,000 items into the queue.

    python bench/orders.py            # 1,000,000 orders (several minutes)
    python bench/orders.py --quick    # 100,000 orders

Prints orders/s of the order tracker's first pass (business SQLite -> SQLite queue), the
ratio to a plain INSERT of the very same rows (the events and order_sync rows that pass
wrote, copied into a fresh state database, only the inserts timed) measured in the same
run (target >= 0.4), and the pass's peak RSS (target <= 300 MB). Each phase runs in its
own process, so a phase's peak RSS is its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 0.4
TARGET_RSS_MB = 300


def _settings(business_url: str):  # type: ignore[no-untyped-def]
    from klaviyo_sync.config import Settings

    settings = Settings()
    return settings.replace(business=dataclasses.replace(settings.business, url=business_url))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_generate(business_url: str, orders: int) -> dict:
    import sqlalchemy as sa

    from klaviyo_sync.business import sample_data

    settings = _settings(business_url)
    engine = sa.create_engine(business_url)
    sample_data.create_schema(engine, settings.business)
    started = time.perf_counter()
    summary = sample_data.generate(engine, settings, customers=max(1000, orders // 10),
                                   orders=orders, seed=7)
    return {"seconds": time.perf_counter() - started, "orders": summary.orders,
            "items": summary.items, "expected": summary.expected_initial_events(),
            "rss_mb": _peak_rss_mb()}


def phase_sync(business_url: str, state_url: str) -> dict:
    from klaviyo_sync.app import App
    from klaviyo_sync.logconfig import configure
    from klaviyo_sync.state.db import open_state

    configure("warning")
    engine = open_state(state_url)
    tracker = App(_settings(business_url), state_engine=engine).order_tracker
    assert tracker is not None
    started = time.perf_counter()
    report = tracker.run_once()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "orders": report.orders_read, "events": report.events_enqueued,
            "by_metric": report.by_metric, "rss_mb": _peak_rss_mb()}


def phase_plain(source_url: str, target_url: str, chunk: int) -> dict:
    """Copy events + order_sync from the synced database with plain INSERTs; time them."""
    import sqlalchemy as sa

    from klaviyo_sync.state.db import open_state
    from klaviyo_sync.state.schema import events, order_sync

    source, target = open_state(source_url), open_state(target_url)
    timed = 0.0
    rows_total = 0
    for table, key in ((events, events.c.id), (order_sync, order_sync.c.order_id)):
        after = None
        while True:
            stmt = sa.select(table).order_by(key).limit(chunk)
            if after is not None:
                stmt = stmt.where(key > after)
            with source.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(stmt)]
            if not rows:
                break
            after = rows[-1][key.name]
            started = time.perf_counter()
            with target.begin() as conn:
                conn.execute(table.insert(), rows)
            timed += time.perf_counter() - started
            rows_total += len(rows)
    return {"seconds": timed, "rows": rows_total, "rss_mb": _peak_rss_mb()}


def _run_phase(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 orders instead of 1M")
    parser.add_argument("--orders", type=int, help="number of orders (overrides --quick)")
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, *rest = args.phase
        result = {"generate": lambda: phase_generate(rest[0], int(rest[1])),
                  "sync": lambda: phase_sync(rest[0], rest[1]),
                  "plain": lambda: phase_plain(rest[0], rest[1], int(rest[2]))}[name]()
        print(json.dumps(result))
        return
    orders = args.orders or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        business = f"sqlite:///{folder / 'business.db'}"
        synced = f"sqlite:///{folder / 'state-sync.db'}"
        plain = f"sqlite:///{folder / 'state-plain.db'}"
        print(f"generating {orders:,} orders ...", flush=True)
        gen = _run_phase("generate", business, str(orders))
        print(f"  {gen['orders']:,} orders, {gen['items']:,} items in {gen['seconds']:.1f} s")
        print("initial sync (order tracker, one pass) ...", flush=True)
        sync = _run_phase("sync", business, synced)
        assert sync["by_metric"] == gen["expected"], (sync["by_metric"], gen["expected"])
        print("plain INSERT of the same rows ...", flush=True)
        base = _run_phase("plain", synced, plain, "25000")
    rate = sync["orders"] / sync["seconds"]
    ratio = base["seconds"] / sync["seconds"]
    print()
    print(f"orders synced        {sync['orders']:>12,}  ({sync['events']:,} events)")
    print(f"sync time            {sync['seconds']:>12.1f} s")
    print(f"orders/s             {rate:>12,.0f}")
    print(f"events/s             {sync['events'] / sync['seconds']:>12,.0f}")
    print(f"plain insert time    {base['seconds']:>12.1f} s  ({base['rows']:,} rows)")
    print(f"ratio plain/sync     {ratio:>12.2f}  (target >= {TARGET_RATIO}) "
          f"{'OK' if ratio >= TARGET_RATIO else 'MISSED'}")
    print(f"peak RSS (sync)      {sync['rss_mb']:>12.0f} MB  (target <= {TARGET_RSS_MB} MB) "
          f"{'OK' if sync['rss_mb'] <= TARGET_RSS_MB else 'MISSED'}")


if __name__ == "__main__":
    main()
