"""Split-model bundles: a directory with ``manifest.json`` and ONNX files.

The manifest lists the sha256 of every file; :func:`load_bundle` verifies them all,
so a tampered or incomplete bundle never reaches a runtime. The bundle *version* is
the sha256 of the manifest bytes, which therefore covers every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from collab.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SELF_HASH = "manifest_sha256"  # sha256 of the canonical manifest JSON without this key


def _canonical(d: dict[str, Any]) -> bytes:
    return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True, kw_only=True)
class Variant:
    """An alternative implementation of a head or of the full model (e.g. INT8)."""

    name: str  # e.g. "int8_static"
    path: str  # relative ONNX path
    ms: float  # median latency measured on the build machine
    size_bytes: int
    agreement: float  # top-1 agreement with the FP32 model on held-out inputs, in [0, 1]


@dataclass(frozen=True, kw_only=True)
class SplitPoint:
    name: str
    index: int  # position in topological order of the cut (0 = closest to the input)
    head: str
    tail: str
    feature_shape: tuple[int, ...]
    feature_dtype: str
    feature_bytes: int
    head_ms: float
    tail_ms: float
    head_variants: tuple[Variant, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Manifest:
    model_name: str
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    full: str
    full_ms: float
    input_bytes: int
    split_points: tuple[SplitPoint, ...]
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    opset: int = 17
    dynamic_batch: bool = True  # ONNX files accept any batch size in dim 0
    calibration: str | None = None  # relative path of the codec calibration sidecar
    full_variants: tuple[Variant, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata (e.g. accuracy)
    schema_version: int = SCHEMA_VERSION

    def split(self, name: str) -> SplitPoint:
        for sp in self.split_points:
            if sp.name == name:
                return sp
        known = ", ".join(sp.name for sp in self.split_points) or "none"
        raise BundleError(f"unknown split point {name!r} (known: {known})")


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    return asdict(m)


def _variant(d: dict[str, Any]) -> Variant:
    return Variant(**d)


def manifest_from_dict(d: dict[str, Any]) -> Manifest:
    try:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(f"unsupported manifest schema_version {d.get('schema_version')!r}")
        sps = tuple(
            SplitPoint(
                **{
                    **sp,
                    "feature_shape": tuple(sp["feature_shape"]),
                    "head_variants": tuple(_variant(v) for v in sp.get("head_variants", ())),
                }
            )
            for sp in d["split_points"]
        )
        return Manifest(
            **{
                **d,
                "input_shape": tuple(d["input_shape"]),
                "output_shape": tuple(d["output_shape"]),
                "split_points": sps,
                "full_variants": tuple(_variant(v) for v in d.get("full_variants", ())),
            }
        )
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"malformed manifest: {e}") from e


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: Manifest
    version: str  # sha256 of manifest.json

    def path(self, rel: str) -> Path:
        return self.root / rel

    @property
    def name(self) -> str:
        return self.manifest.model_name

    def calibration(self) -> dict[str, Any] | None:
        """The codec calibration table, if the bundle has one (see collab.codec)."""
        if self.manifest.calibration is None:
            return None
        data: dict[str, Any] = json.loads(self.path(self.manifest.calibration).read_text())
        return data


def load_bundle(root: str | os.PathLike[str]) -> Bundle:
    """Load and verify a bundle; raise :class:`BundleError` naming the bad file."""
    root = Path(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: not a bundle (missing {MANIFEST})")
    raw = mpath.read_bytes()
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: manifest is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise BundleError(f"{mpath}: manifest is not a JSON object")
    # The manifest hashes every other file; its own checksum makes an edit of it
    # (e.g. a latency figure, which no file hash covers) detectable too.
    claimed = d.pop(SELF_HASH, None)
    if (
        not isinstance(claimed, str)
        or hashlib.sha256(_canonical(d)).hexdigest() != claimed
        or _canonical({**d, SELF_HASH: claimed}) != raw
    ):
        raise BundleError(f"{root}: file {MANIFEST} was modified (self-checksum mismatch)")
    m = manifest_from_dict(d)
    referenced = {m.full, *(sp.head for sp in m.split_points), *(sp.tail for sp in m.split_points)}
    referenced |= {v.path for sp in m.split_points for v in sp.head_variants}
    referenced |= {v.path for v in m.full_variants}
    if m.calibration:
        referenced.add(m.calibration)
    unlisted = referenced - set(m.files)
    if unlisted:
        raise BundleError(f"{root}: manifest references files without a hash: {sorted(unlisted)}")
    for rel, digest in sorted(m.files.items()):
        p = (root / rel).resolve()
        if root.resolve() not in p.parents:
            raise BundleError(f"{root}: file {rel!r} escapes the bundle directory")
        if not p.is_file():
            raise BundleError(f"{root}: missing file {rel}")
        actual = sha256_file(p)
        if actual != digest:
            raise BundleError(f"{root}: file {rel} was modified (sha256 {actual[:12]}… != {digest[:12]}…)")
    return Bundle(root=root, manifest=m, version=hashlib.sha256(raw).hexdigest())


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file the manifest references and write ``manifest.json``."""
    refs = {manifest.full, *(sp.head for sp in manifest.split_points), *(sp.tail for sp in manifest.split_points)}
    refs |= {v.path for sp in manifest.split_points for v in sp.head_variants}
    refs |= {v.path for v in manifest.full_variants}
    refs |= set(manifest.files)
    if manifest.calibration:
        refs.add(manifest.calibration)
    files = {rel: sha256_file(root / rel) for rel in sorted(refs)}
    manifest = replace(manifest, files=files)
    d = manifest_to_dict(manifest)
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_bytes(_canonical({**d, SELF_HASH: hashlib.sha256(_canonical(d)).hexdigest()}))
    os.replace(tmp, root / MANIFEST)
    return manifest


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """Build a bundle in a sibling temp dir and move it to ``out`` only on success,
    so a failure leaves nothing half-written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"output directory {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def update_bundle(root: str | os.PathLike[str], mutate: Callable[[Path, Manifest], Manifest]) -> Bundle:
    """Add files/metadata to an existing bundle: verify, let ``mutate`` write files into
    the directory and return the new manifest, then re-hash and re-verify."""
    b = load_bundle(root)
    m = mutate(b.root, b.manifest)
    write_manifest(b.root, m)
    return load_bundle(b.root)
