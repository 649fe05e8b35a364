"""The profiles pass over a real state database, the stand-in and the real client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync import config
from klaviyo_sync.app import App
from klaviyo_sync.exceptions import ConfigError, RetryableSendError
from klaviyo_sync.profile_sync import ProfileSync
from klaviyo_sync.state.profiles import JobState, ProfileStore
from klaviyo_sync.state.schema import profile_jobs
from tests.acceptance.profiles_shop import API_KEY, Customers
from tests.klaviyo_standin import KlaviyoStandIn


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Customers]:
    customers = Customers(f"sqlite:///{tmp_path / 'business.db'}")
    customers.generate(30)
    yield customers
    customers.close()


def settings_for(base_url: str, shop: Customers, tmp_path: Path, **profiles: object
                 ) -> config.Settings:
    return config.from_mapping({
        "business": {"url": shop.url},
        "klaviyo": {"base_url": base_url, "respect_published_limits": False},
        "sender": {"outbox": str(tmp_path / "outbox.jsonl")},
        "profiles": {"readback_poll_s": 0.01, **profiles},
    })


def make_sync(settings: config.Settings, state_engine: sa.Engine, dry_run: bool = False
              ) -> tuple[ProfileSync, list]:
    app = App(settings, state_engine=state_engine, worker_id="test")
    sync = app.profile_sync(dry_run=dry_run)
    assert sync is not None
    return sync, [app.close]


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)


def test_job_not_complete_in_time_is_read_back_by_the_next_pass(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None) -> None:
    klaviyo.profile_jobs.polls_to_complete = 10_000
    settings = settings_for(klaviyo.base_url, shop, tmp_path, readback_timeout_s=0.05)
    sync, closers = make_sync(settings, state_engine)
    first = sync.run_once(all_customers=True)
    assert first.sent == 30 and first.imported == 0 and first.unread_jobs == 1
    assert ProfileStore(state_engine).counts() == {"unread_jobs": 1}
    klaviyo.profile_jobs.polls_to_complete = 1
    second = sync.run_once()
    assert second.jobs_resumed == 1 and second.imported == 30 and second.sent == 0
    assert ProfileStore(state_engine).counts() == {"imported": 30, "unread_jobs": 0}
    for close in closers:
        close()


def test_a_request_left_posting_is_sent_again(klaviyo: KlaviyoStandIn,
                                              state_engine: sa.Engine, shop: Customers,
                                              tmp_path: Path, api_key: None) -> None:
    settings = settings_for(klaviyo.base_url, shop, tmp_path)
    sync, closers = make_sync(settings, state_engine)
    assert sync.run_once(all_customers=True).imported == 30
    # As if a pass died between writing its request row and Klaviyo's answer.
    shop.update(4, box="Veggie Box")
    ProfileStore(state_engine).open_job([("4", "stale-digest")], datetime(2026, 12, 1))
    report = sync.run_once()
    assert report.jobs_resumed == 1 and report.imported == 1
    assert klaviyo.profiles["customer4@example.com"]["properties"]["Box"] == "Veggie Box"
    with state_engine.connect() as conn:
        states = [s for (s,) in conn.execute(sa.select(profile_jobs.c.status))]
    assert JobState.POSTING not in states and JobState.ABANDONED in states
    for close in closers:
        close()


def test_dry_run_writes_the_bodies_and_records_nothing(state_engine: sa.Engine,
                                                       shop: Customers, tmp_path: Path) -> None:
    settings = settings_for("https://a.klaviyo.com", shop, tmp_path, batch_max_profiles=20)
    sync, closers = make_sync(settings, state_engine, dry_run=True)
    report = sync.run_once(all_customers=True)
    assert report.sent == 30 and report.requests == 2 and report.dry_run
    lines = [json.loads(line) for line in (tmp_path / "outbox.jsonl").read_text().splitlines()]
    assert [r["items"] for r in lines] == [20, 10]
    assert {r["path"] for r in lines} == {"/api/profile-bulk-import-jobs"}
    assert ProfileStore(state_engine).counts() == {"unread_jobs": 0}
    # Nothing recorded: the next dry run would send the same again.
    assert sync.run_once().sent == 30
    for close in closers:
        close()


def test_extra_columns_and_renamed_properties_reach_the_profile(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, tmp_path: Path,
        api_key: None) -> None:
    url = f"sqlite:///{tmp_path / 'extra.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, "
            "last_name TEXT, status TEXT, schedule TEXT, box TEXT, signup_date DATE, "
            "email_opt_in BOOLEAN, updated_at DATETIME, referral_code TEXT)"))
        conn.execute(sa.text(
            "INSERT INTO customers VALUES (1, 'a@example.com', 'Ann', NULL, 'Active', "
            "'Weekly', 'Organic Box', '2025-02-03', 1, '2026-11-01 08:00:00', 'ANN10')"))
    engine.dispose()
    settings = config.from_mapping({
        "business": {"url": url},
        "klaviyo": {"base_url": klaviyo.base_url, "respect_published_limits": False,
                    "profile_properties": {"box": "BoxType"}},
        "profiles": {"readback_poll_s": 0.01,
                     "extra_properties": {"referral_code": "ReferralCode"}},
    })
    sync, closers = make_sync(settings, state_engine)
    assert sync.run_once(all_customers=True).imported == 1
    assert klaviyo.profiles["a@example.com"]["properties"] == {
        "Schedule": "Weekly", "Status": "Active", "BoxType": "Organic Box",
        "SignUpDate": "2025-02-03", "ReferralCode": "ANN10"}
    for close in closers:
        close()


def test_the_app_builds_the_pass_only_when_it_can_run(state_engine: sa.Engine,
                                                      shop: Customers, tmp_path: Path,
                                                      api_key: None) -> None:
    without = config.from_mapping({})
    with App(without, state_engine=state_engine) as app:
        assert app.profile_sync() is None
    off = settings_for("https://a.klaviyo.com", shop, tmp_path, enabled=False)
    with App(off, state_engine=state_engine) as app:
        assert app.profile_sync() is None
    on = settings_for("https://a.klaviyo.com", shop, tmp_path)
    with App(on, state_engine=state_engine) as app:
        assert app.profile_sync() is app.profile_sync()
        assert app.profile_sync(dry_run=True) is not app.profile_sync()


def test_repeated_property_names_are_a_config_error(state_engine: sa.Engine,
                                                    shop: Customers, tmp_path: Path,
                                                    api_key: None) -> None:
    settings = config.from_mapping({
        "business": {"url": shop.url},
        "klaviyo": {"profile_properties": {"box": "Status"}},
    })
    with App(settings, state_engine=state_engine) as app, \
            pytest.raises(ConfigError, match="repeat"):
        app.profile_sync()


def test_a_failed_read_back_during_the_pass_is_asked_again_at_its_end(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The posting thread reads the oldest job back between POSTs; a transient failure
    there leaves the job to the read-back at the end rather than stopping the pass."""
    settings = settings_for(klaviyo.base_url, shop, tmp_path, batch_max_profiles=5,
                            page_size=5)
    sync, closers = make_sync(settings, state_engine)
    real, calls = sync.api.get_job, []

    def flaky(job_id: str) -> object:
        calls.append(job_id)
        if len(calls) == 1:
            raise RetryableSendError("503 from Klaviyo, retries used up")
        return real(job_id)

    monkeypatch.setattr(sync.api, "get_job", flaky)
    report = sync.run_once(all_customers=True)
    assert report.jobs == 6 and report.imported == 30 and report.unread_jobs == 0
    assert calls.count(calls[0]) >= 2  # the failed one was asked again
    assert ProfileStore(state_engine).counts() == {"imported": 30, "unread_jobs": 0}
    for close in closers:
        close()


def test_each_job_id_is_written_before_its_outcome(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three threads write during a pass (the request row, the job id after the 202, the
    outcomes after the read-back); the writer keeps them in that order for each job, so
    a job read back at once is never marked sent again after it was done."""
    klaviyo.profile_jobs.polls_to_complete = 1
    settings = settings_for(klaviyo.base_url, shop, tmp_path, batch_max_profiles=3,
                            page_size=3)
    sync, closers = make_sync(settings, state_engine)
    order: list[tuple[str, int]] = []
    for name in ("open_job", "job_sent", "finish_job"):
        real = getattr(sync.store, name)

        def traced(*args: object, _real: object = real, _name: str = name) -> object:
            result = _real(*args)  # type: ignore[operator]
            row = result if _name == "open_job" else (
                args[0] if _name == "job_sent" else args[0].id)  # type: ignore[attr-defined]
            order.append((_name, int(row)))  # type: ignore[call-overload]
            return result

        monkeypatch.setattr(sync.store, name, traced)
    report = sync.run_once(all_customers=True)
    assert report.jobs == 10 and report.imported == 30 and report.unread_jobs == 0
    for row in {row for _name, row in order}:
        assert [n for n, r in order if r == row] == ["open_job", "job_sent", "finish_job"]
    with state_engine.connect() as conn:
        assert {s for (s,) in conn.execute(sa.select(profile_jobs.c.status))} == {"done"}
    for close in closers:
        close()


def test_a_read_back_that_fails_for_good_fails_the_pass_and_the_next_one_resumes(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure that is not transient in the read-back thread (here a 401) ends the
    pass with that error (the pass checks after each page); what was sent is read back by
    the next pass, and every customer is imported once."""
    from klaviyo_sync.exceptions import AuthError

    settings = settings_for(klaviyo.base_url, shop, tmp_path, batch_max_profiles=5,
                            page_size=5)
    sync, closers = make_sync(settings, state_engine)
    real = sync.api.get_job

    def refused(job_id: str) -> object:
        raise AuthError("401 from Klaviyo: the key was revoked")

    monkeypatch.setattr(sync.api, "get_job", refused)
    with pytest.raises(AuthError, match="revoked"):
        sync.run_once(all_customers=True)
    assert ProfileStore(state_engine).counts().get("imported", 0) == 0
    monkeypatch.setattr(sync.api, "get_job", real)
    report = sync.run_once()
    assert report.jobs_resumed >= 1 and report.unread_jobs == 0
    assert ProfileStore(state_engine).counts() == {"imported": 30, "unread_jobs": 0}
    assert len(klaviyo.profiles) == 30
    for close in closers:
        close()


def test_a_job_id_that_could_not_be_written_fails_the_pass_and_is_posted_again(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job id is written after the 202 without the POST thread waiting for it; if
    that write fails, the pass still fails with it, and the request, left ``posting``,
    is posted again by the next pass (an import is an upsert)."""
    settings = settings_for(klaviyo.base_url, shop, tmp_path, batch_max_profiles=10,
                            page_size=10)
    sync, closers = make_sync(settings, state_engine)
    real = sync.store.job_sent
    calls: list[int] = []

    def flaky(row_id: int, job_id: str, now: datetime) -> None:
        calls.append(row_id)
        if len(calls) == 2:
            raise sa.exc.OperationalError("UPDATE profile_jobs", {}, Exception("disk I/O error"))
        real(row_id, job_id, now)

    monkeypatch.setattr(sync.store, "job_sent", flaky)
    with pytest.raises(sa.exc.OperationalError, match="disk I/O error"):
        sync.run_once(all_customers=True)
    monkeypatch.setattr(sync.store, "job_sent", real)
    report = sync.run_once()
    assert report.jobs_resumed >= 1 and report.unread_jobs == 0
    assert ProfileStore(state_engine).counts() == {"imported": 30, "unread_jobs": 0}
    assert len(klaviyo.profiles) == 30
    for close in closers:
        close()


@pytest.fixture
def page_processes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The ``since`` of every page process the passes start."""
    from klaviyo_sync.business.profile_pages import PageProcess

    started: list[object] = []

    class Counted(PageProcess):
        def __iter__(self):  # type: ignore[no-untyped-def]
            started.append(self.spec.since)
            yield from super().__iter__()

    monkeypatch.setattr("klaviyo_sync.profile_sync.PageProcess", Counted)
    return started


def test_the_page_process_and_the_pass_itself_send_the_same_bodies(
        state_url: str, shop: Customers, tmp_path: Path, page_processes: list[object]
) -> None:
    """A pass reading in a process of its own ("always", "full" on --all) and one reading
    in its own thread ("never") write the same import bodies, byte for byte, for a full
    pass and for one that reads only what changed."""
    from klaviyo_sync.state.db import open_state

    shop.update(7, box="Veggie Box", updated_at=datetime(2026, 6, 1))
    outboxes = {}
    for mode in ("never", "always"):
        folder = tmp_path / mode
        folder.mkdir()
        settings = settings_for("https://a.klaviyo.com", shop, folder, batch_max_profiles=20,
                                reader_process=mode, page_size=7)
        state = open_state(state_url if state_url.startswith("postgresql")
                           else f"sqlite:///{folder / 'state.db'}")
        sync, closers = make_sync(settings, state, dry_run=True)
        full = sync.run_once(all_customers=True)
        assert (full.customers_read, full.sent, full.requests) == (30, 30, 2)
        assert page_processes == ([] if mode == "never" else [None])
        page_processes.clear()
        closers.append(state.dispose)
        for close in closers:
            close()
        outboxes[mode] = (folder / "outbox.jsonl").read_text()
    assert outboxes["never"] == outboxes["always"]
    assert outboxes["never"].count("/api/profile-bulk-import-jobs") == 2


def test_an_incremental_pass_reads_in_a_process_of_its_own_when_told(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None, page_processes: list[object]) -> None:
    settings = settings_for(klaviyo.base_url, shop, tmp_path, reader_process="always",
                            overlap_s=0, page_size=4)
    sync, closers = make_sync(settings, state_engine)
    assert sync.run_once(all_customers=True).imported == 30
    shop.update(29, box="Veggie Box", updated_at=datetime(2026, 12, 1))
    report = sync.run_once()
    # 29, and 30 again (at the watermark itself): unchanged, not sent.
    assert (report.customers_read, report.unchanged, report.sent, report.imported) == (
        2, 1, 1, 1)
    assert len(page_processes) == 2 and page_processes[0] is None
    assert page_processes[1] is not None
    assert klaviyo.profiles["customer29@example.com"]["properties"]["Box"] == "Veggie Box"
    for close in closers:
        close()


def test_by_default_only_a_full_pass_reads_in_a_process_of_its_own(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None, page_processes: list[object]) -> None:
    sync, closers = make_sync(settings_for(klaviyo.base_url, shop, tmp_path), state_engine)
    assert sync.run_once().imported == 30  # the first pass: no watermark yet, every customer
    shop.update(3, box="Veggie Box", updated_at=datetime(2026, 12, 1))
    assert sync.run_once().imported == 1
    assert sync.run_once(all_customers=True).sent == 0  # every customer read, none changed
    assert page_processes == [None, None]
    for close in closers:
        close()


def test_a_pass_whose_page_process_cannot_start_reads_the_customers_itself(
        klaviyo: KlaviyoStandIn, state_engine: sa.Engine, shop: Customers, tmp_path: Path,
        api_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
    sync, closers = make_sync(settings_for(klaviyo.base_url, shop, tmp_path), state_engine)
    report = sync.run_once(all_customers=True)
    assert (report.customers_read, report.imported) == (30, 30)
    assert len(klaviyo.profiles) == 30
    for close in closers:
        close()
