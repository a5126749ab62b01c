"""Reading a file the user named (a config, a trace, a key, a token): one ConfigError that
says what the file is for, where it is and why it cannot be read."""

from __future__ import annotations

import os

from collab.errors import ConfigError

PathLike = str | os.PathLike[str]


def read_bytes(path: PathLike, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _unreadable(path, what, e) from e


def read_text(path: PathLike, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, what, e) from e


def _unreadable(path: PathLike, what: str, e: Exception) -> ConfigError:
    if isinstance(e, FileNotFoundError):
        reason = "not found"
    elif isinstance(e, UnicodeDecodeError):
        reason = f"not UTF-8 text ({e.reason} at byte {e.start})"
    else:
        reason = getattr(e, "strerror", None) or str(e)
    return ConfigError(f"cannot read {what} {os.fspath(path)}: {reason}")


def read_secret(path: PathLike, what: str) -> str:
    """A token file's first line: refused when others may read it (anyone who can read
    the file holds the credential) or when it is empty."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise _unreadable(path, what, e) from e
    if mode & 0o077:
        raise ConfigError(
            f"{what} {os.fspath(path)} is readable by group or others "
            f"(mode {mode & 0o777:03o}): chmod 600 it"
        )
    secret = read_text(path, what).strip()
    if not secret:
        raise ConfigError(f"{what} {os.fspath(path)} is empty")
    return secret
