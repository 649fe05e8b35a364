"""Parsers: bytes of the business log -> LogEntry records. Pure: no I/O, no database."""

from klaviyo_sync.parsers.entry import LogEntry, line_unique_id
from klaviyo_sync.parsers.line_parser import LineParser
from klaviyo_sync.parsers.mapping import EventMapping
from klaviyo_sync.parsers.times import LogTimezone

__all__ = ["EventMapping", "LineParser", "LogEntry", "LogTimezone", "line_unique_id"]
