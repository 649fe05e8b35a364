"""How the pipeline is doing, from the state database and a stat() of the log.

`klaviyo-sync status`, the daemon's STATUS= line, /healthz and /metrics all read one
:class:`Status`. Its health is decided by :func:`assess` from thresholds in ``[status]``:
*failing* when nothing can reach Klaviyo (credentials refused, a backlog past the failing
age), *degraded* when something needs a look (a backlog past the degraded age, dead
letters, the tailer far behind or the log missing, a stale orders pass).
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from klaviyo_sync.clock import iso_utc, to_naive_utc, utcnow
from klaviyo_sync.config import Settings, StatusSettings
from klaviyo_sync.exceptions import StateError
from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state import meta
from klaviyo_sync.state.profiles import ProfileStore
from klaviyo_sync.state.schema import checkpoints, rejects, suppressions


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"

    @property
    def exit_code(self) -> int:
        """What `status` exits with: 0 healthy, 1 degraded, 2 failing."""
        return {"healthy": 0, "degraded": 1, "failing": 2}[self.value]


@dataclass(frozen=True)
class TailStatus:
    """Where the tailer stands in the configured log."""

    log_path: str
    file: str | None  # the file the checkpoint points into (may be a rotated name)
    offset: int
    lines_read: int
    size: int | None  # current size of log_path; None when it is missing or unreadable
    bytes_behind: int | None
    checkpoint_at: datetime | None
    log_error: str | None = None  # why the log could not be stat()ed


@dataclass(frozen=True)
class Status:
    """Everything an operator asks first, as of ``checked_at``."""

    checked_at: datetime
    queue: dict[str, int]
    oldest_due_at: datetime | None
    rejects: int
    suppressions_pending: int
    tail: TailStatus
    last_send_ok_at: str | None
    auth_failure: dict[str, Any] | None
    last_orders_pass_at: str | None
    last_tail_at: str | None
    orders_expected: bool
    health: Health = Health.HEALTHY
    reasons: tuple[str, ...] = field(default_factory=tuple)
    #: Customers per profile status ("imported", "failed") and "unread_jobs".
    profiles: dict[str, int] = field(default_factory=dict)
    last_profiles_pass_at: str | None = None

    @property
    def dead_letters(self) -> int:
        return self.queue.get("dead", 0)

    @property
    def oldest_due_age_s(self) -> float | None:
        if self.oldest_due_at is None:
            return None
        return max(0.0, (self.checked_at - self.oldest_due_at).total_seconds())

    def to_json(self) -> dict[str, Any]:
        """The shape `status --json` prints and /healthz serves."""
        data = asdict(self)
        data.update(health=self.health.value, reasons=list(self.reasons),
                    dead_letters=self.dead_letters, oldest_due_age_s=self.oldest_due_age_s)
        return _iso(data)

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        q = self.queue
        behind = "?" if self.tail.bytes_behind is None else _bytes(self.tail.bytes_behind)
        text = (f"{self.health.value}: {q.get('pending', 0)} pending, {q.get('leased', 0)} "
                f"leased, {self.dead_letters} dead; tail {behind} behind")
        return f"{text}; {self.reasons[0]}" if self.reasons else text


def assess(status: Status, limits: StatusSettings) -> tuple[Health, tuple[str, ...]]:
    """Health and its reasons (worst first) for ``status`` under ``limits``."""
    failing: list[str] = []
    degraded: list[str] = []
    if status.auth_failure:
        detail = status.auth_failure.get("detail") or status.auth_failure.get("status")
        failing.append(f"Klaviyo refuses our credentials since {status.auth_failure.get('at')}"
                       f" ({detail})")
    age = status.oldest_due_age_s
    if age is not None and age > limits.failing_backlog_age_s:
        failing.append(f"oldest due event waiting {_duration(age)} "
                       f"(failing past {_duration(limits.failing_backlog_age_s)})")
    elif age is not None and age > limits.degraded_backlog_age_s:
        degraded.append(f"oldest due event waiting {_duration(age)} "
                        f"(degraded past {_duration(limits.degraded_backlog_age_s)})")
    if limits.degraded_dead_letters and status.dead_letters >= limits.degraded_dead_letters:
        degraded.append(f"{status.dead_letters} dead letter(s): "
                        "see `klaviyo-sync queue list --state dead`")
    tail = status.tail
    if tail.log_error:
        degraded.append(f"log {tail.log_path}: {tail.log_error}")
    elif tail.bytes_behind is not None and tail.bytes_behind > limits.degraded_tail_bytes_behind:
        degraded.append(f"tail {_bytes(tail.bytes_behind)} behind the end of {tail.log_path}")
    if status.orders_expected and limits.degraded_orders_pass_age_s and status.last_orders_pass_at:
        since = (status.checked_at - _parse(status.last_orders_pass_at)).total_seconds()
        if since > limits.degraded_orders_pass_age_s:
            degraded.append(f"last orders pass {_duration(since)} ago")
    failed_profiles = status.profiles.get("failed", 0)
    if failed_profiles:
        degraded.append(f"{failed_profiles} profile(s) Klaviyo did not import: "
                        "see `klaviyo-sync profiles failed`")
    if failing:
        return Health.FAILING, tuple(failing + degraded)
    if degraded:
        return Health.DEGRADED, tuple(degraded)
    return Health.HEALTHY, ()


def compute_status(settings: Settings, engine: Engine, now: datetime | None = None) -> Status:
    """Read the state database and stat() the log; health assessed with ``[status]``."""
    try:
        return _compute_status(settings, engine, now or utcnow())
    except sa.exc.DBAPIError as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise StateError(f"state database unreachable: {detail}") from exc


def _compute_status(settings: Settings, engine: Engine, now: datetime) -> Status:
    store = QueueStore(engine)
    counts = store.counts()
    oldest = store.oldest_due(now)
    with engine.connect() as conn:
        reject_count = conn.execute(sa.select(sa.func.count()).select_from(rejects)).scalar()
        pending_supp = conn.execute(
            sa.select(sa.func.count()).select_from(suppressions)
            .where(suppressions.c.state == "pending")
        ).scalar()
        checkpoint = conn.execute(
            sa.select(checkpoints).where(checkpoints.c.name == settings.log.path)
        ).first()
        values = {name: meta.get(conn, name) for name in (
            meta.LAST_SEND_OK_AT, meta.AUTH_FAILURE, meta.LAST_ORDERS_PASS_AT, meta.LAST_TAIL_AT,
            meta.LAST_PROFILES_PASS_AT)}
    status = Status(
        checked_at=now, queue=counts, oldest_due_at=oldest, rejects=int(reject_count or 0),
        suppressions_pending=int(pending_supp or 0),
        tail=tail_status(settings.log.path, checkpoint),
        last_send_ok_at=values[meta.LAST_SEND_OK_AT],
        auth_failure=_auth_failure(values[meta.AUTH_FAILURE]),
        last_orders_pass_at=values[meta.LAST_ORDERS_PASS_AT],
        last_tail_at=values[meta.LAST_TAIL_AT],
        orders_expected=bool(settings.business.url and settings.orders.enabled),
        profiles=ProfileStore(engine).counts(),
        last_profiles_pass_at=values[meta.LAST_PROFILES_PASS_AT],
    )
    health, reasons = assess(status, settings.status)
    return replace(status, health=health, reasons=reasons)


def tail_status(log_path: str, checkpoint: Any) -> TailStatus:
    """Bytes between the tail's checkpoint and the end of the log (rotation included)."""
    cp = checkpoint._mapping if checkpoint is not None else None
    offset = int(cp["offset"]) if cp else 0
    try:
        st = os.stat(log_path)
    except FileNotFoundError:
        error: str | None = "missing"
        size = behind = None
    except OSError as exc:
        error, size, behind = (exc.strerror or str(exc)), None, None
    else:
        error, size = None, st.st_size
        if cp is None:
            behind = size
        elif cp["inode"] == st.st_ino and cp["device"] == st.st_dev:
            # Same file; smaller than the offset means copytruncate: it starts again at 0.
            behind = size - offset if size >= offset else size
        else:
            # Rotated since the checkpoint: the rest of the old file, then all of the new.
            behind = max(0, int(cp["file_size"] or 0) - offset) + size
    return TailStatus(
        log_path=log_path, file=cp["path"] if cp else None, offset=offset,
        lines_read=int(cp["lines_read"] or 0) if cp else 0, size=size, bytes_behind=behind,
        checkpoint_at=cp["updated_at"] if cp else None, log_error=error,
    )


def failing_status(reason: str, now: datetime | None = None) -> dict[str, Any]:
    """What `status --json` prints when the state database itself cannot be read."""
    return {"checked_at": _iso_one(now or utcnow()), "health": Health.FAILING.value,
            "reasons": [reason]}


def _auth_failure(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"detail": raw}
    return value if isinstance(value, dict) else {"detail": value}


def _parse(text: str) -> datetime:
    return to_naive_utc(datetime.fromisoformat(text))


def _iso_one(moment: datetime) -> str:
    return iso_utc(moment, to_second=True)


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso_one(value) if value.tzinfo is None else value.isoformat()
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_iso(v) for v in value]
    return value


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
