"""Settings: the shipped file is valid and complete; bad settings name file and key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from klaviyo_sync import config
from klaviyo_sync.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_settings_are_valid_and_equal_the_built_in_defaults() -> None:
    loaded = config.load(ROOT / "settings.toml")
    assert dataclasses.replace(loaded, source=None) == config.Settings()


def test_shipped_settings_document_every_key() -> None:
    data = tomllib.loads((ROOT / "settings.toml").read_text())

    def keys(obj: object, prefix: str = "") -> set[str]:
        if dataclasses.is_dataclass(obj):
            out: set[str] = set()
            for f in dataclasses.fields(obj):
                if f.name != "source":
                    out |= keys(getattr(obj, f.name), f"{prefix}{f.name}.")
            return out
        return {prefix.rstrip(".")}

    def toml_keys(d: dict, prefix: str = "") -> set[str]:
        out: set[str] = set()
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("events", "unique_ids", "extra_properties"):
                out |= toml_keys(v, f"{prefix}{k}.")
            else:
                out.add(f"{prefix}{k}")
        return out

    assert toml_keys(data) == keys(config.Settings())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("[log]\nformat = 'xml'\n", "log.format: must be one of kv, jsonl, regex; got 'xml'"),
    ("[log]\nmax_line_bytes = 'big'\n", "log.max_line_bytes: expected integer, got string"),
    ("[log]\ncolour = 1\n", "[log] unknown key 'colour'"),
    ("[nope]\n", "unknown key 'nope'"),
    ("[log]\ntimezone = 'Mars/Olympus'\n", "log.timezone: unknown IANA time zone"),
    ("[log]\nformat = 'regex'\npattern = '(?P<time>x)'\n", "missing event"),
    ("[sender]\nbatch_max_events = 5000\n", "sender.batch_max_events: must be between 1 and 1000"),
    ("[sender]\nsent_retention = 'forever'\n", "sender.sent_retention: not a duration"),
    ("[catalog]\nbatch_size = 500\n", "catalog.batch_size: must be between 1 and 100"),
    ("[catalog]\nurl_template = 'https://x/item'\n", "catalog.url_template: must contain {id}"),
    ("[catalog.columns]\nproduct_url = ''\n", "catalog.url_template: required when"),
    ("[catalog.columns]\nproduct_sku = ''\n", "catalog.columns.product_sku: not a plain SQL"),
    ("[schedule]\ncatalog_cron = 'daily'\n", "schedule.catalog_cron: expected 5 cron fields"),
    ("[state]\nurl = 'mysql://x'\n", "state.url: must be a sqlite:/// or postgresql:// URL"),
    ("[orders]\nplaced_statuses = ['x']\ncancelled_statuses = ['x']\n", "also in orders.placed"),
    ("[log\n", "not valid TOML"),
])
def test_bad_settings_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings file not found"):
        config.load(tmp_path / "absent.toml")


def test_int_is_accepted_where_a_number_is_expected(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, "[schedule]\ntail_s = 5\n"))
    assert settings.schedule.tail_s == 5.0


def test_api_key_comes_from_env_or_file_never_the_toml(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLAVIYO_API_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert config.Settings().api_key() is None
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_test_env")
    assert config.Settings().api_key() == "pk_test_env"
    monkeypatch.delenv("KLAVIYO_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text("pk_test_file\n")
    settings = config.load(write(tmp_path, f"[klaviyo]\napi_key_file = '{key_file}'\n"))
    assert settings.api_key() == "pk_test_file"


def test_redacted_hides_url_passwords() -> None:
    settings = config.Settings().replace(
        state=config.StateSettings(url="postgresql://sync:s3cret@db/state"))
    assert settings.redacted()["state"]["url"] == "postgresql://sync:***@db/state"


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000), ("12h", 43200), ("90", 90),
                                               ("250ms", 0.25), ("15m", 900)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert config.parse_duration_s(text) == seconds


def test_a_url_that_does_not_parse_is_masked_whole() -> None:
    shown = config.from_mapping(
        {"business": {"url": "mysql+pymysql://root:p@ss:w/rd@127.0.0.1:3306/test"}}
    ).redacted()
    assert "ss:w" not in shown["business"]["url"] and "rd@" not in shown["business"]["url"]
    assert shown["business"]["url"].startswith("mysql+pymysql://")


@pytest.mark.parametrize(("section", "key", "given", "expected"), [
    ("sender", "lease_s", "10m", 600.0),
    ("sender", "lease_s", 45, 45.0),
    ("schedule", "tail_s", "500ms", 0.5),
    ("daemon", "hung_job_s", "1h", 3600.0),
    ("status", "degraded_backlog_age_s", "15m", 900.0),
    ("log", "backfill_after_hours", "90m", 1.5),
    ("sender", "sent_retention", 86400, "86400"),
    ("sender", "audit_retention", "90d", "90d"),
])
def test_every_duration_takes_a_number_of_seconds_or_a_unit(
        section: str, key: str, given: object, expected: object) -> None:
    settings = config.from_mapping({section: {key: given}})
    assert getattr(getattr(settings, section), key) == expected


def test_a_duration_that_does_not_parse_names_its_key() -> None:
    with pytest.raises(ConfigError, match=r"sender\.lease_s: not a duration: 'soon'"):
        config.from_mapping({"sender": {"lease_s": "soon"}})
