"""From log bytes to queued events: the tail pass and the replay.

Every chunk of complete lines is parsed, then its events, its rejects and the checkpoint
just past it are committed in ONE transaction. That is what makes a kill -9 harmless: the
bytes after the last committed checkpoint are read again, and the bytes before it were
committed together with everything they produced.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from klaviyo_sync.clock import utcnow
from klaviyo_sync.config import Settings
from klaviyo_sync.exceptions import ParseError, StateError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.parsers import checkpoint
from klaviyo_sync.parsers.archive import ArchiveDamaged
from klaviyo_sync.parsers.checkpoint import Checkpoint
from klaviyo_sync.parsers.line_parser import LineParser
from klaviyo_sync.parsers.rejects import RejectStore, reject_row
from klaviyo_sync.parsers.report import IngestReport, Tally
from klaviyo_sync.parsers.tailer import (
    TAIL_BYTES,
    Chunk,
    Source,
    archives,
    is_gzip,
    open_log,
    plan_follow,
    read_chunks,
    source_for,
    tail_digest,
)
from klaviyo_sync.parsers.writer import OrderedWriter
from klaviyo_sync.queue.bulk import BulkEnqueuer
from klaviyo_sync.queue.store import QueueStore

log = get_logger(__name__)

Progress = Callable[[int, int], None]

# A transaction takes up to this many chunks' worth of bytes, or stays open this long,
# whichever comes first (see parsers/writer.py for why grouping pays).
_GROUP_COMMIT_CHUNKS = 4
_GROUP_COMMIT_S = 1.0


@dataclass
class _Parsed:
    """One chunk's worth of work for one transaction."""

    rows: list[Any] = field(default_factory=list)  # as BulkEnqueuer.add takes them
    events: int = 0  # event rows the chunk made (rows is emptied once they are written)
    inserted: int = 0  # rows that were new (counted by the write that took them)
    new_rejects: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    skipped: int = 0
    path: str = ""
    bytes: int = 0
    checkpoint: Checkpoint | None = None


class Ingestor:
    """Reads the configured log into the queue: follow (:meth:`run_once`) or :meth:`replay`."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.live = Path(settings.log.path)
        self.parser = LineParser(settings.log, settings.events, settings.klaviyo.default_currency,
                                 settings.unique_ids)
        self.store = QueueStore(engine)
        self.enqueuer = BulkEnqueuer(self.store)
        self.backfill_after = timedelta(hours=settings.log.backfill_after_hours)
        self._missing_warned_at: datetime | None = None

    # --- the two ways in ------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> IngestReport:
        """Read everything new since the checkpoint (following rotation), then return."""
        started = time.monotonic()
        last = self._load_checkpoint()
        plan = plan_follow(self.live, last)
        if plan.missing:
            self._warn_missing()
        else:
            self._missing_warned_at = None
        tally = Tally(offset=last.offset if last else 0, dst_at_start=self._dst_counts())
        with self._writer(tally) as writer:
            for source in plan.sources:
                lines_before = last.lines_read if last and source.offset else 0
                if not self._read(source, tally, writer, force_backfill=False,
                                  keep_checkpoint=True, lines_before=lines_before, stop=stop):
                    break
        return self._report(tally, started, missing=plan.missing, rotated=plan.rotated,
                            truncated=plan.truncated)

    def replay(self, backfill: bool = False, progress: Progress | None = None,
               stop: threading.Event | None = None) -> IngestReport:
        """Read every archive (oldest first), then the live file, from their beginning.

        Nothing is queued twice (ids are content-derived); the checkpoint is left at the
        end of the live file, so following carries on from there.
        """
        started = time.monotonic()
        paths = archives(self.live)
        live_exists = self.live.exists()
        sources = [source_for(p, 0, final=True) for p in paths]
        if live_exists:
            sources.append(source_for(self.live))
        total = sum(s.size for s in sources)
        log.info("replay_started", path=str(self.live), files=len(sources), bytes=total,
                 backfill=backfill)
        tally = Tally(dst_at_start=self._dst_counts())
        done = 0
        with self._writer(tally) as writer:
            for source in sources:
                going_on = self._read(source, tally, writer, force_backfill=backfill,
                                      keep_checkpoint=source.path == self.live,
                                      lines_before=0, stop=stop, progress=progress,
                                      progress_base=done, progress_total=total)
                done += source.size
                if progress is not None:
                    progress(min(done, total), total)
                if not going_on:
                    break
        report = self._report(tally, started, missing=not live_exists)
        log.info("replay_finished", **report.to_json())
        return report

    # --- reading one file -----------------------------------------------------------------

    @contextmanager
    def _writer(self, tally: Tally) -> Iterator[OrderedWriter[_Parsed, None]]:
        writer = OrderedWriter(self._transaction,
                               functools.partial(self._apply, self.enqueuer),
                               functools.partial(self._committed, tally),
                               weight=lambda parsed: parsed.bytes + 1,
                               max_weight=_GROUP_COMMIT_CHUNKS * self.settings.log.read_chunk_bytes,
                               max_open_s=_GROUP_COMMIT_S,
                               finish=functools.partial(self._finish, self.enqueuer))
        try:
            yield writer
        finally:
            writer.close()

    def _read(self, source: Source, tally: Tally,
              writer: OrderedWriter[_Parsed, None], *, force_backfill: bool,
              keep_checkpoint: bool, lines_before: int, stop: threading.Event | None,
              progress: Progress | None = None, progress_base: int = 0,
              progress_total: int = 0) -> bool:
        """Read ``source`` from its offset; whether the pass goes on to the next source
        (not when stopped, nor when the file changed under the pass)."""
        cfg = self.settings.log
        identity = source.identity
        lines_read = lines_before
        offset = source.offset
        # The live file is read up to the size it had when the pass began, so a pass ends
        # even while the business system keeps writing.
        limit = None if source.final else source.size
        tally.files.append(str(source.path))
        log.debug("file_reading", path=str(source.path), offset=offset, size=source.size)
        try:
            fh = open_log(source.path)
        except FileNotFoundError:
            log.warning("log_vanished", path=str(source.path))
            return True
        if not identity.same_inode(os.fstat(fh.fileno())):
            # Rotated between planning and opening (the path now names another file):
            # reading it at the planned offset would mix two files. Read nothing; the next
            # pass plans again, sees the rotation, and finishes the old file first.
            fh.close()
            log.info("log_rotated_while_planning", path=str(source.path))
            return True
        # Where the checkpoint says it read: a symlinked log by its target, so that the
        # old target is finished after a swap (see plan_follow).
        where = str(source.path.resolve()) if source.path.is_symlink() else str(source.path)
        # The bytes just before where the pass has read to: each checkpoint's tail. Kept
        # from what was read, never read again: a file truncated and written anew between
        # a chunk and its checkpoint would give the new content's bytes, and the next pass
        # would then not know the old content's copy for the file it read. It starts as
        # the bytes before the offset, which must still be those the plan found there.
        window = b""
        if offset and not is_gzip(source.path):
            width = min(offset, TAIL_BYTES)
            window = os.pread(fh.fileno(), width, offset - width)
            if source.tail and (len(window) != width or tail_digest(window) != source.tail):
                fh.close()
                log.info("log_changed_while_planning", path=str(source.path), offset=offset)
                return False  # the next pass plans again from the checkpoint
        # A live file can be truncated (copytruncate) after the plan and grown again past
        # the offset: its bytes there would be the new content, misaligned. Each chunk is
        # kept only if the file still starts as it did; if not, the pass stops here and
        # the next one finds the old content's copy and reads on from this offset.
        watch_head = not source.final and not is_gzip(source.path)
        truncated = False
        with fh:
            if offset:
                fh.seek(offset)
            chunks = read_chunks(fh, offset, cfg.read_chunk_bytes, cfg.max_line_bytes,
                                 source.final)
            for chunk in _until_damaged(chunks, source, writer):
                if watch_head and not identity.head_matches(fh):
                    log.warning("log_truncated_while_reading", path=str(source.path),
                                offset=offset)
                    truncated = True
                    break
                parsed = self._parse_chunk(chunk, str(source.path), force_backfill)
                lines_read += parsed.lines
                if keep_checkpoint:
                    if not is_gzip(source.path):  # a .gz is only ever finished, not grown
                        identity = identity.grown(fh, chunk.end)
                    window = _tail_window(chunk, window)
                    parsed.checkpoint = Checkpoint(
                        str(self.live), where, replace(identity, tail=tail_digest(window)
                                                       if window else ""),
                        chunk.end, max(source.size, chunk.end), lines_read, utcnow())
                parsed.bytes = chunk.end - chunk.start
                writer.submit(parsed)
                offset = chunk.end
                if progress is not None:
                    done = chunk.end if not is_gzip(source.path) else _raw_position(fh)
                    progress(min(progress_base + done, progress_total), progress_total)
                if stop is not None and stop.is_set():
                    tally.stopped = True
                    break
                if limit is not None and offset >= limit:
                    break
        if keep_checkpoint and offset == source.offset and not truncated:
            # Nothing new, but the checkpoint must still move to this file (after a
            # rotation) so the next pass does not look for the old one again. (Not when
            # it was truncated under us: the checkpoint must keep naming the old content.)
            writer.submit(_Parsed(path=str(source.path), checkpoint=Checkpoint(
                str(self.live), where, replace(identity, tail=tail_digest(window)
                                               if window else ""),
                offset, source.size, lines_read, utcnow())))
        return not tally.stopped

    def _parse_chunk(self, chunk: Chunk, file: str, force_backfill: bool) -> _Parsed:
        now = utcnow()
        out = _Parsed(path=file)
        if chunk.long_line is not None:
            self._long_line(chunk, file, now, out)
            return out
        data = chunk.data
        spans = self.parser.candidates(data)
        out.lines = data.count(b"\n")
        out.skipped = out.lines - len(spans)
        cutoff = now - self.backfill_after
        max_line = self.settings.log.max_line_bytes
        parse = self.parser.entry_fields
        to_row = self.enqueuer.fields_row
        # SQLite rows are collected flat, value after value (see BulkEnqueuer.row_width).
        collect = out.rows.extend if self.enqueuer.row_width > 1 else out.rows.append
        for start, end in spans:
            line = data[start:end]
            if end - start > max_line:
                out.rejects.append(reject_row(
                    file, chunk.start + start, line,
                    f"line of {end - start} bytes is longer than log.max_line_bytes "
                    f"({max_line})", self._event_type_of(line, now), now))
                continue
            try:
                fields = parse(line, now)
            except ParseError as exc:
                out.rejects.append(reject_row(file, chunk.start + start, line, str(exc),
                                              exc.event_type, now))
                continue
            except Exception as exc:  # a parser bug must not halt the whole log
                log.error("line_parse_crashed", file=file, offset=chunk.start + start,
                          exc_info=True)
                out.rejects.append(reject_row(
                    file, chunk.start + start, line,
                    f"unexpected parser error {type(exc).__name__}: {exc}", None, now))
                continue
            if fields is None:
                out.skipped += 1
                continue
            collect(to_row(fields, force_backfill or fields[3] < cutoff, now))
        out.events = len(out.rows) // self.enqueuer.row_width
        return out

    def _long_line(self, chunk: Chunk, file: str, now: datetime, out: _Parsed) -> None:
        info = chunk.long_line
        assert info is not None
        out.lines = 1
        # Only the head is known; it is enough to tell whether the line was of a synced
        # type (worth a reject row) or noise (skipped like any other).
        head = info.head[:4096].split(b"\n", 1)[0] + b"\n"
        if not self.parser.candidates(head):
            out.skipped = 1
            return
        limit = self.settings.log.max_line_bytes
        out.rejects.append(reject_row(
            file, chunk.start, info.head,
            f"line of {info.length} bytes is longer than log.max_line_bytes ({limit})",
            self._event_type_of(info.head, now), now, length=info.length,
            line_hash=info.sha256))

    def _event_type_of(self, line: bytes, now: datetime) -> str | None:
        """The event type of an over-long line, read from its head only."""
        try:
            entry = self.parser.parse(line[:4096], now)
        except ParseError as exc:
            return exc.event_type
        return entry.event_type if entry is not None else None

    # --- the database -------------------------------------------------------------------

    @staticmethod
    def _apply(enqueuer: BulkEnqueuer, conn: Connection, parsed: _Parsed) -> None:
        """One chunk's writes: its events, its rejects, the checkpoint just past it."""
        # The last few rows may wait for the next chunk's (see BulkEnqueuer.add): the
        # transaction's totals stay exact, as _finish writes them before the commit.
        parsed.inserted = enqueuer.add(conn, parsed.rows)
        # The transaction may stay open for a few more chunks: their rows are with
        # SQLite now, so do not hold a second copy until the commit.
        parsed.rows = []
        parsed.new_rejects = RejectStore.add(conn, parsed.rejects) if parsed.rejects else 0
        for row in parsed.rejects:
            # An operator watching the journal learns of a bad line when it happens, not
            # only from `rejects list`; the line itself stays in the table (it may hold
            # personal data the log line would spread).
            log.warning("line_rejected", file=row["file"], offset=row["offset"],
                        event_type=row["event_type"], reason=row["reason"][:300])
        if parsed.checkpoint is not None:
            checkpoint.save(conn, parsed.checkpoint)

    @staticmethod
    def _finish(enqueuer: BulkEnqueuer, conn: Connection, applied: list[_Parsed]) -> None:
        """Last in each transaction: the rows still held back go in before the commit."""
        applied[-1].inserted += enqueuer.flush(conn)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            # The queue's write transaction: on SQLite it takes the write lock at BEGIN,
            # so no read-to-write upgrade can fail with SQLITE_BUSY halfway through.
            with self.store.transaction() as conn:
                try:
                    yield conn
                except BaseException:
                    self.enqueuer.discard()  # rows held for a commit that will not come
                    raise
        except self.store.errors as exc:
            # The SQLite bulk insert talks to the sqlite3 driver directly: its errors too.
            raise StateError(f"cannot write to the state database: {_short(exc)}") from exc

    def _load_checkpoint(self) -> Checkpoint | None:
        try:
            return checkpoint.load(self.engine, str(self.live))
        except sa.exc.DBAPIError as exc:
            raise StateError(f"cannot read the state database: {_short(exc)}") from exc

    # --- bookkeeping --------------------------------------------------------------------

    @staticmethod
    def _committed(tally: Tally, parsed: _Parsed, _: None) -> None:
        # A multi-row INSERT may take rows of two chunks, so how many rows were new is
        # exact per transaction, not per chunk: the chunk's log line leaves it out, and
        # the tally (summed over whole transactions) is exact.
        tally.lines += parsed.lines
        tally.enqueued += parsed.inserted
        tally.duplicates += parsed.events - parsed.inserted
        tally.skipped += parsed.skipped
        tally.rejected += len(parsed.rejects)
        tally.bytes += parsed.bytes
        if parsed.checkpoint is not None:
            tally.offset = parsed.checkpoint.offset
        log.debug("chunk_ingested", path=parsed.path, bytes=parsed.bytes,
                  offset=parsed.checkpoint.offset if parsed.checkpoint else None,
                  lines=parsed.lines, events=parsed.events, rejects=parsed.new_rejects)

    def _warn_missing(self) -> None:
        now = utcnow()
        every = timedelta(seconds=self.settings.log.missing_file_warn_s)
        if self._missing_warned_at is None or now - self._missing_warned_at >= every:
            log.warning("log_missing", path=str(self.live),
                        hint="waiting for it to appear (rotation in progress?)")
            self._missing_warned_at = now

    def _dst_counts(self) -> tuple[int, int]:
        zone = self.parser.timezone
        return (zone.gaps, zone.overlaps)

    def _report(self, tally: Tally, started: float, missing: bool = False,
                rotated: bool = False, truncated: bool = False) -> IngestReport:
        gaps, overlaps = (now - before for now, before in zip(self._dst_counts(),
                                                              tally.dst_at_start, strict=True))
        if gaps or overlaps:
            log.info("dst_ambiguous_times", gaps=gaps, overlaps=overlaps,
                     timezone=self.settings.log.timezone,
                     rule="gap: offset before the jump; overlap: first occurrence")
        return IngestReport(
            files=tuple(tally.files), lines_read=tally.lines, events_enqueued=tally.enqueued,
            duplicates=tally.duplicates, skipped=tally.skipped, rejected=tally.rejected,
            bytes_read=tally.bytes, file_missing=missing, rotated=rotated, truncated=truncated,
            stopped=tally.stopped, elapsed_s=time.monotonic() - started, path=str(self.live),
            offset=tally.offset, dst_gaps=gaps, dst_overlaps=overlaps,
        )


def _until_damaged(chunks: Iterator[Chunk], source: Source,
                   writer: OrderedWriter[_Parsed, None]) -> Iterator[Chunk]:
    """``chunks``, ending at a damaged archive's damage, which becomes one reject.

    The lines before the damage were read; the line it cuts and all after it are lost.
    The reject is keyed by the archive's identity, so a replay does not file it again.
    """
    at = source.offset
    try:
        for chunk in chunks:
            yield chunk
            at = chunk.end
    except ArchiveDamaged as exc:
        log.error("log_archive_damaged", path=str(source.path), offset=at, error=str(exc))
        key = f"damaged:{source.identity.fingerprint}:{source.identity.fingerprint_len}:{at}"
        writer.submit(_Parsed(path=str(source.path), rejects=[reject_row(
            str(source.path), at, b"", str(exc), None, utcnow(),
            length=max(exc.readable - at, 0),
            line_hash=hashlib.sha256(key.encode()).hexdigest())]))


def _tail_window(chunk: Chunk, window: bytes) -> bytes:
    """The up to TAIL_BYTES bytes before ``chunk.end``, from ``window`` (those before
    ``chunk.start``) and the chunk's own bytes; "" if they cannot be known (a .gz
    resumed at an offset, until it has read that many)."""
    line = chunk.long_line
    # Of an over-long line only its last bytes were kept (and its newline, unless it is
    # a finished file's last line).
    data = chunk.data if line is None else (
        line.tail + b"\n"[:chunk.end - chunk.start - line.length])
    if len(data) >= TAIL_BYTES:  # the usual chunk: its own last bytes (no copy of it)
        return data[-TAIL_BYTES:]
    joined = (window + data)[-TAIL_BYTES:]
    return joined if len(joined) == min(chunk.end, TAIL_BYTES) else b""


def _raw_position(fh: Any) -> int:
    raw = getattr(fh, "fileobj", None)
    try:
        return int(raw.tell()) if raw is not None else 0
    except (OSError, ValueError):
        return 0


def _short(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]
