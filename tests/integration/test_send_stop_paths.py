"""The same stop of a drain is the same error on every path: `klaviyo-sync send` and the
daemon's send pass raise one exception type (and so one exit code) for one failure."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from klaviyo_sync import config
from klaviyo_sync.cli import cli
from klaviyo_sync.daemon.passes import Pipeline
from klaviyo_sync.exceptions import AuthError, BusinessDataError, KlaviyoSyncError
from klaviyo_sync.queue import QueueStore
from tests.integration.test_send_runner import make_events
from tests.klaviyo_standin import KlaviyoStandIn
from tests.klaviyo_standin.fixtures import API_KEY


def write_settings(tmp_path: Path, state_url: str, base_url: str, business_url: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'[log]\npath = "{tmp_path / "system.log"}"\n'
        f'[state]\nurl = "{state_url}"\n'
        f'[business]\nurl = "{business_url}"\n'
        f'[klaviyo]\nbase_url = "{base_url}"\nrespect_published_limits = false\n'
        '[sender]\nconcurrency = 1\n', encoding="utf-8")
    return path


def daemon_pass_error(settings_path: Path, engine: sa.Engine) -> KlaviyoSyncError:
    pipeline = Pipeline(config.load(settings_path), engine, "test:1")
    try:
        with pytest.raises(KlaviyoSyncError) as caught:
            pipeline.send(threading.Event())
    finally:
        pipeline.close()
    return caught.value


def cli_send_error(settings_path: Path) -> BaseException | None:
    result = CliRunner().invoke(cli, ["--config", str(settings_path), "send"])
    return result.exception


@pytest.mark.parametrize("failure", ["credentials", "business_db"])
def test_cli_and_daemon_raise_the_same_error_for_the_same_stop(
        failure: str, klaviyo: KlaviyoStandIn, state_url: str, state_engine: sa.Engine,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    QueueStore(state_engine).enqueue_many(make_events(20))
    if failure == "credentials":
        klaviyo.faults.auth_failing(True)
        business_url = ""  # no customer look-up: the first request is refused
    else:
        business_url = f"sqlite:///{tmp_path / 'no-such-dir' / 'business.db'}"
    settings_path = write_settings(tmp_path, state_url, klaviyo.base_url, business_url)
    from_daemon = daemon_pass_error(settings_path, state_engine)
    # A business database stop releases the batch for 30 s: the CLI gets fresh events.
    QueueStore(state_engine).enqueue_many(make_events(40)[20:])
    from_cli = cli_send_error(settings_path)
    expected = AuthError if failure == "credentials" else BusinessDataError
    assert type(from_daemon) is expected and type(from_cli) is expected
    assert isinstance(from_cli, KlaviyoSyncError)
    assert from_cli.exit_code == from_daemon.exit_code == (6 if expected is AuthError else 5)
    if isinstance(from_daemon, AuthError) and isinstance(from_cli, AuthError):
        assert from_daemon.status == from_cli.status == 401
    assert QueueStore(state_engine).counts()["pending"] == 40  # nothing spent, nothing lost
