"""Logging: JSON off a terminal, emails masked at info and above, secrets always hidden."""

from __future__ import annotations

import io
import json

import structlog

from klaviyo_sync import logconfig


def emit(level: str, mask: bool = True, **kw: object) -> dict:
    stream = io.StringIO()
    logconfig.configure("debug", "auto", mask_emails=mask, stream=stream)
    getattr(structlog.get_logger("t"), level)("something_happened", **kw)
    return json.loads(stream.getvalue().strip().splitlines()[-1])


def test_json_lines_when_not_a_terminal() -> None:
    line = emit("info", count=3)
    assert line["event"] == "something_happened"
    assert line["count"] == 3 and line["level"] == "info" and "timestamp" in line


def test_emails_masked_at_info_and_above_but_not_debug() -> None:
    assert emit("info", email="jane.doe@example.com")["email"] == "j***@example.com"
    assert emit("error", detail="bad jane@example.com x")["detail"] == "bad j***@example.com x"
    assert emit("debug", email="jane.doe@example.com")["email"] == "jane.doe@example.com"


def test_masking_can_be_turned_off() -> None:
    assert emit("info", mask=False, email="jane@example.com")["email"] == "jane@example.com"


def test_secrets_never_reach_a_line_whatever_the_level() -> None:
    line = emit("debug", api_key="pk_abcdef1234567890", header="Klaviyo-API-Key pk_abcdef123456",
                nested={"refresh_token": "r-123", "ok": 1}, note="Bearer eyJhbGciOi")
    text = json.dumps(line)
    assert "pk_abcdef" not in text and "r-123" not in text and "eyJhbGciOi" not in text
    assert line["api_key"] == "***" and line["nested"] == {"refresh_token": "***", "ok": 1}
