"""Acceptance: `klaviyo-sync catalog --all` killed with SIGKILL at 10 random moments, then run
to the end: every object is in the stand-in exactly once and no job is left unread."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.state.db import open_state
from klaviyo_sync.state.schema import catalog_jobs
from tests.acceptance.test_catalog_cli import (
    API_KEY,
    catalog,
    cli_env,
    command,
    make_catalog,
    wanted_ids,
    write_settings,
)
from tests.klaviyo_standin import KlaviyoStandIn

pytestmark = pytest.mark.slow

KILLS = 10


@pytest.fixture
def slow_standin() -> Iterator[KlaviyoStandIn]:
    # Slow answers stretch the pass over several seconds, so kills land mid-pass.
    s = KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False, latency_s=0.03)
    s.start()
    yield s
    s.stop()
    assert not s.internal_errors, s.internal_errors[0]


def test_sigkill_during_catalog_all_creates_nothing_twice_and_reads_every_job(
        tmp_path: Path, slow_standin: KlaviyoStandIn) -> None:
    standin = slow_standin
    url = f"sqlite:///{tmp_path / 'business.db'}"
    _engine, summary = make_catalog(url)
    config = write_settings(tmp_path, url, standin.base_url)
    rng = random.Random(20261201)
    killed_mid_pass = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(command(config, "--all"), env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # A random moment within the pass's requests: after 1 to 12 more answers, plus up
        # to one answer's latency (so the kill lands before, during or after a POST).
        target = len(standin.requests) + rng.randint(1, 12)
        deadline = time.monotonic() + 60
        while (len(standin.requests) < target and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.04))
        if proc.poll() is None:
            proc.kill()
            killed_mid_pass += 1
        proc.wait(timeout=30)
    assert killed_mid_pass >= KILLS // 2, "the pass ended before most kills: nothing tested"

    final = catalog(config, "--all")
    assert final["failed"] == 0
    items, variants, categories = wanted_ids(summary)
    assert set(standin.catalog.held("item")) == items
    assert set(standin.catalog.held("variant")) == variants
    assert set(standin.catalog.held("category")) == categories
    for kind in ("item", "variant", "category"):
        created = standin.catalog.counts("create", kind)
        assert max(created.values()) == 1, f"a {kind} was created twice"
        assert not standin.catalog.counts("delete", kind)
    # Every job the program learnt the id of was read back; none is left open.
    engine = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(catalog_jobs.c.status, catalog_jobs.c.klaviyo_job_id)
                            ).fetchall()
    engine.dispose()
    assert {status for status, _ in rows} <= {"complete", "abandoned"}
    known = {job_id for _, job_id in rows if job_id}
    assert known and not known & set(standin.catalog.unread_jobs())
    assert catalog(config, "--all")["sent"] == {}
    listed = subprocess.run(command(config, "failed", "--json"), capture_output=True,
                            text=True, env=cli_env(), timeout=60)
    assert listed.stdout.strip() == ""
