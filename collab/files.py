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


def write_private(path: PathLike, data: bytes, what: str = "file") -> None:
    """Create ``path`` readable by its owner only (0600) and write ``data``.

    ``O_EXCL|O_NOFOLLOW``: the mode holds from the first byte (no umask window, no chmod
    after) and a planted file or symlink is refused instead of followed or overwritten."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        why = "already exists" if isinstance(e, FileExistsError) else e.strerror or str(e)
        raise ConfigError(f"cannot create {what} {os.fspath(path)}: {why}") from e
    with os.fdopen(fd, "wb") as f:
        f.write(data)
