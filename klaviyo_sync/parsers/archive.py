"""Reading a ``.gz`` log archive up to whatever damage it has.

``gzip.open`` raises as soon as it meets a truncated or corrupt stream, and may drop the
bytes it had already decompressed in the same read. An archive cut short by a full disk
or a killed logrotate still holds most of a day of events, so this reader hands out
every byte that is known to be sound, then raises :class:`ArchiveDamaged` on the next
read. Concatenated gzip members (``cat a.gz b.gz``) are read one after the other.

What is sound: corrupt deflate data inflates to garbage, often with no complaint until
the member's CRC at its end, so a member is only trusted once its CRC matched. Opening
the reader therefore inflates the archive once without keeping anything (cheap next to
parsing it) to find where trust ends: the end of the file; or, cut short, the last byte
it inflates to (a truncation adds no garbage); or, corrupt, the start of the member
holding the damage.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from types import TracebackType

from klaviyo_sync.exceptions import LogSourceError

_RAW_READ = 65536
_GZIP_WBITS = 31  # 16 + 15: a gzip header and trailer (CRC and size are checked)


class ArchiveDamaged(LogSourceError):
    """A gzip archive ends early or holds corrupt data; what came before was read."""

    def __init__(self, path: Path, readable: int, reason: str) -> None:
        super().__init__(f"{path}: damaged gzip archive, {reason}; the {readable} bytes "
                         "before the damage were read")
        self.path = path
        self.readable = readable


def _members(path: Path) -> tuple[int | None, str | None]:
    """(decompressed bytes that can be trusted, None for all; why not all, or None)."""
    inflate = zlib.decompressobj(_GZIP_WBITS)
    in_member = False
    member_start = total = 0
    with open(path, "rb") as fh:
        while raw := fh.read(_RAW_READ):
            try:
                while raw:
                    in_member = True
                    total += len(inflate.decompress(raw))
                    if not inflate.eof:
                        break
                    raw = inflate.unused_data  # the next member starts here
                    inflate = zlib.decompressobj(_GZIP_WBITS)
                    in_member = False
                    member_start = total
            except zlib.error as exc:
                return member_start, f"corrupt compressed data ({exc})"
    if in_member:
        return total, "it ends in the middle of its compressed data (truncated)"
    return None, None


class GzipReader:
    """A binary file-like reader of a gzip archive (``read``, ``seek``, ``fileno``)."""

    def __init__(self, path: Path, survey: bool = True) -> None:
        """``survey=False`` skips finding where trust ends: for reading a head only."""
        self.path = path
        self._limit, self._damage = _members(path) if survey else (None, None)
        self.fileobj = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._inflate = zlib.decompressobj(_GZIP_WBITS)
        self._pending = bytearray()
        self._inflated = 0  # bytes inflated so far, handed out or pending
        self._done = False
        #: Decompressed bytes handed out so far.
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._pending) < size):
            self._fill()
        if not self._pending and self._damage is not None:
            raise ArchiveDamaged(self.path, self.position, self._damage)
        take = len(self._pending) if size < 0 else min(size, len(self._pending))
        out = bytes(self._pending[:take])
        del self._pending[:take]
        self.position += take
        return out

    def _fill(self) -> None:
        raw = self.fileobj.read(_RAW_READ)
        if not raw:
            self._done = True
            return
        out = bytearray()
        try:
            while raw:
                out += self._inflate.decompress(raw)
                if not self._inflate.eof:
                    break
                raw = self._inflate.unused_data
                self._inflate = zlib.decompressobj(_GZIP_WBITS)
        except zlib.error as exc:  # past the limit a survey found, or no survey made
            self._done = True
            if self._damage is None:
                self._damage = f"corrupt compressed data ({exc})"
        if self._limit is not None and self._inflated + len(out) >= self._limit:
            del out[self._limit - self._inflated:]
            self._done = True
        self._inflated += len(out)
        self._pending += out

    def seek(self, offset: int) -> int:
        """Move forward to ``offset`` (decompressed): an archive is only read onwards."""
        if offset < self.position:
            raise ValueError("a gzip archive is read forwards only")
        while self.position < offset:
            if not self.read(min(offset - self.position, _RAW_READ)):
                break
        return self.position

    def fileno(self) -> int:
        return self.fileobj.fileno()

    def close(self) -> None:
        self.fileobj.close()

    def __enter__(self) -> GzipReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
