"""Ed25519 signatures over rollout directives.

A directive names the bundle version, which is the sha256 of the manifest, which lists
the sha256 of every file: one signature over the directive statement covers the whole
bundle *and* who may install it (target), in which order (sequence) and until when
(expiry), so a captured directive cannot be replayed to downgrade a node. A context
prefix keeps these signatures from being valid for anything else the key might sign.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collab.control import messages as msg
from collab.errors import AuthError, ConfigError
from collab.files import write_private
from collab.log import logger

CONTEXT = b"collab/v2 rollout directive\x00"


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The coordinator's key; created (mode 0600, public key beside it as ``.pub``) on first use."""
    path = Path(path)
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as e:
            raise ConfigError(f"cannot load signing key {path}: {e}") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {path} is not an Ed25519 key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)  # 0600 from the first byte, never through a planted link
    public_key_path(path).write_bytes(public_pem(key.public_key()))
    logger.info("generated Ed25519 signing key %s (give nodes %s)", path, public_key_path(path))
    return key


def public_key_path(key_path: Path) -> Path:
    return Path(str(key_path) + ".pub")


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(f"cannot load trusted public key {path}: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"trusted key {path} is not an Ed25519 public key")
    return key


def sign_directive(key: Ed25519PrivateKey, d: msg.RolloutDirective) -> msg.SignedDirective:
    statement = msg.directive_statement(d)
    return msg.SignedDirective(
        statement=statement, signature=key.sign(CONTEXT + statement), directive=d
    )


def verify_directive(sd: msg.SignedDirective, public_key: Ed25519PublicKey) -> msg.RolloutDirective:
    """The directive, once its statement verifies; :class:`AuthError` otherwise."""
    try:
        public_key.verify(sd.signature, CONTEXT + sd.statement)
    except InvalidSignature as e:
        raise AuthError("bundle signature does not verify against the trusted key") from e
    return sd.directive
