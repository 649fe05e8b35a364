"""Acceptance: with a `[unique_ids]` template, the log's started.signup and the front end's
Started Checkout for the same moment are one event in Klaviyo, not two."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.acceptance.profiles_shop import API_KEY, cli_env, klaviyo_sync
from tests.klaviyo_standin import KlaviyoStandIn

MOMENT = datetime(2026, 11, 30, 9, 15, 0)
UNIX = int(MOMENT.replace(tzinfo=UTC).timestamp())


@pytest.fixture
def standin() -> Iterator[KlaviyoStandIn]:
    s = KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False)
    s.start()
    yield s
    s.stop()


def settings(tmp_path: Path, base_url: str, template: str | None) -> Path:
    lines = ["[log]", f'path = "{tmp_path / "system.log"}"',
             "[state]", f'url = "sqlite:///{tmp_path / "state.db"}"',
             "[klaviyo]", f'base_url = "{base_url}"', "respect_published_limits = false",
             "[events]", '"started.signup" = "Started Checkout"']
    if template is not None:
        lines += ["[unique_ids]", f'"started.signup" = "{template}"']
    lines += ["[logging]", 'level = "warning"']
    path = tmp_path / "settings.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ingest_and_send(config: Path) -> None:
    for step in ("parse", "send"):
        done = subprocess.run(klaviyo_sync(config, step), env=cli_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("template", "events"), [("{customer}_{unix}", 1), (None, 2)])
def test_front_end_checkout_and_log_signup_are_one_event(
        standin: KlaviyoStandIn, tmp_path: Path, template: str | None, events: int) -> None:
    # The front end sent its Started Checkout first, with unique_id "<customer>_<unix>".
    standin.add_event("Started Checkout", "ann@example.com", MOMENT.replace(tzinfo=UTC),
                      {"Box": "Organic Box"}, external_id="42", unique_id=f"42_{UNIX}")
    (tmp_path / "system.log").write_text(
        f"{MOMENT:%Y-%m-%d %H:%M:%S} started.signup customer=42 email=ann@example.com "
        "box=Organic\n", encoding="utf-8")
    ingest_and_send(settings(tmp_path, standin.base_url, template))
    recorded = [e for e in standin.events if e.metric == "Started Checkout"]
    # With the template, Klaviyo drops the log's copy; without it (the default "{line}"
    # id), the two are different events.
    assert len(recorded) == events
    assert sum(standin.received.values()) == 1  # the log's event did arrive either way
