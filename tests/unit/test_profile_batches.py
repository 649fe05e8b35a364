"""Profiles cut into bulk import requests by count and by body size."""

from __future__ import annotations

import random

from klaviyo_sync.business.profiles import Profile
from klaviyo_sync.profile_sync import _Batches
from klaviyo_sync.senders.profiles import bulk_import_body


def profiles(sizes: list[int]) -> list[Profile]:
    return [Profile(str(n), b"x" * size, f"d{n}") for n, size in enumerate(sizes)]


def cut(items: list[Profile], pages: list[int], max_profiles: int, max_bytes: int
        ) -> list[tuple[list[Profile], str | None]]:
    made: list[tuple[list[Profile], str | None]] = []
    batches = _Batches(max_profiles, max_bytes, lambda batch, mark: made.append((batch, mark)))
    start = 0
    for page, size in enumerate(pages):
        batches.add(items[start:start + size], f"page {page}")
        start += size
    batches.flush("end")
    return made


def test_requests_are_as_full_as_the_count_and_the_body_size_allow() -> None:
    rng = random.Random(7)
    items = profiles([rng.randrange(1, 400) for _ in range(3_000)])
    pages = [rng.randrange(1, 700) for _ in range(20)]
    pages.append(len(items) - sum(pages))
    made = cut(items, pages, max_profiles=50, max_bytes=6_000)
    assert [p for batch, _ in made for p in batch] == items  # all of them, in order
    for n, (batch, _mark) in enumerate(made):
        body = len(bulk_import_body([p.item for p in batch]))
        assert len(batch) <= 50 and body <= 6_000
        if n + 1 < len(made):  # full: the next profile would not have fitted
            following = made[n + 1][0][0]
            assert len(batch) == 50 or body + len(following.item) + 1 > 6_000


def test_a_request_cut_inside_a_page_carries_the_watermark_before_that_page() -> None:
    made = cut(profiles([10] * 25), [10, 10, 5], max_profiles=7, max_bytes=10**6)
    assert [(len(batch), mark) for batch, mark in made] == [
        (7, "page 0"), (7, "page 1"), (7, "page 2"), (4, "end")]


def test_a_profile_over_the_byte_limit_goes_alone() -> None:
    made = cut(profiles([10, 5_000, 10]), [3], max_profiles=10, max_bytes=1_000)
    assert [[p.customer_id for p in batch] for batch, _ in made] == [["0"], ["1"], ["2"]]
