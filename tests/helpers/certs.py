"""Throwaway TLS certificates from a trustme CA, written as PEM files (the daemons and
Mosquitto take paths). trustme leaf certificates serve as server and client certificates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertAuthority:
    """A CA whose certificate is ``cert``; ``issue`` writes ``<name>.crt/.key`` next to it."""

    cert: Path
    ca: trustme.CA

    def issue(self, name: str, *, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> CertFiles:
        leaf = self.ca.issue_cert(*hosts, common_name=name)
        files = CertFiles(
            cert=self.cert.parent / f"{name}.crt", key=self.cert.parent / f"{name}.key"
        )
        leaf.cert_chain_pems[0].write_to_path(files.cert)
        leaf.private_key_pem.write_to_path(files.key)
        files.key.chmod(0o600)
        return files


def make_ca(directory: Path, name: str = "collab-test-ca") -> CertAuthority:
    """A new CA; its certificate is written to ``directory/<name>.crt``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=name)
    cert = directory / f"{name}.crt"
    ca.cert_pem.write_to_path(cert)
    return CertAuthority(cert=cert, ca=ca)
