"""Bundles as streams of file chunks over gRPC (fetch by nodes, upload by operators).

Two layers, neither trusting the stream. :func:`checked_chunks` lets a chunk through only
once it fits what is already verified: manifest.json first, held in memory until its hash
is the expected version; then only the files it lists, each cut at the first byte beyond
its size and hashed as it streams. :func:`receive_bundle` writes what passes, only to
relative paths inside its destination, under a total cap. The caller owns the staging
directory and removes it on any failure.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

import grpc

from collab.bundle import MANIFEST, MAX_MANIFEST_BYTES
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


def _listed(raw: bytes) -> dict[str, str]:
    try:
        files = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise BundleError(f"bundle stream's manifest has no file list: {e}") from e
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise BundleError("bundle stream's manifest file list is not path -> sha256")
    return files


def checked_chunks(
    chunks: Iterable[pb.BundleChunk],
    *,
    version: str | None = None,
    sizes: Mapping[str, int] | None = None,
) -> Iterator[pb.BundleChunk]:
    """Pass on only chunks that fit what is verified so far; raise :class:`BundleError` at
    the first that does not. ``version``: the manifest's expected sha256; ``sizes``: each
    file's size as a trusted party declared it (else the stream's own declaration counts,
    which still bounds the stream by the total cap of :func:`receive_bundle`)."""
    listed: dict[str, str] | None = None  # path -> sha256, once the manifest is verified
    held: list[pb.BundleChunk] = []  # the manifest's chunks, until it verifies
    done: set[str] = set()
    rel, limit, got, h = "", 0, 0, hashlib.sha256()

    def finish() -> None:
        nonlocal listed
        if got != limit:
            raise BundleError(f"bundle stream truncated: {rel!r} has {got} of {limit} bytes")
        if listed is None:
            raw = b"".join(c.data for c in held)
            if version is not None and h.hexdigest() != version:
                raise BundleError(
                    f"manifest hash {h.hexdigest()[:12]}… does not match the rollout version "
                    f"{version[:12]}…"
                )
            listed = _listed(raw)
            if sizes is not None and set(sizes) != {MANIFEST, *listed}:
                raise BundleError("the manifest lists other files than the directive sized")
        elif h.hexdigest() != listed[rel]:
            raise BundleError(
                f"bundle stream's file {rel} was modified (sha256 {h.hexdigest()[:12]}… != "
                f"{listed[rel][:12]}…)"
            )
        done.add(rel)

    for ch in chunks:
        if ch.path != rel:
            if rel:
                was_manifest = listed is None
                finish()
                if was_manifest:
                    yield from held
            rel, got, h = ch.path, 0, hashlib.sha256()
            if rel in done:
                raise BundleError(f"bundle stream repeats file {rel!r}")
            if listed is None and rel != MANIFEST:
                raise BundleError("bundle stream has no manifest.json as its first file")
            if listed is not None and rel not in listed:
                raise BundleError(f"bundle stream sends {rel[:200]!r}, which the manifest omits")
            limit = sizes.get(rel, 0) if sizes is not None else ch.file_size
            if listed is None and limit > MAX_MANIFEST_BYTES:
                raise BundleError(f"manifest.json exceeds {MAX_MANIFEST_BYTES} bytes")
        if ch.offset != got:
            raise BundleError(f"bundle stream offset gap in {rel!r}")
        if got + len(ch.data) > limit:
            raise BundleError(
                f"bundle stream's file {rel} was modified: it exceeds its declared {limit} bytes"
            )
        got += len(ch.data)
        h.update(ch.data)
        if listed is None:
            held.append(ch)
        else:
            yield ch
    if not rel:
        raise BundleError("bundle stream has no manifest.json as its first file")
    was_manifest = listed is None
    finish()
    if was_manifest:
        yield from held
    assert listed is not None
    missing = sorted(set(listed) - done)
    if missing:
        raise BundleError(f"bundle stream lacks listed files: {missing[:5]}")


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
    sizes: Mapping[str, int],
    node_id: str = "",
    token: str = "",
    timeout: float = 120.0,
    ca_file: Path | None = None,
) -> Path:
    """Stream ``version`` from the coordinator's BundleService into ``dest``, presenting
    ``node_id``'s fetch token and writing only what :func:`checked_chunks` passes against
    ``version`` and the signed ``sizes``."""
    with channel(endpoint, ca_file=ca_file) as ch:
        stub = pb_grpc.BundleServiceStub(ch)
        request = pb.FetchRequest(version=version, node_id=node_id)
        try:
            stream = stub.Fetch(
                request, timeout=timeout, metadata=(("authorization", f"Bearer {token}"),)
            )
            return receive_bundle(
                checked_chunks(stream, version=version, sizes=sizes),
                dest,
                max_bytes=min(sum(sizes.values()), MAX_BUNDLE_BYTES),
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
