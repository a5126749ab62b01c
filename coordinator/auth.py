"""Who may call the coordinator's gRPC services, and with which credential.

Operators present one admin token; each node presents its own fetch token,
``HMAC-SHA256(fetch key, node id)``, so the coordinator keeps one secret for the whole
fleet, a node's token is useless under another node id, and ``collab mqtt-auth`` can
issue tokens without talking to the coordinator. Both travel as
``authorization: Bearer <token>`` and are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from collab.errors import AuthError, ConfigError
from collab.files import read_secret, write_private
from collab.log import logger
from collab.transport import is_loopback

ADMIN_TOKEN_ENV = "COLLAB_ADMIN_TOKEN"
_FETCH_CONTEXT = b"collab/v1 fetch token\x00"


MIN_ADMIN_TOKEN = 16  # characters: `secrets.token_urlsafe(32)` (43) is what we issue


def admin_token(path: Path | None) -> str | None:
    """The operator token: from ``path`` (mode 0600) or else ``$COLLAB_ADMIN_TOKEN``;
    refused when short enough to guess (the API answers as fast as it can, so an online
    guess costs an attacker one round trip)."""
    if path is not None:
        token: str | None = read_secret(path, "admin token file")
        where = os.fspath(path)
    else:
        token = os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None
        where = f"${ADMIN_TOKEN_ENV}"
    if token is not None and len(token) < MIN_ADMIN_TOKEN:
        raise ConfigError(
            f"admin token in {where} has {len(token)} characters, fewer than "
            f"{MIN_ADMIN_TOKEN}: use e.g. `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`"
        )
    return token


def require_operator_auth(listen: str, token: str | None) -> None:
    """ConfigError when the operator API would be reachable off this host without a token."""
    if token is None and not is_loopback(listen):
        raise ConfigError(
            f"refusing to serve the operator API on {listen} without a token: "
            f"pass --admin-token-file FILE (mode 0600) or set {ADMIN_TOKEN_ENV}, "
            "or listen on loopback"
        )


def bearer(context: grpc.ServicerContext) -> bytes:
    """The caller's ``authorization: Bearer`` token (b"" when absent)."""
    for key, value in context.invocation_metadata():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            return text.removeprefix("Bearer ").encode() if text.startswith("Bearer ") else b""
    return b""


def check_admin(context: grpc.ServicerContext, token: str | None) -> None:
    """AuthError unless the caller presents ``token`` (None: loopback-only API, open)."""
    if token is not None and not hmac.compare_digest(bearer(context), token.encode()):
        raise AuthError("operator API: missing or wrong admin token")


@dataclass(frozen=True)
class FetchKey:
    """The coordinator's secret from which every node's fetch token is derived."""

    secret: bytes = field(repr=False)

    def token_for(self, node_id: str) -> str:
        return hmac.new(self.secret, _FETCH_CONTEXT + node_id.encode(), hashlib.sha256).hexdigest()

    def check(self, context: grpc.ServicerContext, node_id: str) -> None:
        """AuthError unless the caller presents ``node_id``'s token."""
        if not node_id or not hmac.compare_digest(
            bearer(context), self.token_for(node_id).encode()
        ):
            raise AuthError(f"bundle fetch: missing or wrong fetch token for node {node_id!r}")


def load_or_create_fetch_key(path: Path) -> FetchKey:
    """The fetch key at ``path``; created (32 random bytes, hex, mode 0600) on first use."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_private(path, (secrets.token_hex(32) + "\n").encode())
        except ConfigError:
            if not path.exists():
                raise
            # created meanwhile by another process: read theirs
        else:
            logger.info("generated fetch key %s (node tokens: collab mqtt-auth --fetch-key)", path)
    text = read_secret(path, "fetch key")
    try:
        secret = bytes.fromhex(text)
    except ValueError as e:
        raise ConfigError(f"fetch key {path} is not hex") from e
    if len(secret) < 16:
        raise ConfigError(f"fetch key {path} is shorter than 16 bytes")
    return FetchKey(secret)


def write_fetch_tokens(key_path: Path, out: Path, nodes: list[str]) -> None:
    """``out/<node>.fetch`` (mode 0600) for each node: what it presents to fetch bundles."""
    key = load_or_create_fetch_key(key_path)
    out.mkdir(parents=True, exist_ok=True)
    for node_id in nodes:
        write_private(
            out / f"{node_id}.fetch", (key.token_for(node_id) + "\n").encode(), replace=True
        )
