"""collab.files: a file the user named is read, or one ConfigError says which file, what
for, and why not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collab.errors import ConfigError
from collab.files import read_bytes, read_text


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
