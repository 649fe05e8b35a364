"""The console script tunes the collector before any command (in a child: it is global)."""

from __future__ import annotations

import subprocess
import sys

from klaviyo_sync.gctune import YOUNG_THRESHOLD

PROBE = """
import gc, sys
from unittest import mock
from klaviyo_sync import cli
default = gc.get_threshold()
with mock.patch.object(cli, "cli"), mock.patch.object(sys, "argv", ["klaviyo-sync"]):
    try:
        cli.main()
    except SystemExit as stop:
        assert stop.code == 0, stop.code
print(default[0], gc.get_threshold()[0], gc.get_freeze_count() > 1000)
"""


def test_console_script_freezes_start_up_and_collects_the_young_less_often() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["700", str(YOUNG_THRESHOLD), "True"]
