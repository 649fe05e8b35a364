"""Benchmark of scale-out: one `klaviyo-sync send` process against four on one queue.

    python bench/scale_out.py [--events N] [--latency-s S] [--pg-url URL]

Queues N events (default 20,000) in a PostgreSQL state database, drains them with one
`send` process and then with four, against the Klaviyo stand-in answering each request
after an added latency (default 0.05 s, so the wait on Klaviyo dominates, as in
production), and prints the span of the sending in each case and their ratio. Four
processes should approach x4 on an idle machine; on a loaded one the figure is lower, which
is why it is measured here and not asserted by the test suite
(tests/acceptance/test_send_crash.py checks that four processes share the queue exactly once).
The state lives in a fresh schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from klaviyo_sync.queue import QueueStore  # noqa: E402
from klaviyo_sync.state.db import open_state  # noqa: E402
from tests.integration.test_send_runner import API_KEY, make_events  # noqa: E402
from tests.klaviyo_standin import KlaviyoStandIn  # noqa: E402

DEFAULT_PG = os.environ.get("KLAVIYO_SYNC_TEST_PG_URL",
                            "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def write_settings(path: Path, state_url: str, base_url: str) -> Path:
    path.write_text("\n".join([
        "[state]", f'url = "{state_url}"',
        "[klaviyo]", f'base_url = "{base_url}"', "respect_published_limits = false",
        "[sender]", "claim_batch = 100", "batch_max_events = 100", "concurrency = 1",
        "backoff_base_s = 0.0", "backoff_max_s = 0.0",
        "[logging]", 'level = "warning"', ""]))
    return path


def drain(processes: int, config: Path) -> None:
    env = dict(os.environ, KLAVIYO_API_KEY=API_KEY, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "klaviyo_sync", "--config", str(config), "send"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for proc in procs:
        _out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"send exited {proc.returncode}: {err[-2000:]}")


def sending_span_s(standin: KlaviyoStandIn) -> float:
    times = [r.at for r in standin.requests if r.path.startswith("/api/event")]
    return (max(times) - min(times)).total_seconds()


def measure(processes: int, events: int, latency_s: float, state_url: str,
            folder: Path) -> float:
    with KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False,
                        latency_s=latency_s) as standin:
        engine = open_state(state_url)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM events"))
        store = QueueStore(engine)
        store.enqueue_many(make_events(events, customers=400))
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE events"))  # as autovacuum would have
        drain(processes, write_settings(folder / f"settings{processes}.toml", state_url,
                                        standin.base_url))
        sent = store.counts()["sent"]
        engine.dispose()
        if sent != events or set(standin.received.values()) != {1}:
            raise SystemExit(f"{processes} process(es): {sent} of {events} sent, "
                             "or an event was recorded twice")
        return sending_span_s(standin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-s", type=float, default=0.05)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    state_url = sa.make_url(args.pg_url).update_query_dict(
        {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spans = {n: measure(n, args.events, args.latency_s, state_url, Path(tmp))
                     for n in (1, 4)}
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    print(f"{args.events} events, stand-in latency {args.latency_s} s")
    print(f"  1 process:   {spans[1]:7.1f} s sending")
    print(f"  4 processes: {spans[4]:7.1f} s sending")
    print(f"  speed-up:    x{spans[1] / spans[4]:.2f}")


if __name__ == "__main__":
    main()
