"""pytest fixtures for the Klaviyo stand-in (registered by ``tests/conftest.py``).

Every test that talks to the stand-in gets it from here, so each one is stopped and
checked for stand-in bugs at teardown. A module that needs other options (limits,
latency, a fault seed, ...) overrides ``klaviyo_options``; a test that needs a second
stand-in, or one started mid-test, calls ``make_standin``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from tests.klaviyo_standin.server import KlaviyoStandIn

API_KEY = "pk_test_standin"
OAUTH_CLIENT_ID = "client-id"
OAUTH_CLIENT_SECRET = "client-secret"


class StandInFactory(Protocol):
    def __call__(self, **options: Any) -> KlaviyoStandIn: ...


def standin_defaults() -> dict[str, Any]:
    """The options every fixture stand-in starts with, before a test's own."""
    return {"api_keys": {API_KEY}, "enforce_limits": False,
            "oauth_clients": {OAUTH_CLIENT_ID: OAUTH_CLIENT_SECRET}}


@pytest.fixture
def make_standin() -> Iterator[StandInFactory]:
    """Starts stand-ins with the defaults overridden by keyword (``latency_s=0.05``, ...).

    They accept ``Klaviyo-API-Key pk_test_standin`` and the OAuth client
    ``client-id``/``client-secret``, with rate limits off unless a test passes
    ``enforce_limits=True``. Each is stopped at teardown, and a bug in the stand-in itself
    (answered 500 ``standin_bug``) then fails the test, so it is never mistaken for a fault.
    """
    started: list[KlaviyoStandIn] = []

    def make(**options: Any) -> KlaviyoStandIn:
        standin = KlaviyoStandIn(**{**standin_defaults(), **options})
        standin.start()
        started.append(standin)
        return standin

    try:
        yield make
    finally:
        for standin in started:
            standin.stop()
    for standin in started:
        assert not standin.internal_errors, standin.internal_errors[0]


@pytest.fixture
def klaviyo_options() -> dict[str, Any]:
    """Options for the ``klaviyo`` stand-in on top of the defaults; override per module."""
    return {}


@pytest.fixture
def klaviyo(make_standin: StandInFactory, klaviyo_options: dict[str, Any]) -> KlaviyoStandIn:
    """A started stand-in built from ``klaviyo_options`` (see ``make_standin``)."""
    return make_standin(**klaviyo_options)


@pytest.fixture
def standin(klaviyo: KlaviyoStandIn) -> KlaviyoStandIn:
    """The ``klaviyo`` stand-in under the name the sender tests use."""
    return klaviyo


@pytest.fixture
def klaviyo_url(klaviyo: KlaviyoStandIn) -> str:
    """The base URL of the ``klaviyo`` stand-in, e.g. ``http://127.0.0.1:43121``."""
    return klaviyo.base_url
