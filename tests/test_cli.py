from __future__ import annotations

import subprocess
import sys


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "collab.cli", "--help"], capture_output=True, text=True, check=True
    )
    for cmd in ("split", "inspect", "cloud", "edge", "coordinator", "demo"):
        assert cmd in out.stdout


def test_unknown_command_fails() -> None:
    r = subprocess.run([sys.executable, "-m", "collab.cli", "nope"], capture_output=True, text=True)
    assert r.returncode != 0


def test_global_log_level_before_command() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "collab.cli", "--log-level", "WARNING", "inspect", "--help"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "collab inspect" in r.stdout
