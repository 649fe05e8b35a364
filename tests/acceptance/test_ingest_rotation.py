"""Rotation as a user meets it: `parse` between logrotate's moves, then `replay`."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.parsers import line_unique_id

TYPES = ("started.signup", "cancelled", "contact.form", "failed.payment", "referral.credit",
         "shipping.email")


def lines(first: int, count: int) -> tuple[bytes, set[str]]:
    """Numbered log lines, two in three of a synced type; and those lines' ids."""
    t0 = datetime(2024, 3, 1)
    out, ids = [], set()
    for n in range(first, first + count):
        stamp = (t0 + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
        if n % 3 == 0:
            out.append(f"{stamp} session.start customer={n}\n".encode())
            continue
        line = f"{stamp} {TYPES[n % 6]} customer={n} email=c{n}@example.com order=o{n}\n"
        out.append(line.encode())
        ids.add(line_unique_id(line.encode()))
    return b"".join(out), ids


class Cli:
    def __init__(self, tmp_path: Path, state_url: str) -> None:
        self.log = tmp_path / "logs" / "system.log"
        self.log.parent.mkdir()
        self.cfg = tmp_path / "settings.toml"
        self.cfg.write_text(f'[log]\npath = "{self.log}"\nread_chunk_bytes = 8192\n'
                            f'[state]\nurl = "{state_url}"\n')
        self.url = state_url.replace("postgresql://", "postgresql+psycopg://")

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config",
                                 str(self.cfg), *args], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        return result

    def queued(self) -> list[str]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text("SELECT unique_id FROM events")).scalars())
        finally:
            engine.dispose()

    def append(self, data: bytes) -> None:
        with open(self.log, "ab") as fh:
            fh.write(data)


@pytest.fixture
def cli(tmp_path: Path, state_url: str) -> Cli:
    return Cli(tmp_path, state_url)


def test_rename_and_create_while_tailing(cli: Cli) -> None:
    (a, ids_a), (b, ids_b), (c, ids_c) = lines(0, 300), lines(300, 90), lines(390, 120)
    cli.log.write_bytes(a)
    cli("parse")
    cli.append(b)  # written after the pass, before logrotate moved the file
    cli.log.rename(cli.log.with_name("system.log.1"))
    cli.log.write_bytes(c[:1000])
    cli("parse")
    cli.append(c[1000:])
    cli("parse")
    assert sorted(cli.queued()) == sorted(ids_a | ids_b | ids_c)


def test_copytruncate_while_tailing(cli: Cli) -> None:
    (a, ids_a), (b, ids_b), (c, ids_c) = lines(0, 300), lines(300, 90), lines(390, 40)
    cli.log.write_bytes(a)
    cli("parse")
    cli.append(b)
    shutil.copyfile(cli.log, cli.log.with_name("system.log.1"))
    with open(cli.log, "r+b") as fh:
        fh.truncate(0)
    cli.append(c)
    cli("parse")
    assert sorted(cli.queued()) == sorted(ids_a | ids_b | ids_c)


def test_replay_over_live_dot1_and_dot2gz_then_again_adds_nothing(cli: Cli) -> None:
    (old, ids_old), (mid, ids_mid), (new, ids_new) = lines(0, 200), lines(200, 200), \
        lines(400, 200)
    cli.log.with_name("system.log.2.gz").write_bytes(gzip.compress(old))
    cli.log.with_name("system.log.1").write_bytes(mid)
    cli.log.write_bytes(new)
    first = cli("replay", "--json")
    assert f'"events_enqueued": {len(ids_old | ids_mid | ids_new)}' in first.stdout
    assert sorted(cli.queued()) == sorted(ids_old | ids_mid | ids_new)
    second = cli("replay")
    assert "0 events queued" in second.stdout
    assert "`klaviyo-sync profiles --all`" in second.stdout  # the initial profile sync
    assert len(cli.queued()) == len(ids_old | ids_mid | ids_new)
    third = cli("parse")  # the replay left the checkpoint at the end of the live file
    assert third.stdout.startswith("0 lines read")


def test_tail_then_replay_adds_nothing(cli: Cli) -> None:
    (a, ids_a), (b, ids_b) = lines(0, 300), lines(300, 100)
    cli.log.write_bytes(a)
    cli("parse")
    cli.log.rename(cli.log.with_name("system.log.1"))
    cli.log.write_bytes(b)
    cli("parse")
    archived = cli.log.with_name("system.log.1")
    cli.log.with_name("system.log.1.gz").write_bytes(gzip.compress(archived.read_bytes()))
    archived.unlink()
    before = sorted(cli.queued())
    replay = cli("replay", "--backfill")
    assert "0 events queued" in replay.stdout
    assert sorted(cli.queued()) == before == sorted(ids_a | ids_b)
