"""Bundles stored by content hash (``<root>/<version>/``) with the coordinator's signature.

A bundle is verified with :func:`collab.load_bundle` before it is stored and signed, so
the coordinator only ever signs what it checked. Files are served as they lie on disk:
nodes verify again, which is what makes on-disk tampering harmless. Upload staging
directories (``.upload-*``) a killed coordinator left behind are removed at the next start.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collab.bundle import MANIFEST, load_bundle
from collab.control.signing import sign_manifest
from collab.control.transfer import bundle_files
from collab.errors import NotFoundError
from collab.log import logger
from coordinator.db import Database


class BundleStore:
    def __init__(self, root: Path, key: Ed25519PrivateKey, db: Database) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".upload-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._key = key
        self._db = db
        self.signatures: dict[str, bytes] = {}
        self.model_names: dict[str, str] = {}
        for row in db.read("SELECT version, model_name, signature FROM bundles"):
            self.signatures[row["version"]] = bytes(row["signature"])
            self.model_names[row["version"]] = row["model_name"]

    def staging(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=".upload-", dir=self.root))

    def add(self, src: Path, *, move: bool = False) -> tuple[str, str, bool]:
        """Verify, copy (or move a staging dir) into the store, sign; -> (version, model, existed).
        A staging dir of ours is removed on any failure."""
        bundle = load_bundle(src)
        version = bundle.version
        if version in self.signatures and (self.root / version).is_dir():
            if move:
                shutil.rmtree(src, ignore_errors=True)
            return version, bundle.name, True
        tmp = src if move else self.staging()
        try:
            if not move:
                for rel in bundle_files(Path(src)):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(Path(src) / rel, tmp / rel)
            final = self.root / version
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if not move:
                shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed
        signature = sign_manifest(self._key, (final / MANIFEST).read_bytes())
        row = (version, bundle.name, signature, time.time())

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO bundles VALUES (?,?,?,?)", row)

        self._db.call(op)
        self.signatures[version] = signature
        self.model_names[version] = bundle.name
        logger.info("stored bundle %s %s", bundle.name, version[:12])
        return version, bundle.name, False

    def path(self, version: str) -> Path:
        p = self.root / version
        if version not in self.signatures or not p.is_dir():
            raise NotFoundError(f"no stored bundle with version {version[:16]!r}")
        return p

    def signature(self, version: str) -> bytes:
        self.path(version)
        return self.signatures[version]
