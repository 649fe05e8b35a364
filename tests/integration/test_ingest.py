"""The Ingestor on real files and a real state database (SQLite and PostgreSQL)."""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from structlog.testing import capture_logs

from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import LogSettings, Settings
from klaviyo_sync.exceptions import LogSourceError, StateError
from klaviyo_sync.parsers import checkpoint, line_unique_id
from klaviyo_sync.parsers import ingest as ingest_module
from klaviyo_sync.parsers.ingest import Ingestor
from klaviyo_sync.parsers.rejects import RejectStore
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.schema import events

TYPES = ("started.signup", "cancelled", "contact.form", "failed.payment", "referral.credit",
         "shipping.email")
T0 = datetime(2024, 3, 1, 8, 0, 0)


def event_line(n: int, when: datetime | None = None) -> bytes:
    """A valid line of one of the six synced types, unique per ``n``."""
    stamp = (when or T0 + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
    kind = TYPES[n % len(TYPES)]
    return (f"{stamp} {kind} customer={1000 + n} email=c{n}@example.com "
            f"amount=12.50 order=o{n} reason=\"line {n}\"\n").encode()


def noise_line(n: int) -> bytes:
    stamp = (T0 + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} page.view customer={1000 + n} url=/boxes/{n}\n".encode()


def mixed(first: int, count: int) -> tuple[bytes, set[str]]:
    """``count`` numbered lines, every third one noise; and the ids of the event lines."""
    out, ids = [], set()
    for n in range(first, first + count):
        if n % 3 == 0:
            out.append(noise_line(n))
        else:
            line = event_line(n)
            out.append(line)
            ids.add(line_unique_id(line))
    return b"".join(out), ids


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "system.log"


def make_ingestor(engine: sa.Engine, live: Path, **log: object) -> Ingestor:
    options: dict = dict(path=str(live), read_chunk_bytes=4096, max_line_bytes=2048)
    options.update(log)
    return Ingestor(Settings().replace(log=LogSettings(**options)), engine)


def queued_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(events.c.unique_id)).scalars())


@pytest.fixture
def setup(state_engine: sa.Engine, live: Path) -> tuple[sa.Engine, Path]:
    live.parent.mkdir()
    return state_engine, live


def test_follow_reads_what_is_new_and_resumes_after_restart(setup: tuple) -> None:
    engine, live = setup
    data, ids = mixed(1, 300)
    live.write_bytes(data)
    first = make_ingestor(engine, live).run_once()
    assert first.events_enqueued == len(ids) and first.lines_read == 300
    assert first.skipped == 100 and first.rejected == 0
    more, more_ids = mixed(301, 30)
    append(live, more)
    second = make_ingestor(engine, live).run_once()  # a new process: state from the db
    assert (second.lines_read, second.events_enqueued, second.duplicates) == (30, 20, 0)
    assert sorted(queued_ids(engine)) == sorted(ids | more_ids)
    cp = checkpoint.load(engine, str(live))
    assert cp is not None and cp.offset == live.stat().st_size and cp.lines_read == 330


def test_a_partial_last_line_waits_for_its_newline(setup: tuple) -> None:
    engine, live = setup
    line = event_line(1)
    live.write_bytes(event_line(0) + line[:20])
    ingestor = make_ingestor(engine, live)
    assert ingestor.run_once().events_enqueued == 1
    append(live, line[20:])
    report = ingestor.run_once()
    assert report.events_enqueued == 1 and report.rejected == 0
    assert line_unique_id(line) in queued_ids(engine)


def test_rename_rotation_while_tailing_loses_and_repeats_nothing(setup: tuple) -> None:
    engine, live = setup
    part1, ids1 = mixed(1, 200)
    part2, ids2 = mixed(201, 50)  # written after the last pass, before the rotation
    part3, ids3 = mixed(251, 70)  # the new file
    live.write_bytes(part1)
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    append(live, part2)
    live.rename(live.with_name("system.log.1"))
    live.write_bytes(part3)
    with capture_logs() as logs:
        report = ingestor.run_once()
    assert report.rotated and any(e["event"] == "log_rotated" for e in logs)
    assert report.events_enqueued == len(ids2) + len(ids3) and report.duplicates == 0
    assert sorted(queued_ids(engine)) == sorted(ids1 | ids2 | ids3)
    assert ingestor.run_once().lines_read == 0


def test_copytruncate_while_tailing_loses_and_repeats_nothing(setup: tuple) -> None:
    engine, live = setup
    part1, ids1 = mixed(1, 200)
    part2, ids2 = mixed(201, 50)
    part3, ids3 = mixed(251, 10)  # shorter than what was read: the file shrank
    live.write_bytes(part1)
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    append(live, part2)
    shutil.copyfile(live, live.with_name("system.log.1"))
    with open(live, "r+b") as fh:
        fh.truncate(0)
    append(live, part3)
    with capture_logs() as logs:
        report = ingestor.run_once()
    assert report.truncated and any(e["event"] == "log_truncated" for e in logs)
    assert sorted(queued_ids(engine)) == sorted(ids1 | ids2 | ids3)
    assert report.duplicates == 0


def write_archives(live: Path) -> set[str]:
    oldest, ids2 = mixed(1, 150)
    middle, ids1 = mixed(151, 150)
    newest, ids0 = mixed(301, 150)
    live.with_name("system.log.2.gz").write_bytes(gzip.compress(oldest))
    live.with_name("system.log.1").write_bytes(middle)
    live.write_bytes(newest)
    return ids0 | ids1 | ids2


def test_replay_reads_archives_oldest_first_then_live_and_twice_adds_nothing(
        setup: tuple) -> None:
    engine, live = setup
    expected = write_archives(live)
    seen: list[tuple[int, int]] = []
    ingestor = make_ingestor(engine, live)
    first = ingestor.replay(progress=lambda done, total: seen.append((done, total)))
    assert [Path(f).name for f in first.files] == ["system.log.2.gz", "system.log.1",
                                                   "system.log"]
    assert first.events_enqueued == len(expected) == len(set(queued_ids(engine)))
    assert sorted(queued_ids(engine)) == sorted(expected)
    with engine.connect() as conn:  # oldest archive first: its events got the lowest ids
        first_id = conn.execute(sa.select(events.c.unique_id).order_by(events.c.id)).first()
    assert first_id is not None and first_id[0] == line_unique_id(event_line(1))
    assert seen[-1][0] == seen[-1][1]
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen))
    second = ingestor.replay()
    assert (second.events_enqueued, second.duplicates) == (0, len(expected))
    cp = checkpoint.load(engine, str(live))
    assert cp is not None and cp.path == str(live) and cp.offset == live.stat().st_size
    assert ingestor.run_once().lines_read == 0


def test_tail_then_replay_adds_nothing(setup: tuple) -> None:
    engine, live = setup
    part1, ids1 = mixed(1, 200)
    part2, ids2 = mixed(201, 100)
    live.write_bytes(part1)
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    live.rename(live.with_name("system.log.1"))
    live.write_bytes(part2)
    ingestor.run_once()
    subprocess_gzip(live.with_name("system.log.1"))
    replay = ingestor.replay()
    assert replay.events_enqueued == 0 and replay.duplicates == len(ids1 | ids2)
    assert sorted(queued_ids(engine)) == sorted(ids1 | ids2)


def subprocess_gzip(path: Path) -> None:
    """What logrotate's compress does: path -> path.gz, original removed."""
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()


def test_old_events_are_backfill_recent_ones_are_not_and_replay_can_force_it(
        setup: tuple) -> None:
    engine, live = setup
    recent = event_line(1, utcnow() - timedelta(hours=1))
    old = event_line(2, utcnow() - timedelta(hours=30))
    live.write_bytes(recent + old)
    make_ingestor(engine, live).run_once()
    store = QueueStore(engine)
    flags = {e.unique_id: e.backfill for e in store.list()}
    assert flags == {line_unique_id(recent): False, line_unique_id(old): True}
    with engine.begin() as conn:
        conn.execute(events.delete())
    make_ingestor(engine, live).replay(backfill=True)
    assert all(e.backfill for e in store.list()) and len(store.list()) == 2


def test_bad_lines_are_rejected_once_and_nothing_after_them_is_lost(setup: tuple) -> None:
    engine, live = setup
    good_before, good_after = event_line(1), event_line(2)
    bad = [
        b"2024-03-01 08:00:00 cancelled customer=\"unterminated\n",
        b"2024-02-30 08:00:00 failed.payment customer=5 amount=1\n",
        b"1970-01-01 00:00:00 cancelled customer=5\n",
        b"2024-03-01 08:00:00 started.signup customer=5 " + b"x" * 3000 + b"\n",
    ]
    crlf = event_line(3).replace(b"\n", b"\r\n")
    latin1 = "2024-03-01 08:00:09 contact.form email=b@example.com name=Jos\xe9\n".encode(
        "latin-1")
    live.write_bytes(good_before + b"".join(bad) + crlf + latin1
                     + b"2024-03-01 08:00:00 login customer=1\n" + good_after)
    ingestor = make_ingestor(engine, live)
    report = ingestor.run_once()
    ids = set(queued_ids(engine))
    assert {line_unique_id(good_before), line_unique_id(good_after),
            line_unique_id(crlf)} <= ids
    store = RejectStore(engine)
    rejects = store.list()
    latin_rejected = any(r.raw == latin1.rstrip(b"\n") for r in rejects)
    assert (line_unique_id(latin1) in ids) != latin_rejected  # either way, not lost
    assert report.rejected == len(rejects) == len(bad) + latin_rejected
    reasons = {r.offset: r for r in rejects}
    long_reject = next(r for r in rejects if "max_line_bytes" in r.reason)
    assert long_reject.length == len(bad[3]) - 1 and long_reject.event_type == "started.signup"
    assert all(r.reason and r.file == str(live) for r in reasons.values())
    assert any("1990" in r.reason for r in rejects)
    ingestor.replay()
    assert store.count() == len(rejects)  # the same bad lines are not filed twice


def test_a_huge_line_is_scanned_not_loaded_and_reading_goes_on(setup: tuple) -> None:
    engine, live = setup
    huge = b"2024-03-01 08:00:00 contact.form message=" + b"m" * 5_000_000 + b"\n"
    after = event_line(7)
    live.write_bytes(event_line(6) + huge + after)
    report = make_ingestor(engine, live, read_chunk_bytes=65536,
                           max_line_bytes=1_048_576).run_once()
    assert report.rejected == 1 and report.events_enqueued == 2
    (reject,) = RejectStore(engine).list()
    assert reject.length == len(huge) - 1 and reject.truncated
    assert reject.raw == huge[:len(reject.raw)] and len(reject.raw) <= 65536
    assert reject.event_type == "contact.form" and "1048576" in reject.reason


def test_a_missing_file_is_warned_about_at_most_every_interval(setup: tuple) -> None:
    engine, live = setup
    ingestor = make_ingestor(engine, live, missing_file_warn_s=60.0)
    with freeze_time("2026-01-01 00:00:00") as frozen, capture_logs() as logs:
        assert ingestor.run_once().file_missing
        frozen.tick(30)
        ingestor.run_once()
        frozen.tick(31)
        ingestor.run_once()
    assert [e["event"] for e in logs].count("log_missing") == 2
    live.write_bytes(event_line(1))
    report = ingestor.run_once()
    assert not report.file_missing and report.events_enqueued == 1


def test_events_and_checkpoint_commit_together(setup: tuple,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    engine, live = setup
    data, ids = mixed(1, 400)
    live.write_bytes(data)
    real_save = checkpoint.save
    calls = []

    def failing_save(conn: sa.Connection, cp: checkpoint.Checkpoint) -> None:
        calls.append(cp.offset)
        if len(calls) == 3:
            raise sa.exc.OperationalError("UPDATE checkpoints", {}, Exception("disk I/O error"))
        real_save(conn, cp)

    monkeypatch.setattr(ingest_module.checkpoint, "save", failing_save)
    with pytest.raises(StateError, match="disk I/O error"):
        make_ingestor(engine, live).run_once()
    cp = checkpoint.load(engine, str(live))
    committed = cp.offset if cp else 0
    assert committed < calls[2]
    # Exactly the events before the committed offset are queued: the third chunk's
    # events (and any chunk sharing its transaction) were rolled back with it.
    before, before_ids = data[:committed], set()
    for line in before.splitlines(keepends=True):
        if b"page.view" not in line:
            before_ids.add(line_unique_id(line))
    assert sorted(queued_ids(engine)) == sorted(before_ids)
    monkeypatch.setattr(ingest_module.checkpoint, "save", real_save)
    make_ingestor(engine, live).run_once()
    assert sorted(queued_ids(engine)) == sorted(ids)


def test_a_stop_request_ends_the_pass_after_the_chunk_in_flight(setup: tuple) -> None:
    engine, live = setup
    data, ids = mixed(1, 600)
    live.write_bytes(data)
    import threading

    stop = threading.Event()
    stop.set()
    ingestor = make_ingestor(engine, live)
    report = ingestor.run_once(stop=stop)
    assert report.stopped and 0 < report.bytes_read < len(data)
    ingestor.run_once()
    assert sorted(queued_ids(engine)) == sorted(ids)


def test_a_parser_crash_rejects_the_line_and_reading_goes_on(
        setup: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, live = setup
    crashing, fine = event_line(1), event_line(2)
    live.write_bytes(crashing + fine)
    ingestor = make_ingestor(engine, live)
    real_parse = ingestor.parser.entry_fields  # what the ingest calls per line

    def parse(line: bytes, now: datetime | None = None) -> object:
        if line == crashing.rstrip(b"\n"):
            raise KeyError("a bug")
        return real_parse(line, now)

    monkeypatch.setattr(ingestor.parser, "entry_fields", parse)
    with capture_logs() as logs:
        report = ingestor.run_once()
    assert report.rejected == 1 and report.events_enqueued == 1
    assert any(e["event"] == "line_parse_crashed" for e in logs)
    (reject,) = RejectStore(engine).list()
    assert "KeyError" in reject.reason and reject.raw == crashing.rstrip(b"\n")
    assert queued_ids(engine) == [line_unique_id(fine)]


@pytest.mark.parametrize("rotation", ["rename", "copytruncate"])
def test_rotation_while_a_writer_keeps_appending(setup: tuple, rotation: str) -> None:
    """The business system writes (sometimes half a line at a time) while passes run and
    logrotate strikes midway: every event line is queued exactly once."""
    engine, live = setup
    import threading

    total, ids = 3000, set()
    lines = []
    for n in range(total):
        line = event_line(n) if n % 4 else noise_line(n)
        lines.append(line)
        if n % 4:
            ids.add(line_unique_id(line))
    done, pass_done = threading.Event(), threading.Event()

    def business_system() -> None:
        fh = open(live, "ab", buffering=0)  # noqa: SIM115 - reopened at rotation
        for n, line in enumerate(lines):
            if n in (total // 4, total // 2 - 5, total // 2 + 5, 3 * total // 4):
                # Make sure a pass reads the file mid-write, just before and after the
                # rotation too.
                pass_done.clear()
                pass_done.wait(10)
            if n == total // 2:
                fh.close()
                if rotation == "rename":
                    live.rename(live.with_name("system.log.1"))
                else:
                    shutil.copyfile(live, live.with_name("system.log.1"))
                    with open(live, "r+b") as trunc:
                        trunc.truncate(0)
                fh = open(live, "ab", buffering=0)  # noqa: SIM115
            if n % 7 == 0:  # a line written in two parts: the tailer may see half of it
                fh.write(line[:10])
                fh.write(line[10:])
            else:
                fh.write(line)
        fh.close()
        done.set()

    live.touch()
    ingestor = make_ingestor(engine, live, read_chunk_bytes=4096)
    writer = threading.Thread(target=business_system)
    writer.start()
    passes = 0
    while not done.is_set():
        ingestor.run_once()
        pass_done.set()
        passes += 1
    writer.join()
    ingestor.run_once()
    queued = queued_ids(engine)
    assert len(queued) == len(set(queued)) and set(queued) == ids
    assert RejectStore(engine).count() == 0 and passes >= 4


def test_rename_between_planning_and_reading_loses_nothing(
        setup: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """logrotate renames the log after a pass has planned to resume it but before the pass
    opens it: the pass must not read the new file at the old file's offset."""
    from klaviyo_sync.parsers import ingest

    engine, live = setup
    lines = [event_line(n) for n in range(30)]
    live.write_bytes(b"".join(lines[:10]))
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    with live.open("ab") as fh:
        fh.write(b"".join(lines[10:20]))
    real_open = ingest.open_log
    rotated = []

    def open_racing_logrotate(path: Path) -> object:
        if not rotated and path == live:
            live.rename(live.with_name("system.log.1"))
            live.write_bytes(b"".join(lines[20:]))
            rotated.append(True)
        return real_open(path)

    monkeypatch.setattr(ingest, "open_log", open_racing_logrotate)
    ingestor.run_once()
    ingestor.run_once()
    assert rotated
    queued = queued_ids(engine)
    assert len(queued) == len(set(queued))
    assert set(queued) == {line_unique_id(line) for line in lines}


def test_a_rejected_line_is_logged_as_a_warning_as_well_as_stored(
        setup: tuple[sa.Engine, Path]) -> None:
    engine, live = setup
    live.write_bytes(event_line(1) + b"2024-03-01 08:00:02 cancelled customer=\"unterminated\n")
    with capture_logs() as logs:
        report = make_ingestor(engine, live).run_once()
    assert report.rejected == 1 and RejectStore(engine).count() == 1
    (warning,) = [e for e in logs if e["event"] == "line_rejected"]
    assert warning["log_level"] == "warning"
    assert warning["file"] == str(live) and warning["offset"] == len(event_line(1))
    assert warning["event_type"] == "cancelled" and warning["reason"]


def test_a_nul_character_is_a_reject_and_ingest_goes_on(setup: tuple) -> None:
    """PostgreSQL refuses NUL in text: the line must be refused before, on every backend."""
    engine, live = setup
    nul_customer = b"2024-03-01 08:00:01 cancelled customer=10\x0004\n"
    nul_email = b"2024-03-01 08:00:02 started.signup customer=1 email=a\x00@example.com\n"
    before, after = event_line(1), event_line(2)
    live.write_bytes(before + nul_customer + nul_email + after)
    ingestor = make_ingestor(engine, live)
    report = ingestor.run_once()
    assert report.rejected == 2 and report.events_enqueued == 2
    assert sorted(queued_ids(engine)) == sorted([line_unique_id(before), line_unique_id(after)])
    rejects = RejectStore(engine).list()
    assert {r.raw for r in rejects} == {nul_customer.rstrip(b"\n"), nul_email.rstrip(b"\n")}
    assert all("NUL" in r.reason for r in rejects)
    assert ingestor.run_once().lines_read == 0  # not stuck on the line


def test_an_event_type_one_field_early_is_rejected_not_skipped(setup: tuple) -> None:
    engine, live = setup
    no_time = b"2020-05-15 cancelled customer=1004\n"
    live.write_bytes(event_line(1) + no_time + b"2020-05-15 login customer=1\n" + event_line(2))
    report = make_ingestor(engine, live).run_once()
    assert (report.events_enqueued, report.rejected) == (2, 1)
    (reject,) = RejectStore(engine).list()
    assert reject.raw == no_time.rstrip(b"\n") and reject.event_type == "cancelled"
    assert "no time of day" in reject.reason


def readable_ids(archive: bytes) -> set[str]:
    """The ids of the complete event lines a damaged gzip archive still yields."""
    import zlib

    readable = zlib.decompressobj(31).decompress(archive)
    complete = readable[:readable.rfind(b"\n") + 1]
    return {line_unique_id(line + b"\n") for line in complete.splitlines()
            if b" page.view " not in line}


def _ids_of(data: bytes) -> set[str]:
    return {line_unique_id(line) for line in data.splitlines(keepends=True)}


def test_replay_reads_the_readable_part_of_damaged_archives_and_the_other_files(
        setup: tuple) -> None:
    engine, live = setup
    oldest, ids3 = mixed(1, 300)
    middle, ids2 = mixed(301, 4000)  # well over what the reader holds back
    newest, ids1 = mixed(4301, 100)
    current, ids0 = mixed(4401, 100)
    truncated = gzip.compress(oldest)[:-300]  # logrotate killed mid-compress
    # Two gzip members (an archive appended to), the second with a bad disk block: its
    # data inflates to garbage that only its CRC reveals, so none of it can be trusted.
    cut = middle.index(b"\n", len(middle) // 2) + 1
    sound, damaged_member = gzip.compress(middle[:cut]), bytearray(gzip.compress(middle[cut:]))
    damaged_member[len(damaged_member) // 2:len(damaged_member) // 2 + 64] = b"\xff" * 64
    live.with_name("system.log.3.gz").write_bytes(truncated)
    live.with_name("system.log.2.gz").write_bytes(sound + bytes(damaged_member))
    live.with_name("system.log.1").write_bytes(newest)
    live.write_bytes(current)
    report = make_ingestor(engine, live).replay()
    queued = set(queued_ids(engine))
    assert ids1 | ids0 <= queued  # the files after the damaged ones are read
    assert readable_ids(truncated) <= queued and len(readable_ids(truncated)) > 100
    assert queued & ids2 == ids2 & _ids_of(middle[:cut])
    assert queued <= ids3 | ids2 | ids1 | ids0  # nothing invented
    rejects = RejectStore(engine).list()
    damaged = sorted(Path(r.file).name for r in rejects)
    assert damaged == ["system.log.2.gz", "system.log.3.gz"] and report.rejected == 2
    assert all("gzip" in r.reason and r.file in r.reason for r in rejects)
    make_ingestor(engine, live).replay()
    assert RejectStore(engine).count() == 2  # the damage is filed once


def test_a_truncated_archive_met_while_following_does_not_stop_the_tail(
        setup: tuple) -> None:
    engine, live = setup
    part1, ids1 = mixed(1, 200)
    part2, ids2 = mixed(201, 200)  # written after the last pass, then rotated away
    part3, ids3 = mixed(401, 50)
    live.write_bytes(part1)
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    append(live, part2)
    old = live.rename(live.with_name("system.log.1"))
    truncated = gzip.compress(old.read_bytes())[:-200]
    old.with_name("system.log.1.gz").write_bytes(truncated)
    old.unlink()
    live.write_bytes(part3)
    report = ingestor.run_once()
    queued = set(queued_ids(engine))
    assert ids1 | ids3 <= queued and readable_ids(truncated) - ids1 <= queued
    assert queued <= ids1 | ids2 | ids3
    (reject,) = RejectStore(engine).list()
    assert reject.file.endswith("system.log.1.gz") and "gzip" in reject.reason
    assert report.rejected == 1
    again = ingestor.run_once()
    assert again.lines_read == 0 and again.rejected == 0


def _run_in_thread(func: Callable[[], object], timeout_s: float = 20.0) -> BaseException:
    """What ``func`` raised; fails the test if it still runs after ``timeout_s``."""
    import threading

    raised: list[BaseException] = []

    def target() -> None:
        try:
            func()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout_s)
    assert not worker.is_alive(), "blocked: the pass never returned"
    assert raised, "no error raised"
    return raised[0]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("how", ["run_once", "replay"])
def test_a_log_path_that_is_no_regular_file_is_one_clear_error(
        setup: tuple, kind: str, how: str) -> None:
    engine, live = setup
    if kind == "fifo":
        os.mkfifo(live)
    else:
        live.mkdir()
    ingestor = make_ingestor(engine, live)
    error = _run_in_thread(getattr(ingestor, how))
    assert isinstance(error, LogSourceError) and error.exit_code == 4
    expected = "a FIFO" if kind == "fifo" else "a directory"
    assert str(live) in str(error) and expected in str(error) and "\n" not in str(error)


BANNER = b"# shop backend log, format kv v2 " + b"=" * 1100 + b"\n"  # > FINGERPRINT_BYTES


def banner_file(first: int, count: int) -> tuple[bytes, set[str]]:
    data, ids = mixed(first, count)
    return BANNER + data, ids


def test_copytruncate_while_stopped_with_a_long_banner_loses_nothing(setup: tuple) -> None:
    engine, live = setup
    part1, ids1 = banner_file(1, 30)
    live.write_bytes(part1)
    make_ingestor(engine, live).run_once()
    # Stopped: logrotate copies and truncates; the new file (same banner) grows past the
    # old offset before the next pass.
    shutil.copyfile(live, live.with_name("system.log.1"))
    with open(live, "r+b") as fh:
        fh.truncate(0)
    part2, ids2 = banner_file(101, 68)  # 45 events, longer than part1
    append(live, part2)
    assert live.stat().st_size > len(part1)
    make_ingestor(engine, live).run_once()
    assert len(ids2) == 45 and sorted(queued_ids(engine)) == sorted(ids1 | ids2)


def test_compress_rotation_with_inode_reuse_and_a_long_banner_loses_nothing(
        setup: tuple) -> None:
    engine, live = setup
    old_archive, old_ids = banner_file(1, 20)
    live.with_name("system.log.2.gz").write_bytes(gzip.compress(old_archive))
    part1, ids1 = banner_file(101, 30)
    live.write_bytes(part1)
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    more, ids_more = mixed(201, 8)  # after the last pass, before the rotation
    append(live, more)
    inode = live.stat().st_ino
    rotated = live.rename(live.with_name("system.log.1"))
    rotated.with_name("system.log.1.gz").write_bytes(gzip.compress(rotated.read_bytes()))
    rotated.unlink()  # frees the inode...
    part2, ids2 = banner_file(301, 60)
    live.write_bytes(part2)  # ...which the new live file may get
    reused = live.stat().st_ino == inode
    ingestor.run_once()
    queued = queued_ids(engine)
    assert len(queued) == len(set(queued))
    assert set(queued) == ids1 | ids_more | ids2, f"inode reused: {reused}"
    assert not set(queued) & old_ids  # the old archive is not read again


def test_compress_rotation_onto_the_same_inode_loses_nothing(setup: tuple) -> None:
    """The inode reuse forced: the new live file is the old inode, rewritten."""
    engine, live = setup
    live.with_name("system.log.2.gz").write_bytes(gzip.compress(banner_file(1, 20)[0]))
    part1, ids1 = banner_file(101, 30)
    live.write_bytes(part1)
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    more, ids_more = mixed(201, 8)
    append(live, more)
    live.with_name("system.log.1.gz").write_bytes(gzip.compress(live.read_bytes()))
    part2, ids2 = banner_file(301, 60)
    with open(live, "r+b") as fh:  # same inode, new content, longer than the old
        fh.truncate(0)
        fh.write(part2)
    ingestor.run_once()
    queued = queued_ids(engine)
    assert len(queued) == len(set(queued)) and set(queued) == ids1 | ids_more | ids2


def test_a_symlink_swap_reads_the_old_target_to_its_end_first(setup: tuple) -> None:
    engine, live = setup
    first, second = live.with_name("app-1.log"), live.with_name("app-2.log")
    part1, ids1 = banner_file(1, 30)
    first.write_bytes(part1)
    live.symlink_to(first.name)
    ingestor = make_ingestor(engine, live)
    ingestor.run_once()
    late, late_ids = mixed(101, 12)  # appended to the old target after the last pass
    append(first, late)
    part2, ids2 = banner_file(201, 30)
    second.write_bytes(part2)
    live.unlink()
    live.symlink_to(second.name)
    ingestor.run_once()
    queued = queued_ids(engine)
    assert len(queued) == len(set(queued)) and set(queued) == ids1 | late_ids | ids2
    append(second, mixed(301, 3)[0])
    assert ingestor.run_once().lines_read == 3


def test_a_copytruncate_after_the_plan_loses_and_repeats_nothing(
        setup: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """logrotate's copy and truncate strike between a pass's plan and its read, and the
    business system writes past the planned offset before the read starts: the pass
    must not read the new content from the old offset (misaligned, and the copy's rest
    lost). It stops; the next pass reads the copy on from the offset, then the new file."""
    engine, live = setup
    old, old_ids = mixed(1, 200)
    live.write_bytes(old)
    assert make_ingestor(engine, live).run_once().events_enqueued == len(old_ids)
    more, more_ids = mixed(201, 100)  # written, then rotated away before it is read
    append(live, more)
    new, new_ids = mixed(1001, 400)  # the new content outgrows the old offset
    real_plan = ingest_module.plan_follow

    def plan_then_rotate(path: Path, last: object) -> object:
        plan = real_plan(path, last)  # type: ignore[arg-type]
        shutil.copyfile(live, live.with_name("system.log.1"))
        with open(live, "r+b") as fh:
            fh.truncate(0)
        append(live, new)
        return plan

    with monkeypatch.context() as patch:
        patch.setattr(ingest_module, "plan_follow", plan_then_rotate)
        with capture_logs() as logs:
            make_ingestor(engine, live).run_once()
    # The bytes before the offset are no longer those the plan found: nothing is read.
    assert "log_changed_while_planning" in [e["event"] for e in logs]
    make_ingestor(engine, live).run_once()
    queued = queued_ids(engine)
    assert len(queued) == len(set(queued))
    assert set(queued) == old_ids | more_ids | new_ids


@pytest.mark.parametrize("moment", ["before the next chunk", "before the checkpoint"])
def test_a_copytruncate_while_reading_loses_and_repeats_nothing(
        setup: tuple, monkeypatch: pytest.MonkeyPatch, moment: str) -> None:
    """logrotate strikes in the middle of a pass, after a chunk was read, and the business
    system writes on past where the pass is: the pass keeps what it read, stops, and the
    next one finds the old content's copy by the bytes before its checkpoint, reads it on,
    then the new file. Struck before the chunk's checkpoint is made, the checkpoint must
    still describe the bytes that were read (it once read them again from the file, and
    got the new content's: the copy was then not recognised and its rest lost)."""
    engine, live = setup
    old, old_ids = mixed(1, 300)
    live.write_bytes(old)
    new, new_ids = mixed(1001, 400)  # the new content outgrows the first chunk's end
    real_parse, real_chunks = Ingestor._parse_chunk, ingest_module.read_chunks

    def rotate() -> None:
        shutil.copyfile(live, live.with_name("system.log.1"))
        with open(live, "r+b") as fh:
            fh.truncate(0)
        append(live, new)

    def parse_then_rotate(self: Ingestor, chunk: object, *args: object) -> object:
        parsed = real_parse(self, chunk, *args)  # type: ignore[arg-type]
        if not getattr(parse_then_rotate, "done", False):
            parse_then_rotate.done = True  # type: ignore[attr-defined]
            rotate()  # the chunk was read and the head checked; its checkpoint is next
        return parsed

    def rotate_after_first(*args: object) -> object:
        chunks = real_chunks(*args)  # type: ignore[arg-type]
        yield next(chunks)
        rotate()  # the next chunk is read from the new content, where the old one was
        yield from chunks

    with monkeypatch.context() as patch:
        if moment == "before the checkpoint":
            patch.setattr(Ingestor, "_parse_chunk", parse_then_rotate)
        else:
            patch.setattr(ingest_module, "read_chunks", rotate_after_first)
        with capture_logs() as logs:
            first = make_ingestor(engine, live).run_once()
    assert "log_truncated_while_reading" in [e["event"] for e in logs]
    assert 0 < first.events_enqueued < len(old_ids)
    with capture_logs() as logs:
        make_ingestor(engine, live).run_once()
    assert "log_truncated" in [e["event"] for e in logs]
    queued = queued_ids(engine)
    assert len(queued) == len(set(queued))
    assert set(queued) == old_ids | new_ids


@pytest.mark.parametrize("size", ["within one read", "across reads"])
def test_a_pass_ending_on_an_over_long_line_resumes_after_it(setup: tuple, size: str) -> None:
    """An over-long line is not kept whole, yet the checkpoint after it must hold the
    digest of the bytes before its offset, or the next pass takes the file for another
    one and reads it again from the start."""
    engine, live = setup
    first, first_ids = mixed(1, 20)
    body = "".join(f"{n:08d}" for n in range(700 if size == "within one read" else 1200)).encode()
    live.write_bytes(first + b"2024-03-01 08:00:00 contact.form note=" + body + b"\n")
    make_ingestor(engine, live).run_once()
    more, more_ids = mixed(101, 20)
    append(live, more)
    with capture_logs() as logs:
        report = make_ingestor(engine, live).run_once()
    assert not {"log_truncated", "log_rotated"} & {e["event"] for e in logs}
    assert report.events_enqueued == len(more_ids)
    assert set(queued_ids(engine)) == first_ids | more_ids
