"""Profiles from customer rows, their digests, bodies and error pointers; unique_id templates."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pytest

from klaviyo_sync import config
from klaviyo_sync.business.customers import Customer, CustomerRow
from klaviyo_sync.business.profiles import ProfileBuilder
from klaviyo_sync.config import ProfileProperties
from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.parsers.mapping import EventMapping
from klaviyo_sync.parsers.times import LogTimezone
from klaviyo_sync.senders.profiles import (
    BODY_OVERHEAD,
    bulk_import_body,
    pointer_index,
    profile_item,
)


def row(**changes: object) -> CustomerRow:
    values = dict(id="42", email=" ann@example.com", first_name="Ann", last_name=None,
                  status="Active", schedule="Weekly", box="Organic Box",
                  signup_date=date(2025, 3, 1), email_opt_in=True)
    values.update(changes)
    return CustomerRow(Customer(**values), (Decimal("12.50"), datetime(2026, 1, 2, 3, 4)),
                       "2026-11-01 08:00:00", 42)


def builder() -> ProfileBuilder:
    return ProfileBuilder(ProfileProperties(status="Stage"),
                          {"credit": "Credit", "last_box_at": "LastBoxAt"},
                          ("credit", "last_box_at"))


def test_profile_carries_identity_names_and_the_named_properties() -> None:
    profile = builder().build(row())
    resource = json.loads(profile.item)
    assert resource == {"type": "profile", "attributes": {
        "email": "ann@example.com", "external_id": "42", "first_name": "Ann",
        "properties": {"Schedule": "Weekly", "Stage": "Active", "Box": "Organic Box",
                       "SignUpDate": "2025-03-01", "Credit": 12.5,
                       "LastBoxAt": "2026-01-02T03:04:00"}}}
    assert profile.customer_id == "42"


def test_digest_changes_with_the_profile_and_only_with_it() -> None:
    same = builder().build(row()).digest
    assert builder().build(row()).digest == same
    assert builder().build(row(box="Family Box")).digest != same
    assert builder().build(row(email=None)).digest != same


def test_body_wraps_encoded_items_and_its_overhead_is_exact() -> None:
    items = [builder().build(row(id=str(n))).item for n in range(3)]
    body = bulk_import_body(items)
    document = json.loads(body)
    assert document["data"]["type"] == "profile-bulk-import-job"
    assert [p["attributes"]["external_id"] for p in
            document["data"]["attributes"]["profiles"]["data"]] == ["0", "1", "2"]
    assert len(body) == BODY_OVERHEAD + sum(len(i) for i in items) + len(items) - 1


@pytest.mark.parametrize(("pointer", "index"), [
    ("/data/attributes/profiles/data/17/attributes/email", 17),
    ("/data/attributes/profiles/data/0", 0),
    ("/data/attributes/profiles/data", None), ("/data", None), (None, None),
])
def test_pointer_index(pointer: str | None, index: int | None) -> None:
    assert pointer_index(pointer) == index


MOMENT = datetime(2026, 11, 30, 9, 15, 0)
UTC_ZONE = LogTimezone("UTC")


def test_default_unique_id_is_the_line_id_unchanged() -> None:
    fields = {"customer": "42", "email": "ann@example.com"}
    plain = EventMapping({"started.signup": "Started Checkout"})
    explicit = EventMapping({"started.signup": "Started Checkout"},
                            unique_ids={"started.signup": "{line}"})
    for mapping in (plain, explicit):
        entry = mapping.to_entry("log:abc", "started.signup", MOMENT, fields, UTC_ZONE)
        assert entry.unique_id == "log:abc" and entry.metric == "Started Checkout"


def test_template_gives_the_front_ends_id_and_falls_back_without_a_customer() -> None:
    mapping = EventMapping({"started.signup": "Started Checkout", "cancelled": "cancelled"},
                           unique_ids={"started.signup": "{customer}_{unix}"})
    entry = mapping.to_entry("log:abc", "started.signup", MOMENT, {"customer": "42"}, UTC_ZONE)
    assert entry.unique_id == "42_1796030100"
    by_email = mapping.to_entry("log:abc", "started.signup", MOMENT,
                                {"email": "ann@example.com"}, UTC_ZONE)
    assert by_email.unique_id == "ann@example.com_1796030100"
    nobody = mapping.to_entry("log:abc", "started.signup", MOMENT, {}, UTC_ZONE)
    assert nobody.unique_id == "log:abc"
    other = mapping.to_entry("log:xyz", "cancelled", MOMENT, {"customer": "42"}, UTC_ZONE)
    assert other.unique_id == "log:xyz"


@pytest.mark.parametrize(("template", "message"), [
    ("{customer}_{when}", "unknown field {when}"), ("fixed", "names no field")])
def test_bad_unique_id_template_names_the_key(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        config.from_mapping({"unique_ids": {"started.signup": template}})
    assert "unique_ids.started.signup" in str(caught.value)


def test_extra_properties_need_plain_column_names() -> None:
    with pytest.raises(ConfigError, match=r"profiles\.extra_properties\.bad col"):
        config.from_mapping({"profiles": {"extra_properties": {"bad col": "X"}}})


@pytest.mark.parametrize("changes", [
    {}, {"email": None, "first_name": None}, {"first_name": 'Zoë "Q" \\ <tab>\t'},
    {"box": None, "signup_date": None}, {"email": "   "},
])
def test_built_item_is_byte_for_byte_the_generic_encoding(changes: dict) -> None:
    from klaviyo_sync.senders.profiles import profile_item

    profile = builder().build(row(**changes))
    assert profile.item == profile_item(json.loads(profile.item)["attributes"])


def test_repeated_property_names_are_refused() -> None:
    with pytest.raises(ValueError, match="repeat"):
        ProfileBuilder(ProfileProperties(), {"box2": "Box"}, ("box2",))


RAW_ROWS = [
    # id, email, first, last, status, schedule, box, signup_date, opt_in, updated_at, extras
    (42, " ann@example.com", "Ann", None, "Active", "Weekly", "Organic Box", "2025-03-01",
     1, "2026-11-01 08:00:00", Decimal("12.50"), datetime(2026, 1, 2, 3, 4)),
    ("43", "bo@example.com", "Bo", "Lee", "Paused", "", None, date(2025, 3, 1), 0,
     "2026-11-01 08:00:00", None, None),
    (44, None, None, None, None, None, "Family Box", datetime(2025, 3, 1, 9, 30), 1,
     "2026-11-01 08:00:00", 1, "x"),
    (45, "   ", 'Zoë "Q"', "\\", "Active", 1, True, "2025-03-01T10:00:00", 1,
     "2026-11-01 08:00:00", True, 1.0),
    # equal to 45's values, each of another class: must not share 45's encoding
    (46, "cy@example.com", "Cy", None, "Active", True, 1, "2025-03-01T10:00:00", 1,
     "2026-11-01 08:00:00", 1.0, True),
    (47, "di@example.com", "Di", None, "Active", "Weekly", "", "", 1,
     "2026-11-01 08:00:00", None, None),
]


@pytest.mark.parametrize("repeat", [1, 2])
def test_raw_rows_build_the_very_bytes_of_customer_rows(repeat: int) -> None:
    """build_raw (the pass's path) and build (retries) agree byte for byte, also when the
    property cache meets equal values of other classes (1, True, 1.0)."""
    made = builder()
    for _ in range(repeat):  # the second round is served from the cache
        raw = made.build_raw(RAW_ROWS)
        assert raw == [builder().build(CustomerRow.from_row(r)) for r in RAW_ROWS]
    assert [p.customer_id for p in raw] == ["42", "43", "44", "45", "46", "47"]


def test_raw_rows_without_extra_columns_match_too() -> None:
    plain = ProfileBuilder(ProfileProperties(), {}, ())
    rows = [r[:10] for r in RAW_ROWS]
    assert plain.build_raw(rows + rows) == [plain.build(CustomerRow.from_row(r))
                                            for r in rows + rows]


def test_a_page_mixing_full_rows_and_rows_with_gaps_encodes_each_canonically() -> None:
    """Rows the one template fits (every attribute present) and rows it does not (no
    email, spaces around it, a name missing, an empty name) side by side in one page:
    each item is exactly what profile_item makes of that row's own attributes."""
    plain = ProfileBuilder(ProfileProperties(), {}, ())
    full = ("box@example.com", "Al", "Bo")
    gaps = [(None, "Al", "Bo"), (" box@example.com ", "Al", "Bo"), ("box@example.com", "", "Bo"),
            ("box@example.com", "Al", None), ("   ", None, None), ("", "Al", "Bo")]
    shapes = [full, *gaps, full, full]
    rows = [(n, *shape, "Active", "Weekly", "Organic Box", "2025-03-01", 1,
             "2026-11-01 08:00:00") for n, shape in enumerate(shapes)]
    built = plain.build_raw(rows)
    for n, ((email, first, last), profile) in enumerate(zip(shapes, built, strict=True)):
        attributes: dict[str, object] = {"external_id": str(n), "properties": {
            "Box": "Organic Box", "Schedule": "Weekly", "SignUpDate": "2025-03-01",
            "Status": "Active"}}
        if email and email.strip():
            attributes["email"] = email.strip()
        if first:
            attributes["first_name"] = first
        if last:
            attributes["last_name"] = last
        assert profile.item == profile_item(attributes), shapes[n]
        assert profile.customer_id == str(n)
    assert len({p.digest for p in built}) == len(built)
