"""`klaviyo-sync orders`: one pass, then exit; `--reread-all` after a settings fix."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from klaviyo_sync.cli import cli
from klaviyo_sync.exceptions import ConfigError
from tests.integration.shop import Shop


def run(config: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["--config", str(config), "orders", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_orders_pass_and_reread_after_fixing_a_status_mapping(tmp_path: Path) -> None:
    shop = Shop(f"sqlite:///{tmp_path / 'business.db'}")
    shop.add_customer(1)
    shop.add_order(1, "placed", datetime(2026, 1, 5, 10, 0))
    shop.add_order(2, "Shipped", datetime(2026, 1, 5, 9, 0), items=0)
    shop.close()
    config = tmp_path / "settings.toml"
    base = (f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
            f'[business]\nurl = "{shop.url}"\n')
    config.write_text(base, encoding="utf-8")
    first = run(config)
    assert first["by_metric"] == {"Placed Order": 1, "Ordered Product": 2}
    assert first["unknown_status"] == 1
    assert run(config)["events_enqueued"] == 0

    config.write_text(base + '[orders]\nfulfilled_statuses = ["completed", "shipped"]\n',
                      encoding="utf-8")
    assert run(config)["events_enqueued"] == 0  # order 2 is behind the watermark
    fixed = run(config, "--reread-all")
    assert fixed["orders_read"] == 2
    assert fixed["by_metric"] == {"Placed Order": 1, "Fulfilled Order": 1}

    text = CliRunner().invoke(cli, ["--config", str(config), "orders"])
    assert text.exit_code == 0 and "0 event(s) enqueued" in text.output


def test_orders_without_a_business_database_says_why(tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n',
                      encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "orders"])
    assert isinstance(result.exception, ConfigError)
    assert "business.url is empty" in str(result.exception)
