"""Acceptance: `klaviyo-sync profiles` keeps every customer's Klaviyo profile current."""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.acceptance.profiles_shop import (
    API_KEY,
    BASE,
    Customers,
    cli_env,
    import_posts,
    klaviyo_sync,
    run,
    run_text,
    write_settings,
)
from tests.conftest import PG_URL, require_service
from tests.klaviyo_standin import KlaviyoStandIn

TOTAL = 20_000


@pytest.fixture
def standin() -> Iterator[KlaviyoStandIn]:
    s = KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False)
    s.start()
    yield s
    s.stop()
    assert not s.internal_errors, s.internal_errors[0]


@pytest.fixture(params=[
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
])
def shop_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The business database on each backend; on PostgreSQL a schema of its own, apart
    from the state's (``state_url`` may hold ``pg_schema_url``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'business.db'}"
    elif request.param == "mariadb":
        yield str(request.getfixturevalue("mysql_db_url"))
    else:
        require_service(PG_URL, "PostgreSQL")
        schema = f"b_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield sa.make_url(PG_URL).update_query_dict(
                {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def profile_of(standin: KlaviyoStandIn, n: int) -> dict:
    return standin.profiles[f"customer{n}@example.com"]


@pytest.mark.slow
def test_all_then_nothing_then_exactly_the_changed_and_the_late(
        standin: KlaviyoStandIn, state_url: str, shop_url: str, tmp_path: Path) -> None:
    business_url = shop_url
    shop = Customers(business_url)
    shop.generate(TOTAL)
    config = write_settings(tmp_path / "settings.toml", state_url, business_url,
                            standin.base_url)

    first = run(config, "--all")
    assert first["sent"] == first["imported"] == TOTAL and first["failed"] == 0
    assert import_posts(standin) <= math.ceil(TOTAL / 10_000) + 1
    profiles = standin.profiles
    assert len(profiles) == TOTAL
    assert profile_of(standin, 7) == {
        "email": "customer7@example.com", "external_id": "7", "first_name": "First7",
        "last_name": "Last7", "properties": {"Schedule": "Weekly", "Status": "Active",
                                             "Box": "Classic Box", "SignUpDate": "2025-01-08"}}
    assert standin.profile_jobs.unread() == []

    posts = import_posts(standin)
    second = run(config)
    assert second["sent"] == 0 and import_posts(standin) == posts

    # 50 changed now, 5 committed late with an updated_at older than the watermark.
    latest = BASE + timedelta(seconds=TOTAL)
    changed = range(100, 150)
    late = range(1000, 1005)
    for n in changed:
        shop.update(n, box="Veggie Box", updated_at=latest + timedelta(seconds=60))
    for n in late:
        shop.update(n, status="Paused", updated_at=latest - timedelta(seconds=120))
    third = run(config)
    assert third["sent"] == 55 and third["imported"] == 55
    assert profile_of(standin, 120)["properties"]["Box"] == "Veggie Box"
    assert profile_of(standin, 1002)["properties"]["Status"] == "Paused"
    assert len(standin.profiles) == TOTAL
    assert run(config)["sent"] == 0
    shop.close()


def test_import_errors_are_listed_and_retried(standin: KlaviyoStandIn, state_url: str,
                                              tmp_path: Path) -> None:
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    shop = Customers(business_url)
    shop.generate(TOTAL)
    failing = [3, 777, 5000, 9999, 10_001, 15_000, 19_998]
    standin.profile_jobs.fail_emails({f"customer{n}@example.com": f"Profile {n} is blocked."
                                      for n in failing})
    config = write_settings(tmp_path / "settings.toml", state_url, business_url,
                            standin.base_url)
    report = run(config, "--all")
    assert report["imported"] == TOTAL - 7 and report["failed"] == 7

    listed = run_text(config, "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(int(r["customer_id"]) for r in rows) == failing
    assert {r["error"] for r in rows if r["customer_id"] == "777"} == {
        "invalid: Profile 777 is blocked."}
    status = subprocess.run(klaviyo_sync(config, "status", "--json"),
                            env=cli_env(), capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["profiles"]["failed"] == 7
    assert "7 profile(s) Klaviyo did not import" in " ".join(json.loads(status.stdout)["reasons"])

    # Unchanged failures wait for `profiles retry`; once Klaviyo takes them, they import.
    assert run(config)["sent"] == 0
    standin.profile_jobs.failing.clear()
    retried = run(config, "retry")
    assert retried["sent"] == 7 and retried["imported"] == 7
    assert run_text(config, "failed").stdout == ""
    assert len(standin.profiles) == TOTAL


def test_one_malformed_email_in_ten_thousand_fails_alone(standin: KlaviyoStandIn,
                                                         tmp_path: Path) -> None:
    business_url = f"sqlite:///{tmp_path / 'business.db'}"
    shop = Customers(business_url)
    shop.generate(10_000, **{"4321": {"email": "not an email@example"}})
    config = write_settings(tmp_path / "settings.toml", f"sqlite:///{tmp_path / 'state.db'}",
                            business_url, standin.base_url)
    report = run(config, "--all")
    assert report["imported"] == 9_999 and report["failed"] == 1
    assert import_posts(standin) == 2  # the refused request, then the 9,999 alone
    refused = [r for r in standin.requests if r.status == 400]
    assert len(refused) == 1 and refused[0].items == 10_000
    rows = [json.loads(line)
            for line in run_text(config, "failed", "--json").stdout.splitlines()]
    assert [r["customer_id"] for r in rows] == ["4321"]
    assert "not a valid email" in rows[0]["error"]
    assert len(standin.profiles) == 9_999
