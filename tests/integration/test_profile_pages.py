"""The profiles pass's pages read and built in a process of their own (profile_pages.py):
the very pages the pass builds itself, on every business database, and its ends told."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from klaviyo_sync.business.customers import SqlCustomerReader
from klaviyo_sync.business.db import open_business
from klaviyo_sync.business.profile_pages import Page, PageProcess, PageSpec, read_pages
from klaviyo_sync.business.profiles import ProfileBuilder
from klaviyo_sync.config import BusinessSettings, ProfileProperties
from klaviyo_sync.exceptions import BusinessDataError
from tests.acceptance.profiles_shop import Customers

EXTRA = {"referral_code": "ReferralCode"}


def make_shop(url: str, count: int) -> Customers:
    """Customers 1..count with an extra column, filled for the first half."""
    customers = Customers(url)
    customers.generate(count)
    with customers.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE customers ADD COLUMN referral_code VARCHAR(32)"))
        conn.execute(sa.text("UPDATE customers SET referral_code = 'SPRING' WHERE id <= :n"),
                     {"n": count // 2})
    return customers


@pytest.fixture
def shop(business_url: str) -> Iterator[Customers]:
    customers = make_shop(business_url, 120)
    yield customers
    customers.close()


def spec_for(url: str, page_size: int = 50, **fields: object) -> PageSpec:
    return PageSpec(BusinessSettings(url=url), ProfileProperties(), dict(EXTRA),
                    page_size=page_size, **fields)  # type: ignore[arg-type]


def built_here(url: str, page_size: int = 50, since: object = None,
               with_keys: bool = False) -> list[Page]:
    engine = open_business(url)
    try:
        reader = SqlCustomerReader(engine, BusinessSettings(url=url), tuple(EXTRA))
        builder = ProfileBuilder(ProfileProperties(), EXTRA, reader.extra_columns)
        return list(read_pages(reader, builder, since, page_size, with_keys))
    finally:
        engine.dispose()


def test_a_page_process_builds_the_pages_the_pass_would_build_itself(shop: Customers) -> None:
    pages = list(PageProcess(spec_for(shop.url)))
    assert pages == built_here(shop.url)
    assert [len(p.ids) for p in pages] == [50, 50, 20]
    assert sorted(int(i) for p in pages for i in p.ids) == list(range(1, 121))
    assert all(p.emails is None and p.statuses is None for p in pages)
    profiles = pages[0].profiles()
    assert profiles[0].customer_id == pages[0].ids[0]
    assert profiles[0].item == pages[0].items[0] and b'"ReferralCode"' in profiles[0].item


def test_a_page_process_keeps_emails_and_statuses_when_asked(shop: Customers) -> None:
    pages = list(PageProcess(spec_for(shop.url, with_keys=True)))
    assert pages == built_here(shop.url, with_keys=True)
    first = pages[0]
    assert first.emails is not None and first.statuses is not None
    assert len(first.emails) == len(first.statuses) == len(first.ids)
    assert first.emails[0] == f"customer{first.ids[0]}@example.com"


def test_a_page_process_reads_from_where_it_is_told(shop: Customers) -> None:
    everything = built_here(shop.url)
    since = everything[1].last[0]  # the raw updated_at of the 100th customer
    pages = list(PageProcess(spec_for(shop.url, since=since)))
    assert pages == built_here(shop.url, since=since)
    assert 0 < sum(len(p.ids) for p in pages) < 120


def test_leaving_early_ends_the_page_process(tmp_path: Path) -> None:
    # More pages than the pipe holds: the process waits for us to read.
    shop = make_shop(f"sqlite:///{tmp_path / 'business.db'}", 40_000)
    try:
        source = PageProcess(spec_for(shop.url, page_size=5000))
        pages = iter(source)
        first = next(pages)
        assert len(first.ids) == 5000
        assert source.process is not None and source.process.poll() is None
        pages.close()  # type: ignore[attr-defined]
        assert source.process.returncode is not None
    finally:
        shop.close()


def test_a_page_process_that_dies_ends_the_pages_with_an_error(tmp_path: Path) -> None:
    shop = make_shop(f"sqlite:///{tmp_path / 'business.db'}", 40_000)
    try:
        source = PageProcess(spec_for(shop.url, page_size=5000))
        pages = iter(source)
        next(pages)
        assert source.process is not None
        source.process.send_signal(signal.SIGKILL)
        with pytest.raises(BusinessDataError, match=r"ended unexpectedly \(exit code -9\)"):
            list(pages)
    finally:
        shop.close()


def test_a_stop_signal_to_the_process_group_leaves_the_ending_to_the_pass(
        tmp_path: Path) -> None:
    # systemd's stop and a terminal's Ctrl-C reach the page process too: the pass, which
    # gets them as well, decides whether to go on (here it does) or to close the pipe.
    shop = make_shop(f"sqlite:///{tmp_path / 'business.db'}", 40_000)
    try:
        source = PageProcess(spec_for(shop.url, page_size=5000))
        pages = iter(source)
        first = next(pages)
        assert source.process is not None
        source.process.send_signal(signal.SIGTERM)
        source.process.send_signal(signal.SIGINT)
        rest = list(pages)
        assert len(first.ids) + sum(len(p.ids) for p in rest) == 40_000
        assert source.process.returncode == 0
    finally:
        shop.close()


def test_a_page_process_that_cannot_read_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    sa.create_engine(url).connect().close()  # a database without a customers table
    with pytest.raises(BusinessDataError, match="customers"):
        list(PageProcess(spec_for(url)))


def test_a_page_process_that_cannot_open_its_database_says_why(tmp_path: Path) -> None:
    with pytest.raises(BusinessDataError):
        list(PageProcess(spec_for(f"sqlite:///{tmp_path / 'missing' / 'business.db'}")))


def pages_here(url: str, page_size: int) -> Iterator[Page]:
    """read_pages here, as the pass gives a page process its head start."""
    engine = open_business(url)
    try:
        reader = SqlCustomerReader(engine, BusinessSettings(url=url), tuple(EXTRA))
        builder = ProfileBuilder(ProfileProperties(), EXTRA, reader.extra_columns)
        yield from read_pages(reader, builder, None, page_size)
    finally:
        engine.dispose()


def slowly(pages: Iterator[Page], seconds: float = 0.05) -> Iterator[Page]:
    """``pages``, a pause before each after the first: the process gets ready meanwhile."""
    for number, page in enumerate(pages):
        if number:
            time.sleep(seconds)
        yield page


def after_it_ends(pages: Iterator[Page], source: PageProcess) -> Iterator[Page]:
    """``pages``, all but the first once ``source``'s process has ended (at most 30 s)."""
    for number, page in enumerate(pages):
        if number == 1:
            deadline = time.monotonic() + 30
            while source.process is None or source.process.poll() is None:
                assert time.monotonic() < deadline, "the process did not end"
                time.sleep(0.01)
        yield page


@pytest.fixture
def shop_600(tmp_path: Path) -> Iterator[Customers]:
    customers = make_shop(f"sqlite:///{tmp_path / 'business.db'}", 600)
    yield customers
    customers.close()


def test_pages_read_here_while_the_process_starts_are_not_read_again(
        shop_600: Customers) -> None:
    # 600 pages of one customer, each read here 50 ms after the last: the process is
    # ready within them (half a second on an idle machine; at most 30 s) and reads the rest.
    source = PageProcess(spec_for(shop_600.url, page_size=1),
                         head=slowly(pages_here(shop_600.url, 1)))
    pages = list(source)
    assert pages == built_here(shop_600.url, page_size=1)
    assert 1 <= source.head_pages < 600
    assert source.process is not None and source.process.returncode == 0


def test_a_head_that_reads_everything_leaves_the_process_nothing(shop: Customers) -> None:
    built = built_here(shop.url)
    source = PageProcess(spec_for(shop.url), head=iter(built))  # faster than any start
    assert list(source) == built
    assert source.head_pages == 3
    # Its orders ended before where to start: it ends without reading.
    assert source.process is not None and source.process.returncode == 0


def read_without_the_process(process_url: str, url: str) -> str:
    """Every page of ``url`` from a PageProcess whose process (told of ``process_url``)
    fails before it is ready, checked; the one warning's error."""
    source = PageProcess(spec_for(process_url, page_size=20))
    source.head = after_it_ends(pages_here(url, 20), source)
    with capture_logs() as logs:
        pages = list(source)
    assert pages == built_here(url, page_size=20)
    assert source.head_pages == 30
    warnings = [e for e in logs if e["event"] == "profile_pages_in_process"]
    assert len(warnings) == 1
    return str(warnings[0]["error"])


def test_a_process_that_fails_to_start_leaves_the_rest_to_the_head(
        shop_600: Customers, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # ends at once, exit code 1
    assert "exit code 1" in read_without_the_process(shop_600.url, shop_600.url)


def test_a_process_that_cannot_read_before_it_is_ready_leaves_the_rest_to_the_head(
        shop_600: Customers, tmp_path: Path) -> None:
    # The process is told of a database it cannot open; here the pages can be read.
    missing = f"sqlite:///{tmp_path / 'missing' / 'business.db'}"
    assert "business database" in read_without_the_process(missing, shop_600.url)
