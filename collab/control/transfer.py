"""Bundles as streams of file chunks over gRPC (fetch by nodes, upload by operators).

The receiver writes only relative paths inside its destination and caps total size; it
does not trust the stream — callers verify the result (signature + hashes) afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

import grpc

from collab.bundle import MANIFEST
from collab.errors import BundleError, TransportError
from collab.files import read_secret
from collab.proto import control_pb2 as pb
from collab.proto import control_pb2_grpc as pb_grpc

CHUNK = 256 * 1024
MAX_BUNDLE_BYTES = 2 * 1024**3
MAX_FILES = 10_000


def bundle_files(root: Path) -> list[str]:
    """manifest.json first, then every file it lists (what a bundle transfer carries)."""
    try:
        files = json.loads((root / MANIFEST).read_bytes())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{root}: cannot read the manifest file list: {e}") from e
    return [MANIFEST, *sorted(files)]


def iter_bundle_chunks(root: Path, chunk_size: int = CHUNK) -> Iterator[pb.BundleChunk]:
    for rel in bundle_files(root):
        p = root / rel
        size = p.stat().st_size
        with open(p, "rb") as f:
            offset = 0
            while True:
                data = f.read(chunk_size)
                if not data and offset > 0:
                    break
                yield pb.BundleChunk(path=rel, offset=offset, data=data, file_size=size)
                offset += len(data)
                if offset >= size:
                    break


def _safe_rel(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or any(part in ("..", "") for part in p.parts) or "\\" in rel:
        raise BundleError(f"bundle stream names an unsafe path {rel[:200]!r}")
    return p


def receive_bundle(
    chunks: Iterable[pb.BundleChunk], dest: Path, *, max_bytes: int = MAX_BUNDLE_BYTES
) -> Path:
    """Write a chunk stream into the empty directory ``dest``."""
    total = 0
    seen: dict[str, int] = {}
    sizes: dict[str, int] = {}
    current: tuple[str, object] | None = None
    try:
        for ch in chunks:
            rel = str(_safe_rel(ch.path))
            if current is None or current[0] != rel:
                if rel in seen:
                    raise BundleError(f"bundle stream repeats file {rel!r}")
                if len(seen) >= MAX_FILES:
                    raise BundleError("bundle stream has too many files")
                if current is not None:
                    current[1].close()  # type: ignore[attr-defined]
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                current = (rel, open(target, "wb"))  # noqa: SIM115
                seen[rel] = 0
                sizes[rel] = ch.file_size
            if ch.offset != seen[rel]:
                raise BundleError(f"bundle stream offset gap in {rel!r}")
            total += len(ch.data)
            if total > max_bytes:
                raise BundleError(f"bundle exceeds {max_bytes} bytes")
            current[1].write(ch.data)  # type: ignore[attr-defined]
            seen[rel] += len(ch.data)
    finally:
        if current is not None:
            current[1].close()  # type: ignore[attr-defined]
    short = [r for r, n in seen.items() if n != sizes[r]]
    if short:
        raise BundleError(f"bundle stream truncated: {short}")
    if MANIFEST not in seen:
        raise BundleError("bundle stream has no manifest.json")
    return dest


FETCH_TOKEN_ENV = "COLLAB_FETCH_TOKEN"


def fetch_token(path: Path | None) -> str:
    """A node's fetch token: from ``path`` (mode 0600) or else ``$COLLAB_FETCH_TOKEN``."""
    if path is not None:
        return read_secret(path, "fetch token file")
    return os.environ.get(FETCH_TOKEN_ENV, "").strip()


def channel(endpoint: str, *, ca_file: Path | None = None) -> grpc.Channel:
    opts = [("grpc.max_receive_message_length", 8 * CHUNK)]
    if ca_file is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
        return grpc.secure_channel(endpoint, creds, options=opts)
    return grpc.insecure_channel(endpoint, options=opts)


def fetch_bundle(
    endpoint: str,
    version: str,
    dest: Path,
    *,
    node_id: str = "",
    token: str = "",
    timeout: float = 120.0,
    ca_file: Path | None = None,
) -> Path:
    """Stream ``version`` from the coordinator's BundleService into ``dest``, presenting
    ``node_id``'s fetch token."""
    with channel(endpoint, ca_file=ca_file) as ch:
        stub = pb_grpc.BundleServiceStub(ch)
        request = pb.FetchRequest(version=version, node_id=node_id)
        try:
            return receive_bundle(
                stub.Fetch(
                    request, timeout=timeout, metadata=(("authorization", f"Bearer {token}"),)
                ),
                dest,
            )
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            if code == grpc.StatusCode.NOT_FOUND:
                raise BundleError(
                    f"coordinator has no bundle {version[:12]}…: {e.details()}"
                ) from e  # type: ignore[attr-defined]
            if code == grpc.StatusCode.UNAUTHENTICATED:  # retrying cannot fix a token
                raise BundleError(f"coordinator refused the fetch: {e.details()}") from e  # type: ignore[attr-defined]
            raise TransportError(f"bundle fetch from {endpoint} failed: {code}") from e
