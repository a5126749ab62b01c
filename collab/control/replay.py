"""A node's defence against replayed and downgrading rollout directives.

The node keeps the highest directive sequence it applied (its high-water mark) in its
work dir, written atomically (temp + fsync + rename, mode 0600) so neither a crash nor a
restart reopens the window. A verified directive is applied only when it names this node,
has not expired and is newer than the mark. The one directive *at* the mark is accepted
again: it is what the coordinator last asked this node for (a retained re-delivery, or a
node restarted on an older local bundle converging back). Anything else at or below the
mark is a replay or a downgrade; a rollback is a new directive with a higher sequence.

The sequence is coordinator-wide (not per model), so the mark is one number: a per-model
mark would let an old directive for another model switch the node back to that model. It
is kept per trusted key (one file per key fingerprint): a coordinator with another key
has its own sequence.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collab.control import messages as msg
from collab.errors import ConfigError
from collab.files import write_private


def mark_file(key: Ed25519PublicKey) -> str:
    """``directive-mark-<first 16 hex of sha256(raw public key)>.json``"""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"directive-mark-{hashlib.sha256(raw).hexdigest()[:16]}.json"


@dataclass(frozen=True, kw_only=True)
class Mark:
    """The last directive this node applied."""

    sequence: int = 0
    version: str = ""
    model_name: str = ""
    rollout_id: str = ""


class ReplayGuard:
    def __init__(self, state_dir: Path, node_id: str, key: Ed25519PublicKey) -> None:
        self._dir = Path(state_dir)
        self._path = self._dir / mark_file(key)
        self._node_id = node_id
        self.mark = self._load()

    def _load(self) -> Mark:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return Mark()
        except OSError as e:
            raise ConfigError(f"cannot read the directive mark {self._path}: {e}") from e
        try:
            d = json.loads(raw)
            mark = Mark(
                sequence=int(d["sequence"]),
                version=str(d["version"]),
                model_name=str(d["model_name"]),
                rollout_id=str(d["rollout_id"]),
            )
        except (ValueError, TypeError, KeyError) as e:
            # fail closed: without its mark the node would accept any old directive
            raise ConfigError(f"directive mark {self._path} is corrupt: {e}") from e
        return mark

    def refusal(self, d: msg.RolloutDirective, now: float, serving: str) -> str | None:
        """Why this verified directive must not be applied, or None. ``serving``: the
        version the node serves now (the directive at the mark for it changes nothing,
        so its age does not matter)."""
        if d.target != self._node_id:
            return f"directive is for node {d.target!r}, not {self._node_id!r}"
        m = self.mark
        if d.sequence == m.sequence and d.version == m.version == serving:
            return None
        if d.sequence < m.sequence or (d.sequence == m.sequence and d.version != m.version):
            return (
                f"replayed or downgrading directive: sequence {d.sequence} is not above "
                f"this node's mark {m.sequence} ({m.version[:12] or '-'})"
            )
        if now > d.expires_at:
            return f"directive expired {now - d.expires_at:.0f}s ago"
        return None

    def advance(self, d: msg.RolloutDirective) -> None:
        """Record ``d`` as applied (durably, before the node acks it)."""
        if d.sequence <= self.mark.sequence:
            return
        mark = Mark(
            sequence=d.sequence, version=d.version, model_name=d.model_name, rollout_id=d.rollout_id
        )
        self._dir.mkdir(parents=True, exist_ok=True)
        write_private(self._path, json.dumps(asdict(mark)).encode(), replace=True)
        dfd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself survives a power cut
        finally:
            os.close(dfd)
        self.mark = mark
