"""collab.files: a file the user named is read, or one ConfigError says which file, what
for, and why not."""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import pytest

from collab.errors import ConfigError
from collab.files import read_bytes, read_text, write_private
from collab.log import RateLimited


def test_reads_text_and_bytes(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_bytes(b"token\n")
    assert read_text(p, "token file") == "token\n"
    assert read_bytes(str(p), "token file") == b"token\n"


@pytest.mark.parametrize(("name", "reason"), [("missing", "not found"), ("", "Is a directory")])
def test_unreadable_file_names_itself_and_its_purpose(
    tmp_path: Path, name: str, reason: str
) -> None:
    p = tmp_path / name
    for read in (read_text, read_bytes):
        with pytest.raises(
            ConfigError, match=f"^cannot read trace file {re.escape(str(p))}: {reason}$"
        ):
            read(p, "trace file")


def test_text_must_be_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bin"
    p.write_bytes(b"ok\xff")
    with pytest.raises(ConfigError, match=r"cannot read config .*: not UTF-8 text"):
        read_text(p, "config")
    assert read_bytes(p, "config") == b"ok\xff"


def test_private_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private(tmp_path / "key", b"secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert (tmp_path / "key").read_bytes() == b"secret"


def test_a_planted_symlink_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    (tmp_path / "key").symlink_to(victim)
    with pytest.raises(ConfigError, match="exists"):
        write_private(tmp_path / "key", b"secret")
    (tmp_path / "dangling").symlink_to(tmp_path / "created-by-attacker")
    with pytest.raises(ConfigError):
        write_private(tmp_path / "dangling", b"secret")
    assert not (tmp_path / "created-by-attacker").exists()
    write_private(tmp_path / "key", b"secret", replace=True)  # replaces the link itself
    assert victim.read_bytes() == b"original"
    assert not (tmp_path / "key").is_symlink() and (tmp_path / "key").read_bytes() == b"secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "key", "victim"]


def test_rate_limited_log_counts_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimited(logging.getLogger("t"), interval_s=10, max_causes=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        logged = [limited.warning("bad frame", "peer %s sent garbage", i) for i in range(100)]
        assert logged == [True] + [False] * 99
        now[0] = 11.0
        assert limited.warning("bad frame", "peer %s sent garbage", 100)
        assert limited.warning("other", "x") and limited.warning("third", "y")
    assert [r.getMessage() for r in caplog.records][:2] == [
        "peer 0 sent garbage",
        "peer 100 sent garbage [99 similar suppressed]",
    ]
    assert len(limited._state) == 2  # the oldest cause was forgotten: memory stays bounded
