"""Acceptance: SIGKILL at random moments of `profiles --all`, then a rerun: every customer
imported once (as Klaviyo sees it) and no job left unread."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa

from klaviyo_sync.state.db import open_state
from klaviyo_sync.state.profiles import JobState, ProfileStore
from klaviyo_sync.state.schema import profile_job_customers, profile_jobs, profile_sync
from tests.acceptance.profiles_shop import (
    API_KEY,
    Customers,
    cli_env,
    command,
    run,
    write_settings,
)
from tests.klaviyo_standin import KlaviyoStandIn

TOTAL = 4_000
TRIALS = 10


def test_sigkill_at_random_moments_then_rerun(state_url: str, tmp_path: Path) -> None:
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    shop = Customers(business_url)
    shop.generate(TOTAL)
    shop.close()
    rng = random.Random(1010)
    moments = []
    for trial in range(TRIALS):
        # A fresh account and state per trial; latency spreads a pass over a few seconds.
        standin = KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False, latency_s=0.05)
        standin.profile_jobs.polls_to_complete = 3
        standin.start()
        try:
            url = state_url if trial == 0 or not state_url.startswith("sqlite") else \
                state_url.replace("state.db", f"state{trial}.db")
            engine = open_state(url)
            if trial:
                with engine.begin() as conn:  # a server database: start it empty again
                    conn.execute(sa.text("DELETE FROM profile_sync"))
                    conn.execute(sa.text("DELETE FROM profile_jobs"))
                    conn.execute(sa.text("DELETE FROM meta"))
            config = write_settings(tmp_path / f"settings{trial}.toml", url, business_url,
                                    standin.base_url, batch_max_profiles=500, page_size=700)
            proc = subprocess.Popen(command(config, "--all"), env=cli_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            moment = rng.uniform(0.3, 2.5)
            moments.append(moment)
            time.sleep(moment)
            proc.kill()
            proc.wait(timeout=30)
            report = run(config, "--all")
            assert report["failed"] == 0
            counts = ProfileStore(engine).counts()
            assert counts.get("imported") == TOTAL and counts["unread_jobs"] == 0, counts
            # Klaviyo holds exactly one profile per customer, with its current data.
            profiles = standin.profiles
            assert len(profiles) == TOTAL
            assert profiles["customer17@example.com"]["external_id"] == "17"
            # Every job we recorded was read back until complete.
            with engine.connect() as conn:
                recorded = conn.execute(sa.select(profile_jobs.c.job_id, profile_jobs.c.status)
                                        .where(profile_jobs.c.job_id.is_not(None))).all()
            assert recorded and all(status == JobState.DONE for _, status in recorded)
            reads = {job_id: job.reads for job_id, job in standin.profile_jobs.jobs.items()}
            assert all(reads[job_id] >= 3 for job_id, _ in recorded)
            # Each customer was imported by exactly one job we read back: every one is
            # recorded as imported by a done job, and the done jobs hold no more
            # customers than that between them (a done row keeps only its counts).
            with engine.connect() as conn:
                done = conn.execute(sa.select(profile_jobs.c.job_id, profile_jobs.c.total)
                                    .where(profile_jobs.c.status == JobState.DONE.value)
                                    ).all()
                by = dict(conn.execute(sa.select(profile_sync.c.customer_id,
                                                 profile_sync.c.job_id)).all())
                kept = conn.execute(sa.select(sa.func.count()).select_from(
                    profile_job_customers)).scalar()
            assert sorted(by, key=int) == [str(n) for n in range(1, TOTAL + 1)]
            assert set(by.values()) <= {job_id for job_id, _ in done}
            assert sum(total for _, total in done) == TOTAL
            assert kept == 0  # every request ended: none keeps its customers
            engine.dispose()
        finally:
            standin.stop()
    assert len(moments) == TRIALS
