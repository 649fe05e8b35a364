"""pytest fixtures for the Klaviyo stand-in (registered by ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.klaviyo_standin.server import KlaviyoStandIn

API_KEY = "pk_test_standin"
OAUTH_CLIENT_ID = "client-id"
OAUTH_CLIENT_SECRET = "client-secret"


@pytest.fixture
def klaviyo() -> Iterator[KlaviyoStandIn]:
    """A started stand-in with rate limits off (a test opts in with ``enforce_limits``).

    It accepts ``Klaviyo-API-Key pk_test_standin`` and the OAuth client
    ``client-id``/``client-secret``. A bug in the stand-in itself (answered 500
    ``standin_bug``) fails the test at teardown, so it is never mistaken for a fault.
    """
    standin = KlaviyoStandIn(api_keys={API_KEY}, enforce_limits=False,
                             oauth_clients={OAUTH_CLIENT_ID: OAUTH_CLIENT_SECRET})
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
    assert not standin.internal_errors, standin.internal_errors[0]


@pytest.fixture
def klaviyo_url(klaviyo: KlaviyoStandIn) -> str:
    """The base URL of the ``klaviyo`` stand-in, e.g. ``http://127.0.0.1:43121``."""
    return klaviyo.base_url
