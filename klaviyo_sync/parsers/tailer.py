"""Following the log file: which file is which, where to resume, and reading whole lines.

A file is known by its device, inode and a sha256 fingerprint of its first bytes, and a
checkpoint also by the sha256 of the bytes just before its offset. The inode alone is
not enough (a deleted file's inode is reused by the next one) and the first bytes alone
are not enough (copytruncate keeps the inode but starts over; many logs open with the
same long banner), so all are compared: a file resumed at an offset must hold, right
before it, the very bytes that were read there. The tailer never consumes a line that
has no newline yet: the writer may be in the middle of it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from klaviyo_sync.exceptions import LogSourceError
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.parsers.archive import ArchiveDamaged, GzipReader
from klaviyo_sync.state.schema import REJECT_RAW_BYTES

log = get_logger(__name__)

#: How many leading bytes identify a file's content.
FINGERPRINT_BYTES = 1024
#: How many bytes before a checkpoint's offset must match for a file to resume there.
TAIL_BYTES = 1024


def tail_digest(data: bytes) -> str:
    """The ``tail`` of a checkpoint whose offset ``data`` (its last bytes) ends at."""
    return hashlib.sha256(data[-TAIL_BYTES:]).hexdigest()


@dataclass(frozen=True)
class FileIdentity:
    """Device, inode and the sha256 of the first ``fingerprint_len`` bytes of a file;
    at a checkpoint, ``tail``: the sha256 of the up to TAIL_BYTES bytes before its offset
    ("" when not known: a checkpoint from before it was kept)."""

    device: int
    inode: int
    fingerprint: str
    fingerprint_len: int
    tail: str = ""

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        """The identity of the file at ``path`` now (raises OSError if it is gone)."""
        with open_log(path, head_only=True) as fh:
            st = os.fstat(fh.fileno())
            try:
                head = fh.read(FINGERPRINT_BYTES)
            except ArchiveDamaged:  # reading it says so, naming the file
                head = b""
        return cls(st.st_dev, st.st_ino, hashlib.sha256(head).hexdigest(), len(head))

    def grown(self, fh: BinaryIO, readable: int) -> FileIdentity:
        """A stronger fingerprint of the same open plain file, once it has grown past the
        bytes the first one was taken of (``readable``: bytes known to exist)."""
        if self.fingerprint_len >= FINGERPRINT_BYTES or readable <= self.fingerprint_len:
            return self
        head = os.pread(fh.fileno(), FINGERPRINT_BYTES, 0)
        return FileIdentity(self.device, self.inode, hashlib.sha256(head).hexdigest(),
                            len(head))

    def head_matches(self, fh: BinaryIO) -> bool:
        """Whether the open plain file still starts with the bytes of this fingerprint."""
        head = os.pread(fh.fileno(), self.fingerprint_len, 0)
        return len(head) == self.fingerprint_len and \
            hashlib.sha256(head).hexdigest() == self.fingerprint

    def ends_at(self, path: Path, offset: int) -> bool:
        """Whether ``path`` holds, just before ``offset``, the bytes ``tail`` was taken of."""
        if not self.tail or offset <= 0:
            return True
        width = min(offset, TAIL_BYTES)
        try:
            with open_log(path, head_only=True) as fh:
                if is_gzip(path):
                    fh.seek(offset - width)
                    data = fh.read(width)
                else:
                    data = os.pread(fh.fileno(), width, offset - width)
        except (OSError, ArchiveDamaged):
            return False
        return len(data) == width and tail_digest(data) == self.tail

    def same_inode(self, st: os.stat_result) -> bool:
        return (self.device, self.inode) == (st.st_dev, st.st_ino)

    def content_matches(self, path: Path) -> bool:
        """Whether ``path`` starts with the bytes this fingerprint was taken of."""
        try:
            with open_log(path, head_only=True) as fh:
                head = fh.read(self.fingerprint_len)
        except (OSError, ArchiveDamaged):
            return False
        return len(head) == self.fingerprint_len and \
            hashlib.sha256(head).hexdigest() == self.fingerprint


def is_gzip(path: Path) -> bool:
    return path.suffix == ".gz"


def open_log(path: Path, head_only: bool = False) -> BinaryIO:
    """Open a log file for binary reading; a ``.gz`` archive is decompressed as it streams
    (up to its damage, if any, see parsers/archive.py; ``head_only``: for a fingerprint)."""
    if is_gzip(path):
        return GzipReader(path, survey=not head_only)  # type: ignore[return-value]
    return open(path, "rb")


def archives(live: Path) -> list[Path]:
    """Rotated copies of ``live`` (``<name>.N``, ``<name>.N.gz``), oldest (highest N) first."""
    pattern = re.compile(re.escape(live.name) + r"\.(\d+)(\.gz)?$")
    found: list[tuple[int, int, Path]] = []
    try:
        entries = list(live.parent.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LogSourceError(f"cannot list {live.parent}: {exc.strerror}") from exc
    for entry in entries:
        match = pattern.match(entry.name)
        if match and entry.is_file():
            # A plain .N sorts after a .N.gz of the same N: logrotate's delaycompress
            # leaves .1 plain and never makes both, so this only orders odd leftovers.
            found.append((int(match.group(1)), 0 if match.group(2) else 1, entry))
    found.sort(key=lambda t: (-t[0], t[1]))
    return [path for _, _, path in found]


@dataclass(frozen=True)
class Source:
    """One file to read: from ``offset``; ``final`` when nothing more will be written to it."""

    path: Path
    identity: FileIdentity
    offset: int
    final: bool
    size: int  # bytes on disk when planned (compressed size for .gz)
    #: The checkpoint's digest of the bytes before ``offset``, which the plan found
    #: there ("" when not known); reading checks they are still there.
    tail: str = ""


def stat_or_none(path: Path) -> os.stat_result | None:
    """``os.stat`` that says None for a missing file and LogSourceError for an unreadable one."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LogSourceError(f"cannot read the log file {path}: {exc.strerror}") from exc
    _require_regular(path, st)
    if not os.access(path, os.R_OK):
        raise LogSourceError(f"cannot read the log file {path}: permission denied")
    return st


def _require_regular(path: Path, st: os.stat_result) -> None:
    """LogSourceError for a path that is no regular file: opening a FIFO blocks until a
    writer comes, and a directory cannot be read as lines."""
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
            "a FIFO" if stat.S_ISFIFO(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else "a device or special file")
    raise LogSourceError(f"cannot read the log file {path}: it is {kind}, not a regular file")


def source_for(path: Path, offset: int = 0, final: bool = False, tail: str = "") -> Source:
    """A Source for ``path`` as it is now (LogSourceError if it is no regular file)."""
    try:
        _require_regular(path, path.stat())
        identity = FileIdentity.of(path)
        size = path.stat().st_size
    except PermissionError as exc:
        raise LogSourceError(f"cannot read the log file {path}: permission denied") from exc
    return Source(path, identity, offset, final, size, tail)


def locate(identity: FileIdentity, offset: int, candidates: list[Path]) -> Path | None:
    """Find the file with ``identity`` (renamed, copied or compressed) among ``candidates``.

    Same inode and content first: a rename. Then the same leading bytes and at least
    ``offset`` of them: a copy (copytruncate) or a compressed archive, which hold the
    very bytes read so far, so reading on from ``offset`` misses nothing.
    """
    for path in candidates:
        if is_gzip(path):
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        if (identity.same_inode(st) and identity.content_matches(path)
                and identity.ends_at(path, offset)):
            return path
    if identity.fingerprint_len == 0:
        return None
    for path in candidates:
        try:
            big_enough = is_gzip(path) or path.stat().st_size >= offset
        except OSError:
            continue
        if big_enough and identity.content_matches(path) and identity.ends_at(path, offset):
            return path
    return None


@dataclass(frozen=True)
class Chunk:
    """Complete lines read from a file, or one over-long line seen only in passing.

    ``data`` always ends with a newline (a final unterminated line of a finished file gets
    one added). For an over-long line ``data`` is empty and ``long_line`` describes it.
    """

    start: int
    end: int
    data: bytes
    long_line: LongLine | None = None


@dataclass(frozen=True)
class LongLine:
    length: int  # bytes of the line, without its newline
    head: bytes  # at most REJECT_RAW_BYTES of it
    sha256: str  # of the whole line without its newline
    tail: bytes = b""  # its last TAIL_BYTES (for the checkpoint's tail)


def read_chunks(fh: BinaryIO, offset: int, chunk_bytes: int, max_line_bytes: int,
                final: bool) -> Iterator[Chunk]:
    """Chunks of complete lines from ``fh`` (positioned at ``offset``) to its end.

    A line longer than ``max_line_bytes`` is scanned in bounded reads and reported as a
    :class:`LongLine` (never held whole). An unterminated last line is left unread unless
    ``final``.
    """
    pos = offset
    carry = b""
    while True:
        piece = fh.read(chunk_bytes)
        buf = carry + piece if carry else piece
        last = buf.rfind(b"\n")
        if last >= 0:
            carry = buf[last + 1:]
            end = pos + last + 1
            yield Chunk(pos, end, buf[:last + 1])
            pos = end
            continue
        if not piece:  # end of file, with at most an unterminated line left
            if buf and final:
                yield _final_line(pos, buf, max_line_bytes)
            return
        if len(buf) <= max_line_bytes:
            carry = buf
            continue
        long_chunk, carry = _scan_long_line(fh, pos, buf, chunk_bytes, final)
        if long_chunk is None:
            return
        yield long_chunk
        pos = long_chunk.end


def _final_line(pos: int, data: bytes, max_line_bytes: int) -> Chunk:
    if len(data) > max_line_bytes:
        line = LongLine(len(data), data[:REJECT_RAW_BYTES], hashlib.sha256(data).hexdigest(),
                        data[-TAIL_BYTES:])
        return Chunk(pos, pos + len(data), b"", line)
    return Chunk(pos, pos + len(data), data + b"\n")


def _scan_long_line(fh: BinaryIO, pos: int, buf: bytes, chunk_bytes: int, final: bool
                    ) -> tuple[Chunk | None, bytes]:
    """Read on to the newline ending an over-long line, keeping only its head and hash."""
    head = buf[:REJECT_RAW_BYTES]
    tail = buf[-TAIL_BYTES:]
    digest = hashlib.sha256(buf)
    length = len(buf)
    while True:
        piece = fh.read(chunk_bytes)
        if not piece:
            if not final:
                return None, b""  # still being written: look again next time
            line = LongLine(length, head, digest.hexdigest(), tail)
            return Chunk(pos, pos + length, b"", line), b""
        newline = piece.find(b"\n")
        part = piece if newline < 0 else piece[:newline]
        if len(head) < REJECT_RAW_BYTES:
            head += part[:REJECT_RAW_BYTES - len(head)]
        tail = (tail + part)[-TAIL_BYTES:]
        digest.update(part)
        length += len(part)
        if newline < 0:
            continue
        line = LongLine(length, head, digest.hexdigest(), tail)
        return Chunk(pos, pos + length + 1, b"", line), piece[newline + 1:]


class Resumable(Protocol):
    """What the planner needs of a checkpoint."""

    @property
    def path(self) -> str: ...
    @property
    def identity(self) -> FileIdentity: ...
    @property
    def offset(self) -> int: ...


@dataclass(frozen=True)
class FollowPlan:
    """What one follow pass reads, in order, and what it found on the way."""

    sources: tuple[Source, ...]
    missing: bool = False
    rotated: bool = False
    truncated: bool = False


def plan_follow(live: Path, last: Resumable | None) -> FollowPlan:
    """Decide where to read: resume, finish a rotated file first, or start over.

    A file that vanishes while the plan is made (rename and create of a rotation, caught
    between the two) makes the planning start again; if that keeps happening, the live
    file counts as missing for this pass, and nothing is read.

    - same file (inode and leading bytes): resume at the checkpoint's offset;
    - same inode but shorter than the offset, or other leading bytes: copytruncate (or a
      reused inode): a copy of the old content is finished if one is found, then the live
      file is read from 0;
    - another file: rotation by rename; the old file is finished where it now lives (a
      ``.N`` with its inode, or a copy/``.gz`` with its leading bytes), then the new one is
      read from 0.
    """
    for _ in range(3):
        try:
            return _plan_follow(live, last)
        except FileNotFoundError:
            log.debug("log_vanished_while_planning", path=str(live))
    return FollowPlan((), missing=True)


def _plan_follow(live: Path, last: Resumable | None) -> FollowPlan:
    st = stat_or_none(live)
    if last is None:
        return FollowPlan((source_for(live),) if st else (), missing=st is None)
    if st is not None and last.identity.same_inode(st):
        if (st.st_size >= last.offset and last.identity.content_matches(live)
                and last.identity.ends_at(live, last.offset)):
            resume = source_for(live, last.offset, tail=last.identity.tail)
            if not resume.identity.same_inode(st):
                # Renamed and recreated since the stat above: plan again.
                raise FileNotFoundError(live)
            return FollowPlan((resume,))
        log.warning("log_truncated", path=str(live), offset=last.offset, size=st.st_size)
        old = locate(last.identity, last.offset, archives(live))
        sources = [] if old is None else [source_for(old, last.offset, final=True,
                                                     tail=last.identity.tail)]
        return FollowPlan((*sources, source_for(live)), truncated=True)
    sources = []
    # A symlink swapped to a new target: the old target (where the checkpoint says it
    # read) is finished first, like a rotated file.
    previous = [Path(last.path)] if last.path != str(live) else []
    old = locate(last.identity, last.offset, previous + archives(live))
    if old is not None:
        log.info("log_rotated", path=str(live), previous=str(old), resume_offset=last.offset)
        sources.append(source_for(old, last.offset, final=True, tail=last.identity.tail))
    elif st is not None or last.path != str(live):
        # The previous file went away before it was read to the end (deleted, or
        # compressed under a name we do not know). Whatever it held past the offset is
        # gone; say so loudly rather than pretend.
        log.warning("log_rotated_file_lost", path=str(live), previous=last.path,
                    offset=last.offset)
    if st is None:
        return FollowPlan(tuple(sources), missing=True, rotated=bool(sources))
    return FollowPlan((*sources, source_for(live)), rotated=True)
