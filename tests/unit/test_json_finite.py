"""NaN and Infinity are not JSON: every encoder of the senders and the state refuses them."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.queue.drivers.sqlite_bulk import json_text
from klaviyo_sync.senders.base import OutgoingEvent
from klaviyo_sync.senders.payloads import BulkEncoder, bulk_body, encode, single_event_body
from klaviyo_sync.state import meta
from klaviyo_sync.state.db import create_engine

NOT_FINITE = [math.inf, -math.inf, math.nan]


def event(**kw: object) -> OutgoingEvent:
    fields: dict = dict(queue_id=1, unique_id="u1", metric="cancelled",
                        time=datetime(2020, 5, 15, 12, 35, 32), properties={"reason": "x"},
                        profile={"email": "c@example.com"})
    fields.update(kw)
    return OutgoingEvent(**fields)


@pytest.mark.parametrize("bad", NOT_FINITE)
def test_event_bodies_refuse_a_value_that_is_not_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        BulkEncoder().bulk([event(value=bad)])
    with pytest.raises(ValueError, match="JSON compliant"):
        encode(bulk_body([event(value=bad)])[0])
    with pytest.raises(ValueError, match="JSON compliant"):
        encode(single_event_body(event(value=bad)))


@pytest.mark.parametrize("bad", NOT_FINITE)
def test_event_bodies_refuse_a_property_that_is_not_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        BulkEncoder().bulk([event(properties={"score": bad})])
    with pytest.raises(ValueError, match="JSON compliant"):
        BulkEncoder().bulk([event(profile={"email": "c@example.com", "n": {"x": [bad]}})])


@pytest.mark.parametrize("bad", NOT_FINITE)
def test_the_queue_row_text_refuses_what_is_not_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        json_text({"score": bad})
    with pytest.raises(ValueError, match="JSON compliant"):
        json_text({"nested": [bad]})


@pytest.mark.parametrize("bad", NOT_FINITE)
def test_the_state_engine_refuses_json_that_is_not_finite(tmp_path: Path, bad: float) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    table = sa.Table("t", sa.MetaData(), sa.Column("doc", sa.JSON()))
    table.create(engine)
    with pytest.raises(sa.exc.StatementError, match="JSON compliant"), engine.begin() as conn:
        conn.execute(table.insert(), [{"doc": {"x": bad}}])
    with pytest.raises(ValueError, match="JSON compliant"), engine.begin() as conn:
        meta.put_json(conn, "k", {"x": bad})
    engine.dispose()
