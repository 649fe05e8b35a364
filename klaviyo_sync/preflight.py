"""What `config check` verifies: everything `run` would refuse, and with ``--connect`` each
outside part (state database, business database, log, Klaviyo) tried once, changing none.

The Klaviyo probe is one GET of the metrics list's first page: it spends no event, no
profile and no rate limit that delivery needs, and it tells a refused key (401/403) from an
unreachable host.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import sqlalchemy as sa

from klaviyo_sync.config import Settings
from klaviyo_sync.exceptions import KlaviyoSyncError


@dataclass(frozen=True)
class CheckResult:
    part: str
    ok: bool
    detail: str


def refusals(settings: Settings) -> list[str]:
    """What `run` would refuse to start with (as messages naming the key), without
    touching any database or network."""
    from klaviyo_sync.daemon.http import parse_listen
    from klaviyo_sync.senders.client import check_base_url

    problems: list[str] = []

    def check(what: Callable[[], object]) -> None:
        try:
            what()
        except KlaviyoSyncError as exc:
            problems.append(str(exc))

    if settings.daemon.http_listen:
        check(lambda: parse_listen(settings.daemon.http_listen))
    if settings.sender.kind == "klaviyo":
        check(lambda: check_base_url(settings.klaviyo.base_url))
        if settings.klaviyo.auth == "api_key":
            try:
                if not settings.api_key():
                    problems.append(
                        f"no Klaviyo API key: set ${settings.klaviyo.api_key_env} or "
                        "klaviyo.api_key_file")
            except KlaviyoSyncError as exc:
                problems.append(str(exc))
        elif not all(settings.oauth_credentials()):
            k = settings.klaviyo
            problems.append(
                "klaviyo.oauth_*_env: klaviyo.auth = \"oauth\" needs "
                f"${k.oauth_client_id_env}, ${k.oauth_client_secret_env} and "
                f"${k.oauth_refresh_token_env}")
    return problems


def connect_all(settings: Settings) -> list[CheckResult]:
    """Try each outside part once; nothing is created or sent."""
    results = [_try("state database", lambda: _state(settings))]
    if settings.business.url:
        results.append(_try("business database", lambda: _business(settings)))
    results.append(_try("log", lambda: _log(Path(settings.log.path))))
    if settings.sender.kind == "klaviyo":
        results.append(_try("klaviyo", lambda: _klaviyo(settings)))
    return results


def _try(part: str, probe: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(part, True, probe())
    except (KlaviyoSyncError, sa.exc.SQLAlchemyError, OSError, requests.RequestException,
            ValueError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return CheckResult(part, False, f"{type(exc).__name__}: {detail}")


def _state(settings: Settings) -> str:
    from klaviyo_sync.state import db

    engine = db.create_engine(settings.state.url, settings.state.sqlite_busy_timeout_s,
                              create=False)
    try:
        db.ensure_schema(engine, create=False)
        return f"schema {db.schema_status(engine).current}"
    finally:
        engine.dispose()


def _business(settings: Settings) -> str:
    from klaviyo_sync.business.db import open_business

    engine = open_business(settings.business.url)
    try:
        with engine.connect() as conn:
            table = sa.table(settings.business.customers_table)
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        return f"{count} row(s) in {settings.business.customers_table}"
    finally:
        engine.dispose()


def _log(path: Path) -> str:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise OSError(f"{path} does not exist (yet)") from None
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise OSError(f"{path} is not readable by this user")
    return f"{path}, {info.st_size} bytes"


def _klaviyo(settings: Settings) -> str:
    from klaviyo_sync.senders.client import check_base_url

    k = settings.klaviyo
    if k.auth != "api_key":
        # A refresh would rotate the OAuth refresh token: not something a check should do.
        return "not tried: OAuth credentials are only used by a real refresh"
    key = settings.api_key() or ""
    resp = requests.get(f"{check_base_url(k.base_url)}/api/metrics",
                        params={"fields[metric]": "name"}, timeout=k.timeout_s,
                        headers={"Authorization": f"Klaviyo-API-Key {key}",
                                 "revision": k.revision,
                                 "Accept": "application/vnd.api+json"})
    if resp.status_code != 200:
        raise OSError(f"GET /api/metrics answered {resp.status_code}")
    return f"GET /api/metrics answered 200 (revision {k.revision})"
