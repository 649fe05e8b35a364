"""The Klaviyo API client: one pooled requests.Session, paced, every answer classified.

Classification is the contract with the runner: 2xx returns; 429 waits ``Retry-After``
here (a few times) and then raises RateLimitedError; 5xx, timeouts and dropped
connections raise RetryableSendError; 413 PayloadTooLargeError; other 4xx
RejectedSendError with Klaviyo's error objects; 401/403 AuthError after at most one
credentials refresh. One audit row per request, answered or not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from klaviyo_sync.exceptions import (
    AuthError,
    ConfigError,
    PayloadTooLargeError,
    RateLimitedError,
    RejectedSendError,
    RetryableSendError,
)
from klaviyo_sync.logconfig import get_logger
from klaviyo_sync.senders import payloads
from klaviyo_sync.senders.audit import AuditLog
from klaviyo_sync.senders.auth import Credentials
from klaviyo_sync.senders.base import DeliveryReport, OutgoingEvent
from klaviyo_sync.senders.batching import DEFAULT_CAPS, BatchCaps
from klaviyo_sync.senders.deadline import DeadlineAdapter, request_within
from klaviyo_sync.senders.delivery import deliver
from klaviyo_sync.senders.pacing import Pacer

log = get_logger(__name__)

_JSONAPI = "application/vnd.api+json"
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
#: How often one request waits out a 429 before giving its events back to the queue.
MAX_RATE_LIMIT_WAITS = 5
#: A Retry-After longer than this is not waited out inline: the events go back to the queue.
MAX_INLINE_WAIT_S = 120.0


def check_base_url(base_url: str) -> str:
    """Only https leaves the machine: plain http is refused unless to a loopback address."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https":
        return base_url.rstrip("/")
    if parts.scheme == "http" and (host in _LOOPBACK_HOSTS or host.startswith("127.")):
        return base_url.rstrip("/")
    raise ConfigError(f"klaviyo.base_url: {base_url!r} is not https (plain http is allowed "
                      "only to a loopback address)")


def _errors_of(resp: requests.Response) -> list[dict[str, Any]]:
    try:
        body = resp.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _header_float(resp: requests.Response, name: str) -> float | None:
    try:
        return float(resp.headers[name])
    except (KeyError, ValueError):
        return None


class KlaviyoClient:
    """A :class:`~klaviyo_sync.senders.base.Sender` that talks to Klaviyo's API."""

    def __init__(self, base_url: str, revision: str, credentials: Credentials,
                 pacer: Pacer, audit: AuditLog, caps: BatchCaps = DEFAULT_CAPS,
                 timeout_s: float = 30.0, pool_size: int = 4,
                 session: requests.Session | None = None) -> None:
        self.base_url = check_base_url(base_url)
        self.revision = revision
        self.credentials = credentials
        self.pacer = pacer
        self.audit = audit
        self.caps = caps
        # (connect, read): a dead host fails fast; timeout_s also bounds the whole
        # request (senders/deadline.py), so a trickling answer cannot hold a send.
        self.timeout = (min(10.0, timeout_s), timeout_s)
        self.session = session or requests.Session()
        adapter = DeadlineAdapter(pool_connections=2, pool_maxsize=max(2, pool_size),
                                  max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"Accept": _JSONAPI, "Content-Type": _JSONAPI,
                                     "revision": revision,
                                     "User-Agent": "klaviyo-sync"})

    # --- Sender -------------------------------------------------------------------------

    def send_events(self, events: Sequence[OutgoingEvent]) -> DeliveryReport:
        return deliver(self, events, self.caps)

    def post_event(self, event: OutgoingEvent) -> None:
        self.request("POST", "/api/events", payloads.single_event_body(event), items=1)

    def post_bulk(self, body: bytes, items: int) -> None:
        self.request("POST", "/api/event-bulk-create-jobs", body, items=items)

    def suppress_profiles(self, emails: Sequence[str]) -> None:
        self._suppression(emails, delete=False)

    def unsuppress_profiles(self, emails: Sequence[str]) -> None:
        self._suppression(emails, delete=True)

    def _suppression(self, emails: Sequence[str], delete: bool) -> None:
        if not emails:
            return
        if len(emails) > payloads.SUPPRESS_MAX:
            raise ValueError(f"at most {payloads.SUPPRESS_MAX} emails per suppression job")
        path = ("/api/profile-suppression-bulk-delete-jobs" if delete
                else "/api/profile-suppression-bulk-create-jobs")
        self.request("POST", path, payloads.suppression_body(emails, delete), items=len(emails))

    def import_profile(self, profile: dict[str, Any]) -> None:
        self.request("POST", "/api/profile-import", payloads.profile_import_body(profile),
                     items=1)

    def request_profile_deletion(self, email: str | None = None,
                                 profile_id: str | None = None) -> int:
        """Ask Klaviyo to delete every profile with this email (or this profile id);
        returns the HTTP status (202). Raises SendError types like any request."""
        resp = self.request("POST", "/api/data-privacy-deletion-jobs",
                            payloads.deletion_body(email, profile_id), items=1)
        return resp.status_code

    def find_profile_ids(self, external_id: str) -> list[str]:
        """Klaviyo's ids of the profiles whose external_id is ``external_id``."""
        quoted = external_id.replace("\\", "\\\\").replace('"', '\\"')
        return [p["id"] for p in self._pages(
            "/api/profiles", {"filter": f'equals(external_id,"{quoted}")',
                              "page[size]": "100"}) if p.get("id")]

    def get_metrics(self) -> list[dict[str, Any]]:
        """Every metric of the account (GET /api/metrics, all pages)."""
        return list(self._pages("/api/metrics", {}))

    def iter_events(self, metric_id: str, since: str | None = None,
                    until: str | None = None) -> Iterator[dict[str, Any]]:
        """Events of one metric, oldest first (GET /api/events, paginated, paced).
        ``since``/``until`` are ISO date-times."""
        filters = [f'equals(metric_id,"{metric_id}")']
        if since:
            filters.append(f"greater-or-equal(datetime,{since})")
        if until:
            filters.append(f"less-than(datetime,{until})")
        params = {"filter": f"and({','.join(filters)})" if len(filters) > 1 else filters[0],
                  "sort": "datetime"}
        yield from self._pages("/api/events", params)

    def _pages(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        url: str | None = path
        query: dict[str, str] | None = params
        while url:
            resp = self.request("GET", url, None, query=query, endpoint=f"GET {path}")
            body = resp.json()
            yield from body.get("data") or []
            url = (body.get("links") or {}).get("next")
            query = None  # the next link carries the cursor and the filter

    def close(self) -> None:
        self.audit.flush()
        self.session.close()

    # --- one request ----------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | bytes | None,
                items: int = 0, query: dict[str, str] | None = None,
                endpoint: str | None = None) -> requests.Response:
        """Send one request (waiting out 429s), classify the answer, audit it."""
        endpoint = endpoint or f"{method} {path}"
        data = payloads.encode(body) if isinstance(body, dict) else body
        refreshed = False
        waits = 0
        while True:
            try:
                return self._once(method, path, data, items, query, endpoint)
            except RateLimitedError as exc:
                self.pacer.block(endpoint, exc.retry_after_s)
                waits += 1
                if waits > MAX_RATE_LIMIT_WAITS or exc.retry_after_s > MAX_INLINE_WAIT_S:
                    raise
                log.info("rate_limited", endpoint=endpoint, retry_after_s=exc.retry_after_s)
            except AuthError:
                if refreshed or not self.credentials.refresh_after_401():
                    raise
                refreshed = True

    def _once(self, method: str, path: str, data: bytes | None, items: int,
              query: dict[str, str] | None, endpoint: str) -> requests.Response:
        self.pacer.acquire(endpoint)
        url = path if path.startswith("http") else self.base_url + path
        headers = {"Authorization": self.credentials.authorization()}
        started = time.perf_counter()
        try:
            resp = request_within(self.session, self.timeout[1], method, url, data=data,
                                  params=query, headers=headers, timeout=self.timeout)
        except requests.Timeout as exc:
            self._audit(method, path, items, None, started, ["timeout"])
            raise RetryableSendError(f"{endpoint}: no answer within {self.timeout[1]} s"
                                     ) from exc
        except requests.RequestException as exc:
            self._audit(method, path, items, None, started, [type(exc).__name__])
            raise RetryableSendError(f"{endpoint}: connection failed ({type(exc).__name__})"
                                     ) from exc
        status = resp.status_code
        errors = _errors_of(resp) if status >= 400 else []
        self._audit(method, path, items, status, started,
                    [str(e.get("code") or e.get("title") or "") for e in errors] or None)
        remaining = _header_float(resp, "RateLimit-Remaining")
        reset = _header_float(resp, "RateLimit-Reset")
        self.pacer.observe(endpoint, int(remaining) if remaining is not None else None, reset)
        if status < 300:
            return resp
        detail = "; ".join(str(e.get("detail") or e.get("title") or e.get("code"))
                           for e in errors)[:2000] or resp.reason or ""
        message = f"{endpoint}: {status} {detail}".strip()
        if status == 429:
            retry_after = _header_float(resp, "Retry-After")
            raise RateLimitedError(message, retry_after if retry_after is not None else 1.0)
        if status in (401, 403):
            raise AuthError(message, status)
        if status == 413:
            raise PayloadTooLargeError(message, errors, status)
        if status >= 500 or status in (404, 405, 408, 409, 425):
            # 404/405 mean a wrong base_url or revision: configuration, not these bytes,
            # so the events wait (and retry with backoff) rather than being dead-lettered.
            raise RetryableSendError(message)
        raise RejectedSendError(message, errors, status)

    def _audit(self, method: str, path: str, items: int, status: int | None,
               started: float, codes: list[str] | None) -> None:
        self.audit.record(method, urlsplit(path).path, items, status,
                          (time.perf_counter() - started) * 1000.0, codes)
