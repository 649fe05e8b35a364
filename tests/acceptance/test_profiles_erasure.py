"""Acceptance: the profiles pass honours erasure: it forgets customers whose status asks
for it ([privacy] erase_statuses) and, on --all passes with [privacy] erase_vanished, those
gone from the customers table; and it never imports a person who was forgotten."""

from __future__ import annotations

import subprocess
from pathlib import Path

import sqlalchemy as sa

from klaviyo_sync.state.db import open_state
from tests.acceptance.profiles_shop import Customers, cli_env, klaviyo_sync, run, write_settings
from tests.klaviyo_standin import KlaviyoStandIn


def settings(tmp_path: Path, state_url: str, shop: str, standin: KlaviyoStandIn) -> Path:
    config = write_settings(tmp_path / "settings.toml", state_url, shop, standin.base_url)
    config.write_text(config.read_text(encoding="utf-8").replace(
        "[logging]", f'[privacy]\nerase_statuses = ["Erased"]\nerase_vanished = true\n'
                     f'key_file = "{tmp_path / "privacy.key"}"\n[logging]'), encoding="utf-8")
    return config


def deleted_emails(standin: KlaviyoStandIn) -> list[str]:
    return sorted(r.value for r in standin.account.deletion_requests if r.kind == "email")


def test_the_profiles_pass_forgets_by_status_and_vanishing_and_skips_the_forgotten(
        tmp_path: Path, state_url: str, standin: KlaviyoStandIn) -> None:
    shop = f"sqlite:///{tmp_path / 'shop.db'}"
    customers = Customers(shop)
    customers.generate(30)
    config = settings(tmp_path, state_url, shop, standin)
    first = run(config, "--all")
    assert first["sent"] == 30 and first["forgotten"] == 0 and not deleted_emails(standin)

    customers.update(7, status="Erased")  # the business marks an erasure request
    with customers.engine.begin() as conn:  # and customer 9 is deleted outright
        conn.execute(sa.text("DELETE FROM customers WHERE id = 9"))
    changed = run(config)
    assert changed["forgotten"] == 1 and changed["sent"] == 0
    assert deleted_emails(standin) == ["customer7@example.com"]
    assert standin.account.profile_id_for("email", "customer9@example.com") is not None
    full = run(config, "--all")  # vanished customers are found by full passes
    assert full["forgotten"] == 1 and full["sent"] == 0
    # Nothing of ours names customer 9's email any more: Klaviyo's profile is found by
    # its external_id and deleted by Klaviyo's id.
    assert deleted_emails(standin) == ["customer7@example.com"]
    by_id = [r for r in standin.account.deletion_requests if r.kind == "id"]
    assert len(by_id) == 1
    assert standin.account.profile_id_for("email", "customer9@example.com") is None
    assert standin.account.profile_id_for("email", "customer8@example.com") is not None

    # Forgotten people are not imported again, whatever changes in the business database.
    customers.update(7, first_name="Changed", status="Erased")
    again = run(config, "--all")
    assert again["sent"] == 0 and again["erased_skipped"] == 1 and again["forgotten"] == 0
    listing = subprocess.run(klaviyo_sync(config, "forget", "--list", "--json"),
                             env=cli_env(), capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert sorted(line.split('"asked_by": "')[1].split('"')[0]
                  for line in listing.stdout.splitlines()) == ["status", "vanished"]
    engine = open_state(state_url)
    try:
        with engine.connect() as conn:
            kept = set(conn.execute(sa.text("SELECT customer_id FROM profile_sync")).scalars())
    finally:
        engine.dispose()
    assert "7" not in kept and "9" not in kept and len(kept) == 28
    customers.close()
