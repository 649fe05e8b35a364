"""Acceptance: `send` and `audit` as a user runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from klaviyo_sync.queue import QueueStore
from klaviyo_sync.state.db import open_state
from tests.acceptance.test_send_crash import cli_env, write_settings
from tests.integration.test_send_runner import API_KEY, make_events
from tests.klaviyo_standin import KlaviyoStandIn


def run(config: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config", str(config), *args],
                          env=env or cli_env(), capture_output=True, text=True, timeout=120)


def test_send_drains_then_exits_and_audit_lists_the_requests(standin: KlaviyoStandIn,
                                                             tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    QueueStore(open_state(url)).enqueue_many(make_events(1500))
    config = write_settings(tmp_path / "settings.toml", url, standin.base_url,
                            batch_max_events=500, claim_batch=500)
    done = run(config, "send", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["sent"] == 1500 and summary["requests"] == 3
    assert len(standin.events) == 1500
    again = run(config, "send")
    assert again.returncode == 0 and again.stdout.startswith("sent 0 event(s)")
    audit = run(config, "audit", "--since", "1h", "--json")
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [r["items"] for r in rows] == [500, 500, 500]
    assert {r["endpoint"] for r in rows} == {"/api/event-bulk-create-jobs"}
    assert {r["status_code"] for r in rows} == {202}
    assert API_KEY not in audit.stdout + done.stdout + done.stderr


def test_refused_credentials_exit_6_and_keep_the_queue(standin: KlaviyoStandIn,
                                                      tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = QueueStore(open_state(url))
    store.enqueue_many(make_events(10))
    config = write_settings(tmp_path / "settings.toml", url, standin.base_url)
    env = dict(cli_env(), KLAVIYO_API_KEY="pk_wrong_key_123456")
    done = run(config, "send", env=env)
    assert done.returncode == 6
    assert "refused the credentials" in done.stderr
    assert "pk_wrong_key_123456" not in done.stderr + done.stdout
    assert store.counts()["pending"] == 10


def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    config = write_settings(tmp_path / "settings.toml", url, "http://klaviyo.example.com")
    done = run(config, "send")
    assert done.returncode == 2 and "not https" in done.stderr
