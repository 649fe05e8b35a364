"""How the pipeline is doing, from the state database, a stat() of the log and a ping of the
business database.

`klaviyo-sync status`, the daemon's STATUS= line, /healthz and /metrics all read one
:class:`Status`. Its health is decided by :func:`assess` from thresholds in ``[status]``,
on what operators care about: whether each pass (tail, send, orders) last *succeeded*
recently and how many times in a row it failed (the daemon records every run in the
``meta`` table, :func:`save_pass_record`), whether the log is readable and the tail moves
when there is something to read, whether the business database answers, whether Klaviyo
refuses our credentials, and how old the backlog is. Each finding names its check; the
worst one decides, and `status` says which.
"""

from __future__ import annotations

import enum
import json
import os
import stat
import threading
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
from klaviyo_sync.state.schema import checkpoints, erasures, rejects, suppressions

#: The passes whose runs the daemon records and health judges.
JUDGED_PASSES = ("tail", "send", "orders")


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILING = "failing"
    UNKNOWN = "unknown"  # the state database could not be read: nothing is known

    @property
    def exit_code(self) -> int:
        """What `status` exits with, as monitoring plugins do: 0 healthy, 1 degraded,
        2 failing, 3 unknown. No other exit code comes out of `status`."""
        return {"healthy": 0, "degraded": 1, "failing": 2, "unknown": 3}[self.value]


@dataclass(frozen=True)
class Finding:
    """One check that is not healthy: its name, how bad, and what an operator reads."""

    check: str
    health: Health
    detail: str


@dataclass(frozen=True)
class PassRecord:
    """What the daemon last recorded of one pass (see :func:`save_pass_record`)."""

    failures: int = 0  # consecutive failures, 0 after a success
    last_ok_at: datetime | None = None
    last_failed_at: datetime | None = None
    last_error: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PassRecord:
        return cls(failures=int(data.get("failures") or 0),
                   last_ok_at=_maybe_time(data.get("last_ok_at")),
                   last_failed_at=_maybe_time(data.get("last_failed_at")),
                   last_error=data.get("last_error"))

    def to_json(self) -> dict[str, Any]:
        return {"failures": self.failures, "last_ok_at": _maybe_iso(self.last_ok_at),
                "last_failed_at": _maybe_iso(self.last_failed_at),
                "last_error": self.last_error}


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
    passes: dict[str, PassRecord] = field(default_factory=dict)
    business_error: str | None = None  # why the business database did not answer
    #: Daemon jobs the scheduler has not called for far longer than their interval.
    stalled_jobs: tuple[str, ...] = ()
    #: Erasure requests made, and later events of those people skipped (not sent).
    erasures: dict[str, int] = field(default_factory=lambda: {"requests": 0, "skipped": 0})
    health: Health = Health.HEALTHY
    reasons: tuple[str, ...] = field(default_factory=tuple)
    #: The check whose finding decided the health (the worst, first); None when healthy.
    decided_by: str | None = None
    findings: tuple[Finding, ...] = field(default_factory=tuple)
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
        data.update(passes={name: record.to_json() for name, record in self.passes.items()},
                    findings=[{"check": f.check, "health": f.health.value, "detail": f.detail}
                              for f in self.findings])
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
    findings = judge(status, limits)
    return worst(findings), tuple(f.detail for f in findings)


def worst(findings: tuple[Finding, ...]) -> Health:
    if any(f.health is Health.FAILING for f in findings):
        return Health.FAILING
    return Health.DEGRADED if findings else Health.HEALTHY


def judge(status: Status, limits: StatusSettings) -> tuple[Finding, ...]:
    """Every check that is not healthy, failing ones first (in check order otherwise)."""
    found: list[Finding] = []
    add = found.append
    fail, degrade = Health.FAILING, Health.DEGRADED
    if status.auth_failure:
        detail = status.auth_failure.get("detail") or status.auth_failure.get("status")
        add(Finding("credentials", fail, "Klaviyo refuses our credentials since "
                    f"{status.auth_failure.get('at')} ({detail})"))
    age = status.oldest_due_age_s
    if age is not None and age > limits.failing_backlog_age_s:
        add(Finding("backlog", fail, f"oldest due event waiting {_duration(age)} "
                    f"(failing past {_duration(limits.failing_backlog_age_s)})"))
    elif age is not None and age > limits.degraded_backlog_age_s:
        add(Finding("backlog", degrade, f"oldest due event waiting {_duration(age)} "
                    f"(degraded past {_duration(limits.degraded_backlog_age_s)})"))
    for name in JUDGED_PASSES:
        record = status.passes.get(name)
        if record is not None and (name != "orders" or status.orders_expected):
            finding = _judge_pass(name, record, status.checked_at, limits)
            if finding is not None:
                add(finding)
    if limits.degraded_dead_letters and status.dead_letters >= limits.degraded_dead_letters:
        add(Finding("dead_letters", degrade, f"{status.dead_letters} dead letter(s): "
                    "see `klaviyo-sync queue list --state dead`"))
    if status.stalled_jobs:
        add(Finding("scheduler", fail, "the scheduler has not run "
                    f"{', '.join(status.stalled_jobs)} for far longer than their interval"))
    found.extend(_judge_tail(status, limits))
    if status.orders_expected and status.business_error:
        add(Finding("business_db", fail,
                    f"business database does not answer: {status.business_error}"))
    if status.orders_expected and limits.degraded_orders_pass_age_s and status.last_orders_pass_at:
        since = (status.checked_at - _parse(status.last_orders_pass_at)).total_seconds()
        if since > limits.degraded_orders_pass_age_s:
            add(Finding("orders_pass", degrade, f"last orders pass {_duration(since)} ago"))
    failed_profiles = status.profiles.get("failed", 0)
    if failed_profiles:
        add(Finding("profiles", degrade, f"{failed_profiles} profile(s) Klaviyo did not "
                    "import: see `klaviyo-sync profiles failed`"))
    found.sort(key=lambda f: f.health is not Health.FAILING)  # stable: check order kept
    return tuple(found)


def _judge_pass(name: str, record: PassRecord, now: datetime, limits: StatusSettings
                ) -> Finding | None:
    check = f"{name}_pass"
    if record.failures:
        bad = Health.FAILING if record.failures >= limits.failing_pass_failures \
            else Health.DEGRADED
        since = f" since {_iso_one(record.last_ok_at)}" if record.last_ok_at else ""
        return Finding(check, bad, f"{name} pass failed {record.failures} time(s) in a row"
                       f"{since}: {record.last_error}")
    if record.last_ok_at is None:
        return None
    age = (now - record.last_ok_at).total_seconds()
    if age > limits.failing_pass_age_s:
        return Finding(check, Health.FAILING, f"{name} pass last succeeded {_duration(age)} "
                       "ago: is the daemon running?")
    if age > limits.degraded_pass_age_s:
        return Finding(check, Health.DEGRADED, f"{name} pass last succeeded "
                       f"{_duration(age)} ago")
    return None


def _judge_tail(status: Status, limits: StatusSettings) -> list[Finding]:
    tail = status.tail
    if tail.log_error == "missing":
        return [Finding("log", Health.DEGRADED, f"log {tail.log_path}: missing")]
    if tail.log_error:
        return [Finding("log", Health.FAILING, f"log {tail.log_path}: {tail.log_error}")]
    found = []
    behind = tail.bytes_behind
    if behind is not None and behind > limits.degraded_tail_bytes_behind:
        found.append(Finding("tail_behind", Health.DEGRADED,
                             f"tail {_bytes(behind)} behind the end of {tail.log_path}"))
    if behind and tail.checkpoint_at is not None:
        still = (status.checked_at - tail.checkpoint_at).total_seconds()
        if still > limits.degraded_tail_stuck_s:
            bad = Health.FAILING if still > limits.failing_tail_stuck_s else Health.DEGRADED
            found.append(Finding("tail_stuck", bad, f"tail has not moved for {_duration(still)}"
                                 f" with {_bytes(behind)} left to read in {tail.log_path}"))
    return found


def compute_status(settings: Settings, engine: Engine, now: datetime | None = None,
                   business: Engine | None = None) -> Status:
    """Read the state database, stat() the log and ping ``business`` (when orders are
    expected); health assessed with ``[status]``."""
    try:
        status = _compute_status(settings, engine, now or utcnow())
    except sa.exc.DBAPIError as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise StateError(f"state database unreachable: {detail}") from exc
    if status.orders_expected and business is not None:
        status = replace(status, business_error=probe_business(
            business, settings.status.business_timeout_s))
    return decide(status, settings.status)


def decide(status: Status, limits: StatusSettings) -> Status:
    """``status`` with its health, reasons, findings and deciding check filled in."""
    findings = judge(status, limits)
    return replace(status, health=worst(findings), findings=findings,
                   reasons=tuple(f.detail for f in findings),
                   decided_by=findings[0].check if findings else None)


def probe_business(engine: Engine, timeout_s: float) -> str | None:
    """None when the business database answers ``SELECT 1`` within ``timeout_s``, else why.

    The query runs in a thread of its own: a server that accepts connections and then
    never answers must not hang `status` (or the daemon's status job) with it.
    """
    outcome: list[str | None] = []

    def ping() -> None:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            outcome.append(None)
        except Exception as exc:  # any driver error means: it does not answer
            outcome.append(str(getattr(exc, "orig", exc)).splitlines()[0] or type(exc).__name__)

    thread = threading.Thread(target=ping, name="business-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return f"no answer within {timeout_s:g}s"
    return outcome[0]


def save_pass_record(engine: Engine, name: str, record: PassRecord) -> None:
    """Record the latest outcome of pass ``name`` where `status` reads it."""
    meta.put_json(engine, pass_key(name), record.to_json())


def pass_key(name: str) -> str:
    return f"pass_{name}"


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
        requests, skipped = conn.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(erasures.c.skipped), 0))
            .where(sa.not_(erasures.c.asked_by.like("link:%")))).one()
        passes = {name: PassRecord.from_json(data) for name in JUDGED_PASSES
                  if isinstance(data := meta.get_json(conn, pass_key(name)), dict)}
    status = Status(
        checked_at=now, queue=counts, oldest_due_at=oldest, rejects=int(reject_count or 0),
        suppressions_pending=int(pending_supp or 0),
        tail=tail_status(settings.log.path, checkpoint),
        last_send_ok_at=values[meta.LAST_SEND_OK_AT],
        auth_failure=_auth_failure(values[meta.AUTH_FAILURE]),
        last_orders_pass_at=values[meta.LAST_ORDERS_PASS_AT],
        last_tail_at=values[meta.LAST_TAIL_AT],
        orders_expected=bool(settings.business.url and settings.orders.enabled),
        passes=passes, erasures={"requests": int(requests), "skipped": int(skipped)},
        profiles=ProfileStore(engine).counts(),
        last_profiles_pass_at=values[meta.LAST_PROFILES_PASS_AT],
    )
    return status


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
        error, size = _unreadable(log_path, st.st_mode), st.st_size
        if error is not None:
            size = behind = None
        elif cp is None:
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


def _unreadable(path: str, mode: int) -> str | None:
    """Why the tail cannot read ``path`` (which exists), or None when it can."""
    if stat.S_ISDIR(mode):
        return "is a directory, not a log file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO or a device?)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def failing_status(reason: str, now: datetime | None = None,
                   health: Health = Health.FAILING, check: str = "state_db") -> dict[str, Any]:
    """What `status --json` prints when the state itself cannot be read (``health`` is
    then unknown) or the probe cannot compute a status."""
    return {"checked_at": _iso_one(now or utcnow()), "health": health.value,
            "reasons": [reason], "decided_by": check,
            "findings": [{"check": check, "health": health.value, "detail": reason}]}


def _auth_failure(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"detail": raw}
    return value if isinstance(value, dict) else {"detail": value}


def _maybe_time(text: Any) -> datetime | None:
    return _parse(text) if isinstance(text, str) and text else None


def _maybe_iso(moment: datetime | None) -> str | None:
    return _iso_one(moment) if moment is not None else None


def _parse(text: str) -> datetime:
    return to_naive_utc(datetime.fromisoformat(text))


def _iso_one(moment: datetime) -> str:
    return iso_utc(moment, to_second=True)


def _iso(value: Any, key: str = "") -> Any:
    """Datetimes as ISO text with their offset; the times kept in the meta table as text
    (naive UTC from older passes) get their offset too, so every time in `status --json`
    says which zone it is in."""
    if isinstance(value, datetime):
        return _iso_one(value) if value.tzinfo is None else value.isoformat()
    if isinstance(value, str) and (key.endswith("_at") or key == "at"):
        try:
            return _iso(datetime.fromisoformat(value))
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: _iso(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_iso(v, key) for v in value]
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
