"""The README tells a user what their log lines and business tables must hold: it names
every key each event type reads and every business column with its type, as the code has
them (so the two cannot drift apart)."""

from __future__ import annotations

import re
from pathlib import Path

from klaviyo_sync.business.sample_data import tables
from klaviyo_sync.config import BusinessSettings
from klaviyo_sync.parsers.mapping import MONEY_KEYS, PROFILE_KEYS, PROPERTY_NAMES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def section(heading: str) -> str:
    text = README[README.index(heading) + len(heading):]
    return text[:text.find("\n#")] if "\n#" in text else text


def table_rows(heading: str) -> list[str]:
    return [line for line in section(heading).splitlines() if line.startswith("|")]


def test_each_event_type_s_log_keys_are_documented() -> None:
    rows = table_rows("### Log lines: the keys each event type reads")
    for event_type, keys in PROPERTY_NAMES.items():
        (row,) = [r for r in rows if r.startswith(f"| `{event_type}`")]
        for key, prop in keys.items():
            assert f"`{key}=`" in row and prop in row, (event_type, key)
    common = section("### Log lines: the keys each event type reads")
    for key in ("customer", "email", *PROFILE_KEYS, *MONEY_KEYS, "currency"):
        assert f"`{key}=`" in common, key


def test_the_business_schema_is_documented_with_column_types() -> None:
    rows = table_rows("### The business database")
    for table in tables(BusinessSettings()):
        for column in table.columns:
            kind = re.escape(str(column.type.compile()).split("(")[0])
            assert any(re.match(rf"\| `{table.name}` +\| `{column.name}` +\| {kind}", r)
                       for r in rows), (table.name, column.name, str(column.type))
