"""A throwaway certificate authority for tests and local fleets.

Generates a CA and leaf certificates (server and/or client) with ``cryptography`` so
TLS paths are exercised with real certificates and nothing is checked in or fetched.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class ThrowawayCA:
    """A CA whose key stays in memory; ``issue`` writes PEM files next to ``cert``."""

    cert: Path
    _key: ec.EllipticCurvePrivateKey
    _x509: x509.Certificate

    def issue(self, name: str, *, hosts: Sequence[str] = ("localhost", "127.0.0.1"),
              server: bool = True, client: bool = False, days: int = 2) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                                  (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on]
        builder = (_base(name, key, self._x509.subject, days)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return _write(self.cert.parent, name, cert, key)


def _base(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days)))


def _write(directory: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    cpath, kpath = directory / f"{name}.crt", directory / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    kpath.chmod(0o600)
    return CertFiles(cert=cpath, key=kpath)


def make_ca(directory: Path | str, name: str = "collab-test-ca", days: int = 2) -> ThrowawayCA:
    """Create a self-signed CA in ``directory`` (``<name>.crt``; its key is not written)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_base(name, key, subject, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cpath = directory / f"{name}.crt"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ThrowawayCA(cert=cpath, _key=key, _x509=cert)


__all__ = ["CertFiles", "ThrowawayCA", "make_ca"]
