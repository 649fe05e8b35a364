"""The HMAC key tombstones are hashed with: made once, whole, and the same for everyone."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from klaviyo_sync.exceptions import ConfigError
from klaviyo_sync.privacy.tombstones import KEY_META, load_key
from klaviyo_sync.state import meta


def test_a_new_key_file_is_whole_and_private(tmp_path: Path, state_engine: sa.Engine) -> None:
    path = tmp_path / "keys" / "privacy.key"
    key = load_key(str(path), state_engine)
    assert len(key) == 64 and path.read_bytes() == key + b"\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key(str(path), state_engine) == key
    assert [p.name for p in path.parent.iterdir()] == ["privacy.key"]  # no temp file left


def test_a_creation_that_fails_midway_leaves_no_key_file(
        tmp_path: Path, state_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written in place, a kill while writing left an empty key file that every later
    run refused ('holds fewer than 32 bytes'); now the file appears only whole."""
    path = tmp_path / "keys" / "privacy.key"

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", disk_full)
        with pytest.raises(ConfigError, match=r"cannot create .*No space left"):
            load_key(str(path), state_engine)
    assert not path.exists() and list(path.parent.iterdir()) == []
    assert len(load_key(str(path), state_engine)) == 64


def test_when_another_process_creates_the_key_first_its_key_is_used(
        tmp_path: Path, state_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "privacy.key"
    theirs = b"f" * 64
    real_link = os.link

    def link_after_them(source: str, target: Path) -> None:
        Path(target).write_bytes(theirs + b"\n")  # the other process got there first
        real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_them)
    assert load_key(str(path), state_engine) == theirs
    assert path.read_bytes() == theirs + b"\n"


@pytest.mark.parametrize("in_file", [True, False], ids=["key_file", "meta"])
def test_creators_at_the_same_moment_all_get_one_key(
        tmp_path: Path, state_engine: sa.Engine, in_file: bool) -> None:
    key_file = str(tmp_path / "privacy.key") if in_file else ""
    start, keys, errors = threading.Barrier(6), [], []

    def create() -> None:
        start.wait()
        try:
            keys.append(load_key(key_file, state_engine))
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(keys) == 6 and len(set(keys)) == 1
    if not in_file:
        assert meta.get(state_engine, KEY_META) == keys[0].decode()


def test_put_if_absent_keeps_the_first_value(state_engine: sa.Engine) -> None:
    assert meta.put_if_absent(state_engine, "a_name", "first") == "first"
    assert meta.put_if_absent(state_engine, "a_name", "second") == "first"
    assert meta.get(state_engine, "a_name") == "first"
