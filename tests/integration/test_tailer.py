"""The tailer on real files: whole lines only, long lines, archives, rotation decisions."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from klaviyo_sync.exceptions import LogSourceError
from klaviyo_sync.parsers.tailer import (
    FileIdentity,
    archives,
    plan_follow,
    read_chunks,
)
from klaviyo_sync.state.schema import REJECT_RAW_BYTES


def chunks(data: bytes, offset: int = 0, chunk: int = 16, max_line: int = 64,
           final: bool = False) -> list:
    fh = io.BytesIO(data)
    fh.seek(offset)
    return list(read_chunks(fh, offset, chunk, max_line, final))


def test_only_complete_lines_are_consumed_and_offsets_are_contiguous() -> None:
    data = b"one\ntwo two\nthree three three\nfour\npartial"
    got = chunks(data)
    assert b"".join(c.data for c in got) == b"one\ntwo two\nthree three three\nfour\n"
    assert got[0].start == 0 and got[-1].end == data.rindex(b"\n") + 1
    assert all(a.end == b.start for a, b in itertools.pairwise(got))
    assert all(c.data.endswith(b"\n") for c in got)


def test_a_final_file_gives_its_unterminated_last_line() -> None:
    got = chunks(b"one\nlast", final=True)
    assert got[-1].data == b"last\n" and got[-1].end == 8


def test_resuming_mid_file_reads_from_the_offset() -> None:
    data = b"aaa\nbbb\nccc\n"
    got = chunks(data, offset=4)
    assert b"".join(c.data for c in got) == b"bbb\nccc\n" and got[0].start == 4


def test_crlf_and_invalid_utf8_pass_through_untouched() -> None:
    data = b"a\r\n\xff\xfe bad\r\nc\n"
    assert b"".join(c.data for c in chunks(data)) == data


def test_a_line_longer_than_the_chunk_but_within_the_limit_is_read_whole() -> None:
    line = b"x" * 50
    got = chunks(b"a\n" + line + b"\nb\n", chunk=16, max_line=64)
    assert b"".join(c.data for c in got) == b"a\n" + line + b"\nb\n"
    assert all(c.long_line is None for c in got)


def test_an_over_long_line_is_reported_by_head_length_and_hash_then_reading_goes_on() -> None:
    long = b"L" * (REJECT_RAW_BYTES + 5000)
    data = b"before\n" + long + b"\nafter\n"
    got = chunks(data, chunk=4096, max_line=1024)
    longs = [c for c in got if c.long_line]
    assert len(longs) == 1
    info = longs[0].long_line
    assert info.length == len(long) and info.head == long[:REJECT_RAW_BYTES]
    assert info.sha256 == hashlib.sha256(long).hexdigest()
    assert longs[0].start == 7 and longs[0].end == 7 + len(long) + 1
    assert b"".join(c.data for c in got) == b"before\nafter\n"


def test_an_over_long_line_still_being_written_is_not_consumed() -> None:
    got = chunks(b"ok\n" + b"L" * 5000, chunk=256, max_line=1024)
    assert [c.data for c in got] == [b"ok\n"]


def test_archives_are_found_oldest_first(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    for name in ("system.log", "system.log.1", "system.log.2.gz", "system.log.10.gz",
                 "system.log.3", "other.log.1", "system.log.bak", "system.log.1.tmp"):
        (tmp_path / name).write_bytes(b"x\n")
    assert [p.name for p in archives(live)] == [
        "system.log.10.gz", "system.log.3", "system.log.2.gz", "system.log.1"]


def test_identity_of_a_gzip_archive_is_its_content(tmp_path: Path) -> None:
    plain = tmp_path / "a.log"
    plain.write_bytes(b"2026-01-01 00:00:00 x\n" * 100)
    packed = tmp_path / "a.log.1.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    ident = FileIdentity.of(plain)
    assert ident.fingerprint_len == 1024
    assert ident.content_matches(packed)
    assert FileIdentity.of(packed).fingerprint == ident.fingerprint


@dataclass(frozen=True)
class Position:
    path: str
    identity: FileIdentity
    offset: int


def position(path: Path, offset: int | None = None) -> Position:
    size = path.stat().st_size
    return Position(str(path), FileIdentity.of(path), size if offset is None else offset)


def test_first_run_reads_the_live_file_from_the_start(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"a\n")
    plan = plan_follow(live, None)
    assert [(s.path, s.offset) for s in plan.sources] == [(live, 0)]


def test_same_file_resumes_at_the_offset(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"a\nb\n")
    plan = plan_follow(live, position(live, 2))
    assert [(s.path, s.offset) for s in plan.sources] == [(live, 2)]
    assert not (plan.rotated or plan.truncated or plan.missing)


def test_rename_rotation_finishes_the_old_file_then_starts_the_new(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"old 1\nold 2\n")
    last = position(live, 6)
    live.rename(tmp_path / "system.log.1")
    live.write_bytes(b"new 1\n")
    with capture_logs() as logs:
        plan = plan_follow(live, last)
    assert [(s.path.name, s.offset, s.final) for s in plan.sources] == [
        ("system.log.1", 6, True), ("system.log", 0, False)]
    assert plan.rotated and any(e["event"] == "log_rotated" for e in logs)


def test_the_old_file_is_found_by_inode_after_a_second_rotation(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"oldest\n")
    last = position(live, 0)
    live.rename(tmp_path / "system.log.1")
    (tmp_path / "system.log.1").rename(tmp_path / "system.log.2")
    (tmp_path / "system.log.1").write_bytes(b"middle\n")
    live.write_bytes(b"new\n")
    plan = plan_follow(live, last)
    assert [s.path.name for s in plan.sources] == ["system.log.2", "system.log"]


def test_an_old_file_compressed_at_rotation_is_finished_from_the_gzip(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    content = b"".join(b"2026-01-01 00:00:%02d line\n" % i for i in range(60))
    live.write_bytes(content)
    last = position(live, 100)
    live.unlink()
    (tmp_path / "system.log.1.gz").write_bytes(gzip.compress(content))
    live.write_bytes(b"new\n")
    plan = plan_follow(live, last)
    assert [(s.path.name, s.offset) for s in plan.sources] == [
        ("system.log.1.gz", 100), ("system.log", 0)]


def test_copytruncate_starts_over_and_finishes_the_copy(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"first line of the old content\nsecond\n")
    last = position(live, 30)
    (tmp_path / "system.log.1").write_bytes(live.read_bytes())
    with open(live, "r+b") as fh:
        fh.truncate(0)
    live.write_bytes(b"x\n")
    with capture_logs() as logs:
        plan = plan_follow(live, last)
    assert plan.truncated and any(e["event"] == "log_truncated" for e in logs)
    assert [(s.path.name, s.offset) for s in plan.sources] == [
        ("system.log.1", 30), ("system.log", 0)]


def test_copytruncate_detected_by_content_when_the_file_regrew(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"2026-01-01 old\n")
    last = position(live)
    with open(live, "r+b") as fh:
        fh.truncate(0)
        fh.write(b"2026-01-02 new content that is longer than before\n")
    plan = plan_follow(live, last)
    assert plan.truncated and [(s.path, s.offset) for s in plan.sources] == [(live, 0)]


def test_a_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    assert plan_follow(live, None).missing
    live.write_bytes(b"a\n")
    last = position(live)
    live.unlink()
    plan = plan_follow(live, last)
    assert plan.missing and plan.sources == ()


def test_a_deleted_old_file_is_warned_about(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"a\nb\n")
    last = position(live, 2)
    # Written aside then renamed over: a new inode (a plain unlink + create may reuse it).
    (tmp_path / "new").write_bytes(b"new file\n")
    (tmp_path / "new").rename(live)
    with capture_logs() as logs:
        plan = plan_follow(live, last)
    assert [(s.path, s.offset) for s in plan.sources] == [(live, 0)]
    assert any(e["event"] == "log_rotated_file_lost" for e in logs)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_a_log_source_error(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"a\n")
    live.chmod(0)
    with pytest.raises(LogSourceError, match=r"system\.log"):
        plan_follow(live, None)


def test_a_short_files_fingerprint_grows_with_it(tmp_path: Path) -> None:
    live = tmp_path / "system.log"
    live.write_bytes(b"first\n")
    small = FileIdentity.of(live)
    live.write_bytes(b"first\n" + b"more\n" * 500)
    with open(live, "rb") as fh:
        grown = small.grown(fh, live.stat().st_size)
    assert small.fingerprint_len == 6 and grown.fingerprint_len == 1024
    assert grown == FileIdentity.of(live) and grown.content_matches(live)


def test_a_file_vanishing_while_the_pass_is_planned_is_missing_not_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotation by rename + create, caught between the two: stat() saw the file, the
    open for its identity did not. Planning starts again, then calls it missing."""
    from klaviyo_sync.parsers import tailer

    live = tmp_path / "system.log"
    live.write_bytes(b"2020-05-15 12:35:32 cancelled customer=1\n")
    real = tailer.source_for
    vanishing = itertools.count()

    def source_for(path: Path, *args: object, **kwargs: object) -> object:
        if next(vanishing) < failures:
            raise FileNotFoundError(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tailer, "source_for", source_for)
    failures = 1
    plan = tailer.plan_follow(live, None)
    assert not plan.missing and [s.path for s in plan.sources] == [live]
    failures, vanishing = 99, itertools.count()
    assert tailer.plan_follow(live, None) == tailer.FollowPlan((), missing=True)
