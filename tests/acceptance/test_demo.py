"""`klaviyo-sync demo`, the README's first command, run as a user would."""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from klaviyo_sync.demo import DEMO_CUSTOMERS

SYNCED = {"cancelled", "contact.form", "failed.payment", "referral.credit", "shipping.email",
          "started.signup"}


def log_lines(folder: Path) -> list[str]:
    with gzip.open(folder / "system.log.2.gz", "rt") as archive:
        lines = archive.read().splitlines()
    for name in ("system.log.1", "system.log"):
        lines += (folder / name).read_text().splitlines()
    return lines


def test_demo_ingests_every_event_line_and_dry_runs_them_all(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "klaviyo_sync", "demo", "--dir", str(folder)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Missed signups:" in result.stdout

    synced = [line for line in log_lines(folder) if line.split(" ")[2] in SYNCED]
    malformed = [line for line in synced if line.endswith('"unterminated')]
    assert malformed, "the sample log should include malformed lines"

    db = sqlite3.connect(folder / "state.db")
    log_events = db.execute("SELECT count(*) FROM events WHERE source = 'log'").fetchone()[0]
    states = dict(db.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall())
    rejects = db.execute("SELECT count(*) FROM rejects").fetchone()[0]
    uids = {row[0] for row in db.execute("SELECT unique_id FROM events")}
    db.close()
    assert log_events == len(synced) - len(malformed)
    assert rejects == len(malformed)
    assert states == {"sent": len(uids)}

    # The dry-run outbox holds the exact bodies: every queued event is in one of them.
    bodies = [json.loads(line) for line in (folder / "outbox.jsonl").read_text().splitlines()]
    sent_uids = set()
    for request in bodies:
        data = request["body"]["data"]
        if data["type"] == "event-bulk-create-job":
            for group in data["attributes"]["events-bulk-create"]["data"]:
                sent_uids |= {e["attributes"]["unique_id"]
                              for e in group["attributes"]["events"]["data"]}
        elif data["type"] == "event":
            sent_uids.add(data["attributes"]["unique_id"])
    assert sent_uids == uids
    # The profiles pass's import jobs are there too: every sample customer, once.
    imported = [p["attributes"]["external_id"] for request in bodies
                if request["path"] == "/api/profile-bulk-import-jobs"
                for p in request["body"]["data"]["attributes"]["profiles"]["data"]]
    assert sorted(imported, key=int) == [str(n) for n in range(1, DEMO_CUSTOMERS + 1)]

    # The consent pass subscribed the opted-in sample customers: historical and live jobs.
    jobs = [r["body"]["data"]["attributes"] for r in bodies
            if r["path"] == "/api/profile-subscription-bulk-create-jobs"]
    assert sorted(bool(j.get("historical_import")) for j in jobs) == [False, True]
    assert all(j["custom_source"] == "klaviyo-sync" and j["profiles"]["data"] for j in jobs)
    assert "Consent pass:" in result.stdout

    # The catalog went out too, and the products in order events are the catalog's.
    items = [resource for request in bodies
             if request["path"] == "/api/catalog-item-bulk-create-jobs"
             for resource in request["body"]["data"]["attributes"]["items"]["data"]]
    assert len(items) == 200 and items[0]["attributes"]["external_id"] == "1"
    assert "Catalog pass: 5 categories, 200 items" in result.stdout
    linked = [e["attributes"]["properties"] for request in bodies
              if request["body"]["data"]["type"] == "event-bulk-create-job"
              for group in request["body"]["data"]["attributes"]["events-bulk-create"]["data"]
              for e in group["attributes"]["events"]["data"]
              if e["attributes"]["metric"]["data"]["attributes"]["name"] == "Ordered Product"]
    assert linked and all(p["CatalogItemID"] == f"$custom:::$default:::{p['ProductID']}"
                          and p["ProductURL"].endswith(f"/item/{p['ProductID']}")
                          for p in linked)


def test_demo_folder_then_works_with_every_command(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    first = subprocess.run([sys.executable, "-m", "klaviyo_sync", "demo", "--dir", str(folder)],
                           check=True, capture_output=True, text=True, timeout=120)
    cfg = str(folder / "settings.toml")
    status = subprocess.run([sys.executable, "-m", "klaviyo_sync", "--config", cfg, "status",
                             "--json"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["health"] == "healthy"
    # Running the demo again starts from scratch and gives the same result.
    again = subprocess.run([sys.executable, "-m", "klaviyo_sync", "demo", "--dir", str(folder)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_demo_refuses_a_folder_it_did_not_make_unless_forced(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "settings.toml").write_text("# my own settings\n")
    (folder / "state.db").write_bytes(b"precious")

    def demo(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "klaviyo_sync", "demo", "--dir",
                               str(folder), *extra], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    refused = demo()
    assert refused.returncode == 2, refused.stderr
    assert "--force" in refused.stderr and "did not make" in refused.stderr
    assert (folder / "settings.toml").read_text() == "# my own settings\n"
    assert (folder / "state.db").read_bytes() == b"precious"
    forced = demo("--force")
    assert forced.returncode == 0, forced.stderr
    assert "Written by `klaviyo-sync demo`" in (folder / "settings.toml").read_text()
    again = demo()  # a folder the demo made is its own to rebuild
    assert again.returncode == 0, again.stderr
