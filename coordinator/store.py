"""Bundles stored by content hash (``<root>/<version>/``).

A bundle is verified with :func:`collab.load_bundle` before it is stored, so the
coordinator only ever signs directives (coordinator/daemon.py) for versions it checked.
Files are served as they lie on disk: nodes check them against the signed version and
sizes while they stream, which is what makes on-disk tampering harmless. Upload staging
directories (``.upload-*``) a killed coordinator left behind are removed at the next start.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from collab.bundle import load_bundle
from collab.control.transfer import bundle_files
from collab.errors import NotFoundError
from collab.log import logger
from coordinator.db import Database


class BundleStore:
    def __init__(self, root: Path, db: Database) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".upload-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._db = db
        self.model_names: dict[str, str] = {}
        self._sizes: dict[str, dict[str, int]] = {}
        for row in db.read("SELECT version, model_name, sizes FROM bundles"):
            self.model_names[row["version"]] = row["model_name"]
            self._sizes[row["version"]] = json.loads(row["sizes"])

    def staging(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=".upload-", dir=self.root))

    def add(self, src: Path, *, move: bool = False) -> tuple[str, str, bool]:
        """Verify, copy (or move a staging dir) into the store; -> (version, model, existed).
        A staging dir of ours is removed on any failure."""
        bundle = load_bundle(src)
        version = bundle.version
        if version in self.model_names and (self.root / version).is_dir():
            if move:
                shutil.rmtree(src, ignore_errors=True)
            return version, bundle.name, True
        tmp = src if move else self.staging()
        try:
            if not move:
                for rel in bundle_files(Path(src)):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(Path(src) / rel, tmp / rel)
            sizes = {rel: (tmp / rel).stat().st_size for rel in bundle_files(tmp)}
            final = self.root / version
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if not move:
                shutil.rmtree(tmp, ignore_errors=True)  # gone once renamed
        row = (version, bundle.name, time.time(), json.dumps(sizes, sort_keys=True))

        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO bundles VALUES (?,?,?,?)", row)

        self._db.call(op)
        self.model_names[version] = bundle.name
        self._sizes[version] = sizes
        logger.info("stored bundle %s %s", bundle.name, version[:12])
        return version, bundle.name, False

    def path(self, version: str) -> Path:
        p = self.root / version
        if version not in self.model_names or not p.is_dir():
            raise NotFoundError(f"no stored bundle with version {version[:16]!r}")
        return p

    def sizes(self, version: str) -> dict[str, int]:
        """Bytes of every file a transfer of ``version`` carries, as verified at upload
        (signed into directives, so a node cuts a stream at the first byte beyond them,
        whatever happened to the store since)."""
        self.path(version)
        return self._sizes[version]
