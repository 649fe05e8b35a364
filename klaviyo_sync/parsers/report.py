"""What a tail pass or a replay did: the report the CLI prints and the daemon logs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class IngestReport:
    """What one tail pass or replay did."""

    files: tuple[str, ...] = ()
    lines_read: int = 0
    events_enqueued: int = 0
    duplicates: int = 0  # event lines already in the queue (replays, re-reads after a crash)
    skipped: int = 0  # lines of event types that are not synced
    rejected: int = 0  # lines of synced types that could not be parsed
    bytes_read: int = 0
    file_missing: bool = False
    rotated: bool = False
    truncated: bool = False
    stopped: bool = False  # the stop event cut the pass short
    elapsed_s: float = 0.0
    path: str = ""
    offset: int = 0  # where the checkpoint stands now
    dst_gaps: int = 0  # local times that never happened (read as documented in settings)
    dst_overlaps: int = 0  # local times that happened twice (the first one is taken)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["files"] = list(self.files)
        return data

    def summary(self) -> str:
        """One line for people."""
        rate = self.lines_read / self.elapsed_s if self.elapsed_s > 0 else 0.0
        text = (f"{self.lines_read} lines read from {len(self.files)} file(s): "
                f"{self.events_enqueued} events queued, {self.duplicates} already queued, "
                f"{self.skipped} skipped, {self.rejected} rejected "
                f"({self.bytes_read} bytes in {self.elapsed_s:.1f}s, {rate:,.0f} lines/s)")
        if self.file_missing:
            text += f"; {self.path} is missing"
        return text


@dataclass
class Tally:
    """Running counts of a pass (the writer thread adds as chunks commit)."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    enqueued: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    bytes: int = 0
    stopped: bool = False
    offset: int = 0
    dst_at_start: tuple[int, int] = (0, 0)
