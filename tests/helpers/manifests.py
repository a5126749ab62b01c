"""Writing a bundle manifest by hand, as a hostile or an old writer would."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from collab.bundle import MANIFEST, SELF_HASH


def write_self_checksummed(root: Path, d: dict[str, object]) -> None:
    """Write manifest ``d`` with a valid self-checksum: only the file hashes inside it, and
    the checks on its content, can then refuse it."""
    body = json.dumps(d, indent=2, sort_keys=True) + "\n"
    d = {**d, SELF_HASH: hashlib.sha256(body.encode()).hexdigest()}
    (root / MANIFEST).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")
