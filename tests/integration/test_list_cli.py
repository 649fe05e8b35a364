"""List commands as a person reads them: a header, columns aligned by display width (CJK
characters take two cells), and an empty result that says so."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from klaviyo_sync.cli import cli
from klaviyo_sync.queue import NewEvent, QueueStore


def cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def invoke(config: Path, *args: str) -> list[str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_queue_list_has_a_header_and_aligns_wide_characters(
        tmp_path: Path, state_engine: sa.Engine, state_url: str) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "{state_url}"\n', encoding="utf-8")
    QueueStore(state_engine).enqueue_many([
        NewEvent(unique_id=f"u{i}", metric=metric, source="log",
                 occurred_at=datetime(2026, 3, 1, 12), properties={}, customer_id=cid,
                 email=f"c{i}@example.com")
        for i, (metric, cid) in enumerate([("注文キャンセル", "顧客1"), ("cancelled", "1004")])])
    lines = invoke(config, "queue", "list")
    assert lines[0].split()[:3] == ["ID", "STATE", "ATTEMPTS"]
    header, *rows = lines
    assert len(rows) == 2
    # The email column starts at the same display cell on every line.
    starts = {cells(row[:row.index("@") - 2]) for row in rows}
    assert len(starts) == 1, rows
    assert cells(header[:header.index("EMAIL")]) == starts.pop()


def test_empty_lists_say_so(tmp_path: Path, state_engine: sa.Engine, state_url: str) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "{state_url}"\n', encoding="utf-8")
    assert invoke(config, "queue", "list") == ["no events"]
    assert invoke(config, "rejects", "list") == ["no rejected lines"]
    assert invoke(config, "audit") == ["no requests to Klaviyo"]
    assert invoke(config, "suppressions", "list") == ["no suppressions"]
