"""Crash safety: `klaviyo-sync parse` killed with SIGKILL mid-file, again and again.

The promise: whatever instant the process dies, the queue ends up with exactly one row per
event line once a run is allowed to finish, because the checkpoint commits with the events.
Each kill lands after the run has committed at least one chunk (the checkpoint moved), then
a random few milliseconds later, i.e. anywhere inside a chunk's parse or its transaction.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.parsers import line_unique_id

TYPES = ("started.signup", "cancelled", "contact.form", "failed.payment", "referral.credit",
         "shipping.email")
LINES = 200_000
KILLS = 10


def write_log(path: Path, lines: int) -> set[str]:
    """A log with one event line in two; returns the event lines' ids."""
    t0 = datetime(2024, 3, 1)
    ids = set()
    with open(path, "wb") as fh:
        for n in range(lines):
            stamp = (t0 + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
            if n % 2:
                fh.write(f"{stamp} page.view customer={n} url=/boxes/{n}\n".encode())
                continue
            line = (f"{stamp} {TYPES[n % 6]} customer={n} email=c{n}@example.com "
                    f"amount=12.50 order=o{n} reason=\"line {n}\"\n").encode()
            ids.add(line_unique_id(line))
            fh.write(line)
    return ids


def checkpoint_offset(engine: sa.Engine) -> int:
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT \"offset\" FROM checkpoints")).scalar() or 0)
    except sa.exc.DBAPIError:  # not created yet by the first run
        return 0


def start_parse(cfg: Path) -> subprocess.Popen[bytes]:
    with open(cfg.with_name("stderr.txt"), "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "klaviyo_sync", "--config", str(cfg),
                                 "parse"], stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_neither_loses_nor_duplicates(tmp_path: Path,
                                                                state_url: str) -> None:
    log = tmp_path / "system.log"
    expected = write_log(log, LINES)
    size = log.stat().st_size
    cfg = tmp_path / "settings.toml"
    cfg.write_text(f'[log]\npath = "{log}"\nread_chunk_bytes = 16384\n'
                   f'[state]\nurl = "{state_url}"\n[logging]\nlevel = "warning"\n')
    subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config", str(cfg), "db",
                    "upgrade"], check=True, capture_output=True)
    engine = sa.create_engine(state_url.replace("postgresql://", "postgresql+psycopg://"))
    rng = random.Random(os.environ.get("PYTEST_SEED", 20260101))
    kills, offsets = 0, []
    try:
        while kills < KILLS:
            before = checkpoint_offset(engine)
            assert before < size, f"the file was finished after only {kills} kills"
            proc = start_parse(cfg)
            deadline = time.monotonic() + 60
            while checkpoint_offset(engine) == before and proc.poll() is None:
                assert time.monotonic() < deadline, "parse made no progress"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.12))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                offsets.append(checkpoint_offset(engine))
            else:
                pytest.fail(f"parse finished before kill {kills + 1}: "
                            f"{cfg.with_name('stderr.txt').read_text()}")
        final = subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config", str(cfg),
                                "parse"], capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
        with engine.connect() as conn:
            rows = list(conn.execute(sa.text("SELECT unique_id FROM events")).scalars())
            offset = conn.execute(sa.text("SELECT \"offset\" FROM checkpoints")).scalar()
    finally:
        engine.dispose()
    assert len(rows) == len(set(rows)) == len(expected) == LINES // 2
    assert set(rows) == expected
    assert offset == size
    # The kills really landed mid-file, at different places.
    assert offsets[0] > 0 and offsets[-1] < size and len(set(offsets)) == KILLS
