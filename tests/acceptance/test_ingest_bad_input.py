"""Bad input meets the CLI: each case gets its documented behaviour, and nothing after it
is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from klaviyo_sync.parsers import line_unique_id


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=120)


def settings(tmp_path: Path, log: Path, state: str | None = None, **log_keys: object) -> Path:
    cfg = tmp_path / "settings.toml"
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in log_keys.items())
    state = state or f"sqlite:///{tmp_path / 'state' / 'state.db'}"
    cfg.write_text(f'[log]\npath = "{log}"\n{extra}[state]\nurl = "{state}"\n')
    return cfg


def good(n: int) -> bytes:
    return f"2024-03-01 08:00:{n:02d} started.signup customer={n} email=g{n}@example.com\n" \
        .encode()


BAD = {
    "malformed": b'2024-03-01 09:00:00 cancelled customer=7 reason="never closed\n',
    "impossible date": b"2024-02-30 09:00:00 failed.payment customer=7 amount=5.00\n",
    "before 1990": b"1989-06-30 12:00:00 referral.credit customer=7 amount=5.00\n",
    "five megabytes": b"2024-03-01 09:00:00 contact.form message=" + b"z" * 5_000_000 + b"\n",
}


def test_bad_lines_are_rejected_with_reasons_and_good_lines_around_them_all_arrive(
        tmp_path: Path) -> None:
    log = tmp_path / "system.log"
    parts, wanted = [], []
    for n, bad in enumerate(BAD.values()):
        parts += [good(n), bad]
        wanted.append(good(n))
    crlf = good(10).replace(b"\n", b"\r\n")
    invalid_utf8 = b"2024-03-01 08:00:11 contact.form email=u@example.com name=Andr\xe9\n"
    unknown = b"2024-03-01 08:00:12 login.failed customer=3 ip=10.0.0.1\n"
    dst_gap = b"2024-03-10 02:30:00 shipping.email customer=4 order=o4 carrier=UPS\n"
    parts += [crlf, invalid_utf8, unknown, dst_gap, good(13)]
    wanted += [crlf, dst_gap, good(13)]
    log.write_bytes(b"".join(parts))
    cfg = settings(tmp_path, log, timezone="America/New_York", read_chunk_bytes=65536)

    result = run(cfg, "parse", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["lines_read"] == len(parts) and report["skipped"] == 1
    assert report["dst_gaps"] == 1

    queued = [json.loads(line) for line in run(cfg, "queue", "list", "--json",
                                               "--limit", "100").stdout.splitlines()]
    ids = {e["unique_id"] for e in queued}
    assert {line_unique_id(line) for line in wanted} <= ids
    # Invalid UTF-8 neither stops anything nor vanishes: it is queued or rejected.
    rejects = [json.loads(line) for line in run(cfg, "rejects", "list", "--json")
               .stdout.splitlines()]
    utf8_rejected = any(r["raw"].startswith("2024-03-01 08:00:11") for r in rejects)
    assert (line_unique_id(invalid_utf8) in ids) != utf8_rejected
    assert report["rejected"] == len(rejects) == len(BAD) + utf8_rejected
    assert report["events_enqueued"] == len(ids) == len(wanted) + (not utf8_rejected)

    by_type = {r["event_type"]: r for r in rejects}
    assert "max_line_bytes" in by_type["contact.form"]["reason"]
    assert by_type["contact.form"]["truncated"] is True
    assert "1990" in by_type["referral.credit"]["reason"]
    assert by_type["failed.payment"]["reason"] and by_type["cancelled"]["reason"]
    shown = run(cfg, "rejects", "show", str(by_type["contact.form"]["id"]))
    assert json.loads(shown.stdout)["length"] == len(BAD["five megabytes"]) - 1

    # The documented DST rule: a time in the spring-forward gap is read with the offset
    # in force before the jump (EST): 02:30 -> 07:30 UTC.
    gap_event = next(e for e in queued if e["unique_id"] == line_unique_id(dst_gap))
    assert gap_event["time"] == "2024-03-10T07:30:00+00:00"

    again = json.loads(run(cfg, "replay", "--json").stdout)
    assert again["events_enqueued"] == 0 and again["rejected"] == report["rejected"]
    assert len(run(cfg, "rejects", "list", "--json").stdout.splitlines()) == len(rejects)


def test_a_missing_log_file_exits_4_naming_the_path(tmp_path: Path) -> None:
    log = tmp_path / "nowhere" / "system.log"
    cfg = settings(tmp_path, log)
    result = run(cfg, "parse")
    assert result.returncode == 4
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"klaviyo-sync: error: log file not found: {log} (log.path in {cfg})"
    assert "Traceback" not in result.stderr
    replay = run(cfg, "replay")
    assert replay.returncode == 4 and str(log) in replay.stderr
    # Once it appears, the next pass reads it.
    log.parent.mkdir()
    log.write_bytes(good(1))
    assert "1 events queued" in run(cfg, "parse").stdout


def test_an_unwritable_state_directory_exits_3_with_a_clear_message(
        tmp_path: Path, readonly_dir: Path) -> None:
    log = tmp_path / "system.log"
    log.write_bytes(good(1))
    cfg = settings(tmp_path, log, state=f"sqlite:///{readonly_dir / 'state.db'}")
    result = run(cfg, "parse")
    assert result.returncode == 3, result.stderr
    # The last line is the error; before it, the log line naming the settings file.
    assert result.stderr.strip().splitlines()[-1] == (
        f"klaviyo-sync: error: state.url: {readonly_dir} is not writable by this user")


def test_a_state_directory_that_cannot_be_created_exits_3(tmp_path: Path) -> None:
    log = tmp_path / "system.log"
    log.write_bytes(good(1))
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("")
    cfg = settings(tmp_path, log, state=f"sqlite:///{blocker / 'state.db'}")
    result = run(cfg, "parse")
    assert result.returncode == 3
    assert f"cannot create the state directory {blocker}" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_lines_during_a_replay_do_not_overwrite_the_progress_bar(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    log = tmp_path / "system.log"
    log.write_bytes(b"".join(
        good(i) + f'2024-03-01 08:00:02 cancelled customer="unterminated {i}\n'.encode()
        for i in range(4)))
    cfg = settings(tmp_path, log)
    cfg.write_text(cfg.read_text() + "[logging]\nlevel = \"warning\"\nformat = \"console\"\n")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "klaviyo_sync", "--config", str(cfg),
                             "replay", "--progress"], stdout=subprocess.DEVNULL,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(60) == 0
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    warned = [line for line in text.split("\n") if "line_rejected" in line]
    assert warned, text
    for line in warned:
        assert "replaying" not in line.rsplit("\r", 1)[-1], repr(line)
    assert "replaying" in text


def test_a_fifo_or_a_directory_as_the_log_is_one_line_and_exit_4(tmp_path: Path) -> None:
    import os

    fifo, folder = tmp_path / "fifo.log", tmp_path / "folder.log"
    os.mkfifo(fifo)
    folder.mkdir()
    for log, what in ((fifo, "a FIFO"), (folder, "a directory")):
        cfg = settings(tmp_path, log)
        for command in ("parse", "replay"):
            result = run(cfg, command)  # run() times out (and fails) if it blocks
            assert result.returncode == 4, (command, result.stderr)
            # The one error line; the structured log line naming the settings file that
            # every command starts with is not an error.
            lines = [line for line in result.stderr.strip().splitlines()
                     if '"event": "settings_file"' not in line]
            assert len(lines) == 1 and what in lines[0] and str(log) in lines[0], lines
            assert "Traceback" not in result.stderr
