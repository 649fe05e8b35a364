"""A Klaviyo stand-in for tests: a real HTTP server on 127.0.0.1 that behaves like Klaviyo.

Usage::

    from tests.klaviyo_standin import KlaviyoStandIn

    with KlaviyoStandIn(api_keys={"pk_test_standin"}, enforce_limits=True) as s:
        post(s.base_url + "/api/event-bulk-create-jobs", ...)
        assert len(s.events) == 1000

or the pytest fixtures ``klaviyo`` (a started stand-in, limits off) and ``klaviyo_url``
from :mod:`tests.klaviyo_standin.fixtures`.

Constructor options (all keyword-only after ``api_keys``):
    ``enforce_limits`` (429s and ``RateLimit-*`` headers; off: neither), ``limits`` (override
    per endpoint, e.g. ``{"bulk_events": (burst, steady)}``; names in
    :data:`tests.klaviyo_standin.limits.DEFAULT_LIMITS`), ``window_scale`` (0.1 -> windows of
    100 ms and 6 s), ``latency_s`` (added to every answer; also settable later),
    ``seed`` (random faults and ids), ``oauth_clients`` (client id -> secret),
    ``access_token_ttl_s``, ``bulk_refuses_known_unique_ids`` (a bulk request holding an
    event already recorded is refused 400, as Klaviyo may; off: silently dropped like the
    single endpoint), ``report_all_errors`` (400s list every problem, not just the first),
    ``monotonic`` (the rate-limit windows' clock, for tests that step through windows).
    The stand-in keeps its own clock: freezegun in the test does not stop its windows.

Endpoints (``Authorization: Klaviyo-API-Key <key>`` or ``Bearer <token>``; ``revision``
header required; bodies ``application/vnd.api+json``):
    ``POST /api/events`` (202, no body), ``POST /api/event-bulk-create-jobs`` (<= 1,000
    events, <= 5 MB; 202 with a job document), ``POST /api/profile-import`` (201/200,
    <= 100 KB), ``POST /api/profile-bulk-import-jobs`` with its read-back and import errors
    (see :mod:`tests.klaviyo_standin.profile_jobs`),
    ``POST /api/profile-suppression-bulk-create-jobs`` and ``...-bulk-delete-jobs`` (<= 100
    emails; 202 "queued"; ``GET .../<id>`` says "complete"), ``GET /api/metrics``,
    ``GET /api/events`` (see :mod:`tests.klaviyo_standin.reads`), ``POST /oauth/token``
    (refresh-token grant, rotates the refresh token), the catalog's bulk jobs and lists
    (see :mod:`tests.klaviyo_standin.catalog`; ``s.catalog`` holds what it has, and
    ``s.catalog.refuse(kind, external_id, detail)`` injects a per-object error). Unknown
    path 404, wrong method 405.

Errors are JSON:API (``errors[].code/title/detail/source.pointer``). In a refused bulk
request the pointer starts with the offending event's, e.g.
``/data/attributes/events-bulk-create/data/3/attributes/events/data/0`` (followed by the
field, for a schema violation; a bad profile points into ``.../data/3/attributes/profile``).
A repeated unique_id gives code ``duplicate_unique_id``; the detail says "is repeated ...
in this request" or "already exists".

What it recorded (snapshots): ``events`` (:class:`RecordedEvent`, deduplicated by
profile, metric and unique_id, or time to the second without one), ``received`` (Counter
of unique_id -> arrivals in accepted requests, repeats included), ``suppressed`` /
``unsuppressed`` (email -> when), ``suppression_requests``, ``profiles`` (profile-import
results keyed by email, else external_id), ``requests`` (:class:`RequestRecord`; status 0
means the connection was dropped on purpose), ``internal_errors`` (tracebacks of stand-in
bugs, answered 500 ``standin_bug``; the ``klaviyo`` fixture fails a test that met one).

Faults (``s.faults``, thread-safe, ``/api`` only): ``fail_rate(rate, status)``,
``fail_next(count, status, after_processing=False)``, ``reject_unique_ids({uid: detail})``,
``auth_failing(on)``, ``rate_limit_next(count, retry_after)``,
``drop_next(count, after_processing=False)``, ``clear()``. Slow answers: ``s.latency_s``.

Consent and erasure (:mod:`~tests.klaviyo_standin.subscriptions`, ``optouts``, ``privacy``):
``POST /api/profile-subscription-bulk-create-jobs`` (<= 1,000 profiles) and
``...-bulk-delete-jobs`` (<= 100), ``GET /api/profiles`` (``additional-fields[profile]=
subscriptions``, suppression-timestamp filter and sort, <= 100 a page), ``GET /api/lists``,
``POST /api/lists/<id>/relationships/profiles`` (204) and
``POST /api/data-privacy-deletion-jobs``; the jobs answer 202 with no body. Test data:
``account.opt_out(email, reason="UNSUBSCRIBE", at=None, method=..., method_detail=None,
custom_method_detail=None)``, ``account.add_list(id, name, double_opt_in=False)``,
``account.consent.default_double_opt_in``. Records: ``subscriptions``, ``unsubscriptions``,
``suppressions_lifted``, ``confirmations_sent``, ``flows_fired``, ``deletion_requests``,
``email_consent(email)`` (see :mod:`~tests.klaviyo_standin.consent_view`).

Read data: ``add_metric(name) -> id``, ``add_event(metric, email, time, properties,
external_id=None)``. OAuth: ``issue_oauth_tokens(client_id)`` gives a first token pair;
``oauth.expire_access_tokens()`` expires every access token.

In a process of its own (a benchmark, so it does not share the sender's GIL):
``python -m tests.klaviyo_standin --no-limits`` prints the base URL, serves until SIGTERM
and prints ``stats()`` as JSON; ``GET /_standin/stats`` gives the same counts meanwhile.

Speed (this 2-core machine, limits off, stand-in in its own process, bodies of 1,000
events / 540 KB): about 30 ms of work per bulk request when the machine is idle, 8-10
requests/s (8,000-10,000 events/s) while other test suites load it; single events about
1,200 requests/s.
"""

from __future__ import annotations

from tests.klaviyo_standin.account import RecordedEvent, RequestRecord
from tests.klaviyo_standin.server import KlaviyoStandIn

__all__ = ["KlaviyoStandIn", "RecordedEvent", "RequestRecord"]
