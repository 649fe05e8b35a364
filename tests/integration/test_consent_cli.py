"""The consent commands in process: off until enabled, the pass's summary, the tables of
`consent list` and `consent reconcile --dry-run`, `optouts list --since`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from klaviyo_sync.cli import cli
from klaviyo_sync.clock import utcnow
from klaviyo_sync.exceptions import ConfigError
from tests.consent_world import PHONE, SMS_OPT_IN, build_world, email
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY


@pytest.fixture
def config(tmp_path: Path, standin: KlaviyoStandIn, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[Path, object]:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    url, world = build_world(tmp_path / "b.db", standin, 120, utcnow(), sms=True)
    path = tmp_path / "settings.toml"
    path.write_text("\n".join([
        "[state]", f'url = "sqlite:///{tmp_path}/state.db"', "[business]", f'url = "{url}"',
        "[klaviyo]", f'base_url = "{standin.base_url}"', "respect_published_limits = false",
        "[consent]", "enabled = ENABLED", f'sms_phone_column = "{PHONE}"',
        f'sms_opt_in_column = "{SMS_OPT_IN}"']) + "\n")
    return path, world


def invoke(path: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(path), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_off_until_enabled_then_pass_list_and_reconcile(config: tuple[Path, object],
                                                        standin: KlaviyoStandIn) -> None:
    path, world = config
    text = path.read_text()
    path.write_text(text.replace("ENABLED", "false"))
    off = CliRunner().invoke(cli, ["--config", str(path), "consent"])
    assert isinstance(off.exception, ConfigError) and off.exception.exit_code == 2
    assert "[consent] enabled = true" in str(off.exception)
    dry = invoke(path, "consent", "reconcile", "--dry-run")  # allowed while off
    header = next(line for line in dry.splitlines() if line.startswith("customer_id"))
    assert header.split() == ["customer_id", "email", "business_opt_in_at", "klaviyo",
                              "action"]
    assert "dry run, nothing changed" in dry
    assert not [r for r in standin.requests if r.method != "GET"]
    path.write_text(text.replace("ENABLED", "true"))
    summary = invoke(path, "consent")
    assert "customer(s) read" in summary and "subscribed_historical" in summary
    invalid = invoke(path, "consent", "list", "--state", "invalid_phone")
    assert all(email(i) in invalid for i in world.bad_phones)  # type: ignore[attr-defined]
    assert "does not start with +" in invalid
    conflicts = invoke(path, "consent", "list", "--state", "conflict", "--format", "json")
    assert {json.loads(line)["customer_id"] for line in conflicts.splitlines()
            if line.startswith('{"customer_id"')} == world.conflicts  # type: ignore[attr-defined]
    invoke(path, "optouts")
    everything = invoke(path, "optouts", "list", "--format", "json")
    later = invoke(path, "optouts", "list", "--since", "2999-01-01", "--format", "json")
    assert everything.count('"email"') == len(world.klaviyo_optouts())  # type: ignore[attr-defined]
    assert '"email"' not in later
