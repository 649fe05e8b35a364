"""Benchmark of the log ingest: replay speed against grep and sqlite3, and peak memory.

    python bench/ingest.py [--quick] [--keep]

(a) sparse: 2,000,000 lines, 5% of them the six synced events: replay lines/s, and the
    ratio to `grep -cE` over the same file (target >= 0.35);
(b) dense: 1,000,000 event lines: events/s into SQLite, and the ratio to a plain sqlite3
    `executemany` of the same rows into the same table (target >= 0.5);
(c) peak RSS of `klaviyo-sync replay` (a child process) over a 1 GB log (target <= 150 MB).
--quick divides every size by 10. Data is generated in a temporary folder, removed after.
Baselines run in the same process and moment as what they are compared with.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from klaviyo_sync import logconfig
from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import KNOWN_EVENT_TYPES, LogSettings, Settings, StateSettings
from klaviyo_sync.parsers.ingest import Ingestor
from klaviyo_sync.parsers.line_parser import LineParser
from klaviyo_sync.parsers.tailer import read_chunks
from klaviyo_sync.queue.bulk import BulkEnqueuer
from klaviyo_sync.queue.drivers.sqlite_bulk import _SQLITE_INSERT
from klaviyo_sync.state.db import open_state

NOISE = (
    "page.view customer={n} url=/boxes/{n}/details session=s{n} agent=\"Mozilla/5.0\"",
    "login customer={n} ip=10.0.{a}.{b} method=password",
    "cron.run job=billing duration_ms={a}{b} status=ok",
    "box.viewed customer={n} box={a} source=email",
    "api.request path=/v1/customers/{n} status=200 ms={a}",
)
EVENTS = {
    "started.signup": "customer={n} email=c{n}@example.com first_name=Ann last_name=Lee "
                      "box={a} value=47.95",
    "cancelled": "customer={n} email=c{n}@example.com reason=\"moving away\"",
    "contact.form": "email=c{n}@example.com name=\"Ann Lee\" subject=\"Box {a}\" "
                    "message=\"where is my box?\"",
    "failed.payment": "customer={n} amount=47.95 order=o{n} reason=card_declined",
    "referral.credit": "customer={n} amount=10.00 referred_customer={b}{n}",
    "shipping.email": "customer={n} order=o{n} tracking=1Z{n} carrier=UPS",
}
GREP_PATTERN = "|".join(t.replace(".", r"\.") for t in KNOWN_EVENT_TYPES)


def generate(path: Path, lines: int, event_share: float, seed: int = 7) -> int:
    """Write ``lines`` log lines, ``event_share`` of them synced events; returns event lines."""
    rng = random.Random(seed)
    t0 = datetime(2024, 1, 1)
    kinds = list(EVENTS)
    events = 0
    with open(path, "w", encoding="utf-8") as fh:
        batch = []
        for n in range(lines):
            stamp = (t0 + timedelta(seconds=n // 3)).strftime("%Y-%m-%d %H:%M:%S")
            a, b = rng.randrange(256), rng.randrange(256)
            if rng.random() < event_share:
                kind = kinds[n % len(kinds)]
                batch.append(f"{stamp} {kind} {EVENTS[kind].format(n=n, a=a, b=b)}\n")
                events += 1
            else:
                batch.append(f"{stamp} {NOISE[n % len(NOISE)].format(n=n, a=a, b=b)}\n")
            if len(batch) >= 10000:
                fh.write("".join(batch))
                batch.clear()
        fh.write("".join(batch))
    return events


def grow(path: Path, base: Path, target_bytes: int) -> None:
    """``path`` = copies of ``base`` (which spans two days) until ``target_bytes``, each
    copy moved two days later, so its lines are new events, not repeats."""
    block = base.read_bytes().replace(b"2024-01-01 ", b"\0D1 ").replace(b"2024-01-02 ",
                                                                          b"\0D2 ")
    day = datetime(2024, 1, 1)
    written = 0
    with open(path, "wb") as fh:
        for copy in range(100_000):
            if written >= target_bytes:
                break
            first = day + timedelta(days=2 * copy)
            data = block.replace(b"\0D1 ", first.strftime("%Y-%m-%d ").encode()).replace(
                b"\0D2 ", (first + timedelta(days=1)).strftime("%Y-%m-%d ").encode())
            fh.write(data)
            written += len(data)


def settings_for(folder: Path, log: Path) -> Settings:
    return Settings().replace(log=LogSettings(path=str(log)),
                              state=StateSettings(url=f"sqlite:///{folder / 'state.db'}"))


def timed_replay(folder: Path, log: Path) -> tuple[float, int, int]:
    folder.mkdir()
    settings = settings_for(folder, log)
    engine = open_state(settings.state.url)
    ingestor = Ingestor(settings, engine)
    started = time.perf_counter()
    report = ingestor.replay()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, report.lines_read, report.events_enqueued


def bench_sparse(work: Path, lines: int) -> float:
    log = work / "sparse" / "system.log"
    log.parent.mkdir()
    events = generate(log, lines, 0.05)
    size_mb = log.stat().st_size / 1e6
    started = time.perf_counter()
    grep = subprocess.run(["grep", "-cE", GREP_PATTERN, str(log)], capture_output=True,
                          text=True, check=True)
    grep_s = time.perf_counter() - started
    assert int(grep.stdout) == events, (grep.stdout, events)
    elapsed, read, queued = timed_replay(work / "sparse" / "state", log)
    assert read == lines and queued == events, (read, queued, events)
    ratio = grep_s / elapsed
    print(f"(a) sparse: {lines:,} lines ({size_mb:.0f} MB, {events:,} events)")
    print(f"    replay {elapsed:.2f}s = {lines / elapsed:,.0f} lines/s; "
          f"grep -cE {grep_s:.2f}s = {lines / grep_s:,.0f} lines/s")
    print(f"    ratio to grep: {ratio:.2f} (target >= 0.35) {'OK' if ratio >= 0.35 else 'MISS'}")
    return ratio


def bench_dense(work: Path, lines: int) -> float:
    log = work / "dense" / "system.log"
    log.parent.mkdir()
    events = generate(log, lines, 1.0)
    elapsed, _, queued = timed_replay(work / "dense" / "state", log)
    assert queued == events, (queued, events)
    baseline_s = executemany_baseline(work / "dense" / "baseline", log)
    ratio = baseline_s / elapsed
    print(f"(b) dense: {events:,} event lines")
    print(f"    replay into SQLite {elapsed:.2f}s = {events / elapsed:,.0f} events/s; "
          f"sqlite3 executemany of the same rows {baseline_s:.2f}s = "
          f"{events / baseline_s:,.0f} rows/s")
    print(f"    ratio to executemany: {ratio:.2f} (target >= 0.5) "
          f"{'OK' if ratio >= 0.5 else 'MISS'}")
    return ratio


def executemany_baseline(folder: Path, log: Path) -> float:
    """Time a plain sqlite3 executemany of the rows the replay inserts (same columns, same
    table and indexes, one transaction), the rows built beforehand, batch by batch."""
    folder.mkdir()
    settings = settings_for(folder, log)
    engine = open_state(settings.state.url)  # the same schema, made by the migrations
    parser = LineParser(settings.log, settings.events)
    rows_of = BulkEnqueuer(engine)  # the replay's rows, built outside the timing
    engine.dispose()
    plain_insert = _SQLITE_INSERT.replace(" ON CONFLICT (unique_id) DO NOTHING", "")
    conn = sqlite3.connect(folder / "state.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN")
    spent = 0.0
    with open(log, "rb") as fh:
        for chunk in read_chunks(fh, 0, 1 << 20, 1 << 20, True):
            now = utcnow()
            rows = [rows_of.row(entry, True, now) for entry in
                    (parser.parse(chunk.data[s:e]) for s, e in parser.candidates(chunk.data))
                    if entry is not None]
            started = time.perf_counter()
            conn.executemany(plain_insert, rows)
            spent += time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("COMMIT")
    spent += time.perf_counter() - started
    conn.close()
    return spent


_RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def bench_memory(work: Path, target_bytes: int) -> int:
    base = work / "memory" / "base.log"
    base.parent.mkdir()
    generate(base, 400_000, 0.05, seed=11)
    log = work / "memory" / "system.log"
    grow(log, base, target_bytes)
    base.unlink()
    cfg = work / "memory" / "settings.toml"
    cfg.write_text(f'[log]\npath = "{log}"\n[state]\nurl = "sqlite:///{work}/memory/s.db"\n'
                   '[logging]\nlevel = "warning"\n')
    started = time.perf_counter()
    # The replay runs as a grandchild under a tiny Python that reports its peak RSS: a
    # child forked straight from this (big) process would count this process's pages.
    result = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "klaviyo_sync",
         "--config", str(cfg), "replay", "--no-progress"],
        capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    *lines, last = result.stdout.strip().splitlines()
    out = "\n".join(lines)
    peak_kib = int(last)
    peak_mb = peak_kib / 1024  # Linux reports KiB
    size_mb = log.stat().st_size / 1e6
    print(f"(c) memory: replay of a {size_mb:,.0f} MB log in {elapsed:.1f}s "
          f"({size_mb / elapsed:,.0f} MB/s): peak RSS {peak_mb:.0f} MB (target <= 150 MB) "
          f"{'OK' if peak_mb <= 150 else 'MISS'}")
    print(f"    {out.strip()}")
    return int(peak_mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes divided by 10")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--only", choices=("a", "b", "c"), action="append",
                        help="run only these parts (repeatable)")
    args = parser.parse_args()
    logconfig.configure("warning")
    # Ratios compare work done in the same moment, but the replay overlaps parsing with
    # SQLite on two threads: a busy machine hurts it more than the one-thread baseline.
    one, five, fifteen = os.getloadavg()
    print(f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs")
    scale = 10 if args.quick else 1
    parts = set(args.only or ("a", "b", "c"))
    work = Path(tempfile.mkdtemp(prefix="klaviyo-sync-bench-"))
    try:
        if "a" in parts:
            bench_sparse(work, 2_000_000 // scale)
        if "b" in parts:
            bench_dense(work, 1_000_000 // scale)
        if "c" in parts:
            bench_memory(work, 1_000_000_000 // scale)
        print("load average at the end {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        if args.keep:
            print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
