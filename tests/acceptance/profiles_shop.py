"""A generated customers table and a settings file for the profiles pass's acceptance tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from klaviyo_sync.business.sample_data import create_schema, tables
from klaviyo_sync.config import BusinessSettings

API_KEY = "pk_test_standin"
#: updated_at of customer n is BASE + n seconds.
BASE = datetime(2026, 11, 1, 8, 0, 0)
BOXES = ("Organic Box", "Classic Box", "Family Box")


def customer_row(n: int, **changes: Any) -> dict[str, Any]:
    row = {"id": n, "email": f"customer{n}@example.com", "first_name": f"First{n}",
           "last_name": f"Last{n}", "status": "Active", "schedule": "Weekly",
           "box": BOXES[n % 3], "signup_date": date(2025, 1, 1) + timedelta(days=n % 300),
           "email_opt_in": True, "updated_at": BASE + timedelta(seconds=n)}
    row.update(changes)
    return row


class Customers:
    """The business database's customers table, written by the test (the app only reads)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url.replace("mysql://", "mysql+pymysql://")
                                       if url.startswith("mysql://") else url)
        create_schema(self.engine, BusinessSettings())
        self.table = tables(BusinessSettings())[0]

    def generate(self, count: int, **overrides: dict[str, Any]) -> None:
        """Customers 1..count; ``overrides`` maps str(n) to changed columns."""
        rows = [customer_row(n, **overrides.get(str(n), {})) for n in range(1, count + 1)]
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 5000):
                conn.execute(self.table.insert(), rows[start:start + 5000])

    def update(self, n: int, **changes: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.table.update().where(self.table.c.id == n).values(**changes))

    def close(self) -> None:
        self.engine.dispose()


def write_settings(path: Path, state_url: str, business_url: str, base_url: str,
                   **profiles: object) -> Path:
    lines = ["[state]", f'url = "{state_url}"', "[business]", f'url = "{business_url}"',
             "[klaviyo]", f'base_url = "{base_url}"', "respect_published_limits = false",
             "timeout_s = 20.0", "[sender]", f'outbox = "{path.parent / "outbox.jsonl"}"',
             "[profiles]", "readback_poll_s = 0.01"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in profiles.items()]
    lines += ["[logging]", 'level = "warning"']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ, KLAVIYO_API_KEY=API_KEY)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def klaviyo_sync(config: Path, *args: str) -> list[str]:
    """The command line, run by this interpreter: the tests must not depend on the
    virtualenv's bin folder being on PATH (the README's test command does not put it
    there)."""
    return [sys.executable, "-m", "klaviyo_sync", "--config", str(config), *args]


def command(config: Path, *args: str) -> list[str]:
    return klaviyo_sync(config, "profiles", *args)


def run(config: Path, *args: str) -> dict[str, Any]:
    """``profiles ... --json`` as a user runs it; its report."""
    done = subprocess.run(command(config, *args, "--json"), env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_text(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(config, *args), env=cli_env(), capture_output=True,
                          text=True, timeout=300)


def import_posts(standin: Any) -> int:
    return sum(1 for r in standin.requests
               if r.method == "POST" and r.path.rstrip("/") == "/api/profile-bulk-import-jobs")
