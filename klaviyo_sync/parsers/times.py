"""The log's wall-clock times (local to ``[log] timezone``) converted to naive UTC.

Rules (the comment on ``timezone`` in settings.toml says the same):

- A time with an explicit offset (``2020-05-15T12:35:32+02:00``, ``...Z``) is taken as
  written: the offset wins over the setting.
- A local time inside a DST gap (it never happened: 02:30 on a spring-forward night) is
  read with the UTC offset in force *before* the transition (``fold=0``), i.e. as if the
  clock had not moved yet: in America/New_York, 2021-03-14 02:30 is 02:30 EST = 07:30
  UTC (= 03:30 EDT). A logger whose clock had not yet jumped wrote exactly that instant.
- A local time inside a DST overlap (it happened twice: 01:30 on a fall-back night) is
  the first occurrence (``fold=0``, the offset before the transition): in
  America/New_York, 2021-11-07 01:30 is 01:30 EDT = 05:30 UTC.

Both cases are counted on the converter (``gaps``, ``overlaps``) so callers can report
them. Speed: a day whose UTC offset is the same all day (every day but two a year) is
converted with one cached offset; only transition days go through zoneinfo per line.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"})
_DAY_CACHE_MAX = 4096
_ZERO = timedelta(0)
# Sampled to decide whether a day's offset is constant: every hour at both folds, and the
# last second, so a transition anywhere in the day changes at least one sample.
_SAMPLE_SECONDS = (*range(0, 86400, 3600), 86399)


class LogTimezone:
    """Converts the log's local times to naive UTC (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._zone = ZoneInfo(name)
        self._is_utc = name in _UTC_NAMES
        # date ordinal -> the day's constant offset, or None on a transition day
        self._day_offsets: dict[int, timedelta | None] = {}
        self.gaps = 0
        self.overlaps = 0
        # The last text parse() converted, and its result: log lines come in bursts that
        # share their second. One tuple, so a reader never pairs a text with another's time.
        self._last: tuple[str | None, datetime] = (None, datetime.min)

    def parse(self, text: str) -> datetime:
        """``YYYY-MM-DD HH:MM:SS[.fff]`` (local) or ISO 8601 (with or without an offset)
        as naive UTC. Raises ValueError with a readable reason."""
        last = self._last
        if text == last[0]:
            return last[1]
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            if str(exc).startswith("Invalid isoformat"):
                raise ValueError(f"not a valid date and time: {text!r}") from None
            raise ValueError(f"impossible date or time {text!r}: {exc}") from None
        if ":" not in text:
            # fromisoformat reads a bare date as midnight: a log time needs its time of day.
            raise ValueError(f"no time of day in {text!r}")
        if moment.tzinfo is not None:
            utc = moment.astimezone(UTC).replace(tzinfo=None)
        elif self._is_utc:
            utc = moment
        else:
            offset = self._day_offset(moment)
            if offset is None:  # counted as a gap or overlap per line: never remembered
                return self._convert_transition_day(moment)
            utc = moment - offset
        self._last = (text, utc)
        return utc

    def from_epoch(self, seconds: float) -> datetime:
        """Seconds since the Unix epoch (always UTC) as naive UTC."""
        try:
            return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"not a valid Unix time: {seconds!r}") from None

    def local_date(self, utc: datetime) -> date:
        """The log's local calendar date at a naive UTC instant."""
        if self._is_utc:
            return utc.date()
        return utc.replace(tzinfo=UTC).astimezone(self._zone).date()

    def wall_to_utc(self, wall: datetime) -> datetime:
        """A naive local wall-clock time as naive UTC."""
        if self._is_utc:
            return wall
        offset = self._day_offset(wall)
        if offset is not None:
            return wall - offset
        return self._convert_transition_day(wall)

    def _day_offset(self, wall: datetime) -> timedelta | None:
        """The UTC offset of ``wall``'s whole day, None on a transition day."""
        day = wall.toordinal()
        try:
            return self._day_offsets[day]
        except KeyError:
            return self._remember_day(day)

    def _remember_day(self, day: int) -> timedelta | None:
        if len(self._day_offsets) >= _DAY_CACHE_MAX:
            self._day_offsets.clear()
        midnight = datetime.fromordinal(day).replace(tzinfo=self._zone)
        offsets = set()
        for second in _SAMPLE_SECONDS:
            sample = midnight + timedelta(seconds=second)
            offsets.add(sample.utcoffset())
            offsets.add(sample.replace(fold=1).utcoffset())
        offset = offsets.pop() if len(offsets) == 1 else None
        self._day_offsets[day] = offset
        return offset

    def _convert_transition_day(self, wall: datetime) -> datetime:
        aware = wall.replace(tzinfo=self._zone)  # fold=0: the offset before a transition
        before = aware.utcoffset() or _ZERO
        after = aware.replace(fold=1).utcoffset() or _ZERO
        utc = wall - before
        if before != after:
            round_trip = utc.replace(tzinfo=UTC).astimezone(self._zone).replace(tzinfo=None)
            if round_trip != wall:
                self.gaps += 1
            else:
                self.overlaps += 1
        return utc
