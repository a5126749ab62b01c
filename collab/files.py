"""Reading a file the user named (a config, a trace, a key, a token): one ConfigError that
says what the file is for, where it is and why it cannot be read. Writing a secret (a key,
a password, a token): owner-only from creation, never through a planted symlink."""

from __future__ import annotations

import contextlib
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


def write_private(path: PathLike, data: bytes, *, replace: bool = False) -> None:
    """Create ``path`` readable by its owner only (0600 from the first byte, whatever the
    umask), never following a symlink planted at ``path``. Without ``replace`` an existing
    file is a ConfigError (O_EXCL); with it the new content goes to a fresh temp file
    that is renamed over ``path``, so a link there is replaced, not written through."""
    path = os.fspath(path)
    target = path
    if replace:
        d, base = os.path.split(path)
        target = os.path.join(d, f".{base}.{os.urandom(6).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as e:
        raise ConfigError(f"refusing to overwrite {path}: it exists") from e
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(target, path)
    except BaseException:
        if replace:
            with contextlib.suppress(OSError):
                os.unlink(target)
        raise


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
