"""Rendering missed signups (table, CSV, JSON) and the report window: pure functions."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime

import pytest

from klaviyo_sync.business.missed_signups import COLUMNS, MissedSignup, render, window

ROW = MissedSignup(customer_id="41", email="a@example.com", name="Ada Jones",
                   first_attempt_at=datetime(2026, 1, 2, 3, 4, 5),
                   last_attempt_at=datetime(2026, 1, 9, 10, 0), attempts=3, status="Stopped",
                   schedule=None, box="Classic", days_since_last_attempt=4,
                   sources=("klaviyo", "log"))


def test_table_has_readable_headers_and_a_count() -> None:
    lines = render([ROW], "table").splitlines()
    assert lines[0].split("  ")[:2] == ["customer id", "email"]
    assert "first attempt" in lines[0] and "last attempt" in lines[0]
    assert "2026-01-02 03:04" in lines[1] and "klaviyo+log" in lines[1]
    assert lines[-1] == "1 missed signup(s)"


def test_csv_and_json_carry_every_column() -> None:
    (row,) = list(csv.DictReader(io.StringIO(render([ROW], "csv"))))
    assert tuple(row) == COLUMNS
    assert row["schedule"] == "" and row["first_attempt_at"] == "2026-01-02T03:04:05+00:00"
    (obj,) = json.loads(render([ROW], "json"))
    assert obj["schedule"] is None and obj["sources"] == ["klaviyo", "log"]
    assert obj["attempts"] == 3 and obj["days_since_last_attempt"] == 4


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render([ROW], "xml")


def test_window_dates_are_whole_days() -> None:
    assert window(date(2026, 1, 1), date(2026, 1, 31)) == (
        datetime(2026, 1, 1), datetime(2026, 2, 1))
    exact = datetime(2026, 1, 1, 12)
    assert window(exact, None) == (exact, None)
