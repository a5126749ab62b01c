"""Split-model bundles: a directory with ``manifest.json`` and ONNX files.

Schema 2 stores every weight once: the model is cut at its split points into consecutive
*segments* (segment i maps boundary i to boundary i + 1; boundary 0 is the model input,
the last one its output). The head of the split point at boundary k is segments[:k], its
tail segments[k:], the full model all of them; runtimes run them as chains of shared
sessions. Variants (e.g. INT8 heads) are single files with their own weights.

The manifest lists the sha256 of every file; :func:`load_bundle` verifies them all,
so a tampered or incomplete bundle never reaches a runtime. The bundle *version* is
the sha256 of the manifest bytes, which therefore covers every file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError

from collab.errors import BundleError

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
SELF_HASH = "manifest_sha256"  # sha256 of the canonical manifest JSON without this key
# A real manifest is a few KB per split point; the cap keeps a hostile one (from a
# fetch or an upload) from costing more than parsing a few MB.
MAX_MANIFEST_BYTES = 4 << 20
_STRICT = ConfigDict(extra="forbid")  # unknown keys are a malformed manifest, not ignored


def _canonical(d: dict[str, Any]) -> bytes:
    return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True, kw_only=True)
class Variant:
    """An alternative implementation of a head or of the full model (e.g. INT8)."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    name: str  # e.g. "int8_static"
    path: str  # relative ONNX path
    ms: float  # median latency measured on the build machine
    size_bytes: int
    agreement: float  # top-1 agreement with the FP32 model on held-out inputs, in [0, 1]


@dataclass(frozen=True, kw_only=True)
class Segment:
    """One consecutive piece of the model, the only file holding its weights."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    path: str  # relative ONNX path
    input: str  # tensor name of its one input (the model input or a cut tensor)
    output: str  # tensor name of its one output (a cut tensor or the model output)
    input_shape: tuple[int, ...]  # of its input at batch 1
    ms: float  # median latency measured on the build machine


@dataclass(frozen=True, kw_only=True)
class Bottleneck:
    """A learned bottleneck at the cut of split point ``base``: the head runs ``encoder``
    after the base head (cut tensor -> small code), the tail ``decoder`` before the base
    tail (code -> cut tensor). Only these two small files hold new weights."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    base: str  # the split point whose cut it compresses
    encoder: str  # relative ONNX path
    decoder: str
    encoder_ms: float
    decoder_ms: float
    train: dict[str, Any] = field(default_factory=dict)  # how it was trained (data, steps, loss)


@dataclass(frozen=True, kw_only=True)
class EarlyExit:
    """An exit head at the cut of split point ``split``: logits from the cut tensor. The
    edge answers at once when its top-1 softmax probability is >= ``tau``; ``tau`` was
    calibrated on held-out inputs so the exited ones agree with the full model at least
    ``target``; ``rate`` and ``agreement`` are what that calibration measured."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    name: str
    split: str  # a split point without a bottleneck
    path: str  # relative ONNX path: cut tensor -> logits
    ms: float  # exit head latency on the build machine
    tau: float  # in [0, 1], or > 1 for "never exit"
    target: float  # the agreement the calibration aimed at
    rate: float  # fraction of calibration inputs that exit
    agreement: float  # top-1 agreement of the exited ones with the full model
    num_calibration: int
    train: dict[str, Any] = field(default_factory=dict)

    def takes(self, logits: np.ndarray) -> np.ndarray:
        """Which rows of the exit head's ``logits`` exit (bool, one per row)."""
        return confidence(logits) >= self.tau


def confidence(logits: np.ndarray) -> np.ndarray:
    """Top-1 softmax probability per row (float64), the exits' confidence."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    out: np.ndarray = p.max(axis=1) / p.sum(axis=1)
    return out


@dataclass(frozen=True, kw_only=True)
class SplitPoint:
    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    name: str
    index: int  # position in topological order of the cut (0 = closest to the input)
    boundary: int  # the head is segments[:boundary], the tail segments[boundary:]
    feature_shape: tuple[int, ...]
    feature_dtype: str
    feature_bytes: int
    head_ms: float
    tail_ms: float
    head_variants: tuple[Variant, ...] = ()
    # a learned bottleneck: the head is the base head + encoder, the tail decoder + base
    # tail, the feature the code (boundary, index: the base's)
    bottleneck: Bottleneck | None = None


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """How a camera image becomes the model input, so a client (``infer_image``) and a
    cloud node (image frames) build exactly the tensor the model was exported for:
    resize an RGB uint8 image to ``size`` (H, W), scale to [0, 1], subtract ``mean``
    and divide by ``std`` per channel, channels first. Only RGB and NCHW exist today;
    the fields name them so a bundle states what it assumes."""

    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]  # per channel, on pixels scaled to [0, 1]
    std: tuple[float, float, float]
    layout: str = "NCHW"
    channels: str = "RGB"

    def __post_init__(self) -> None:
        if len(self.size) != 2 or not all(isinstance(v, int) and v > 0 for v in self.size):
            raise BundleError(
                f"preprocessing size {self.size!r} must be two positive integers (H, W)"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise BundleError("preprocessing mean and std need one value per RGB channel")
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (*self.mean, *self.std)
        ):
            raise BundleError("preprocessing mean and std must be numbers")
        if not all(v > 0 for v in self.std):
            raise BundleError(f"preprocessing std {self.std!r} must be > 0")
        if self.layout != "NCHW" or self.channels != "RGB":
            raise BundleError(
                f"preprocessing layout {self.layout!r}/channels {self.channels!r}: "
                "only NCHW and RGB are supported"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model input of one image, without the batch dim."""
        return (3, *self.size)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    __pydantic_config__: ClassVar[ConfigDict] = _STRICT

    model_name: str
    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    full_ms: float
    input_bytes: int
    segments: tuple[Segment, ...]
    split_points: tuple[SplitPoint, ...]
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    opset: int = 17
    dynamic_batch: bool = True  # ONNX files accept any batch size in dim 0
    calibration: str | None = None  # relative path of the codec calibration sidecar
    full_variants: tuple[Variant, ...] = ()
    preprocessing: Preprocessing | None = None  # known for image models (collab split --mean/--std)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata (e.g. accuracy)
    exits: tuple[EarlyExit, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def split(self, name: str) -> SplitPoint:
        for sp in self.split_points:
            if sp.name == name:
                return sp
        known = ", ".join(sp.name for sp in self.split_points) or "none"
        raise BundleError(f"unknown split point {name!r} (known: {known})")

    def head_paths(self, split: str) -> tuple[str, ...]:
        """Files of the head of split point ``split``, in run order: segments, then the
        bottleneck's encoder if it has one."""
        sp = self.split(split)
        segs = tuple(s.path for s in self.segments[: sp.boundary])
        return segs if sp.bottleneck is None else (*segs, sp.bottleneck.encoder)

    def tail_paths(self, split: str) -> tuple[str, ...]:
        """Files of the tail of split point ``split``, in run order (a bottleneck's
        decoder first)."""
        sp = self.split(split)
        segs = tuple(s.path for s in self.segments[sp.boundary :])
        return segs if sp.bottleneck is None else (sp.bottleneck.decoder, *segs)

    def exit(self, name: str) -> EarlyExit:
        for e in self.exits:
            if e.name == name:
                return e
        raise BundleError(f"unknown early exit {name!r} (known: {[e.name for e in self.exits]})")

    def full_paths(self) -> tuple[str, ...]:
        """Segment files of the full model (edge-only), in run order."""
        return tuple(s.path for s in self.segments)

    def model_files(self) -> set[str]:
        """Every ONNX file the manifest references: segments and variants."""
        files = {s.path for s in self.segments} | {v.path for v in self.full_variants}
        files |= {e.path for e in self.exits}
        for sp in self.split_points:
            if sp.bottleneck is not None:
                files |= {sp.bottleneck.encoder, sp.bottleneck.decoder}
        return files | {v.path for sp in self.split_points for v in sp.head_variants}


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    return asdict(m)


def _rebuild_hint(d: dict[str, Any]) -> str:
    extra = d.get("extra")
    if not isinstance(extra, dict):
        extra = {}
    source = extra.get("source_file") or extra.get("factory") or "MODEL"
    shape = (
        ""
        if str(source).endswith(".onnx")
        else " --input-shape " + ",".join(map(str, d.get("input_shape", ())))
    )
    return f"rebuild it from its model: collab split {source}{shape} --out NEW_DIR"


def _check_layout(m: Manifest) -> None:
    """At least one segment; every split point sits on a boundary between two."""
    if not m.segments:
        raise BundleError("malformed manifest: no segments")
    for sp in m.split_points:
        if not 0 < sp.boundary < len(m.segments):
            raise BundleError(
                f"malformed manifest: split point {sp.name} at boundary {sp.boundary} of "
                f"{len(m.segments)} segments"
            )
    plain = {sp.name: sp for sp in m.split_points if sp.bottleneck is None}
    for sp in m.split_points:
        bn = sp.bottleneck
        if bn is not None and (bn.base not in plain or plain[bn.base].boundary != sp.boundary):
            raise BundleError(
                f"malformed manifest: bottleneck {sp.name} sits on {bn.base!r}, which is not "
                "a plain split point at its boundary"
            )
    for e in m.exits:
        if e.split not in plain:
            raise BundleError(
                f"malformed manifest: early exit {e.name} at {e.split!r}, not a plain split point"
            )
    if len({e.name for e in m.exits}) != len(m.exits):
        raise BundleError("malformed manifest: two early exits with one name")
    pre = m.preprocessing
    if pre is not None and tuple(m.input_shape[1:]) != pre.input_shape:
        raise BundleError(
            f"malformed manifest: preprocessing makes {list(pre.input_shape)} images, "
            f"the model input is {list(m.input_shape)}"
        )


@cache
def _manifest_adapter() -> TypeAdapter[Manifest]:
    return TypeAdapter(Manifest)


def _check_values(m: Manifest) -> None:
    """Numbers a runtime divides by or allocates from: finite, non-negative, positive dims."""
    shapes = [m.input_shape, m.output_shape, *(s.input_shape for s in m.segments)]
    shapes += [sp.feature_shape for sp in m.split_points]
    if any(len(sh) == 0 or any(d <= 0 for d in sh) for sh in shapes):
        raise BundleError("malformed manifest: a shape with no or non-positive dimensions")
    times = [m.full_ms, *(s.ms for s in m.segments)]
    times += [t for sp in m.split_points for t in (sp.head_ms, sp.tail_ms)]
    variants = [*m.full_variants, *(v for sp in m.split_points for v in sp.head_variants)]
    times += [v.ms for v in variants]
    times += [
        t
        for sp in m.split_points
        if sp.bottleneck
        for t in (sp.bottleneck.encoder_ms, sp.bottleneck.decoder_ms)
    ]
    times += [e.ms for e in m.exits]
    rates = [r for e in m.exits for r in (e.rate, e.agreement, e.target)]
    if not all(0.0 <= r <= 1.0 for r in rates) or not all(e.tau >= 0 for e in m.exits):
        raise BundleError("malformed manifest: an early exit rate/agreement outside [0, 1]")
    if not all(math.isfinite(t) and t >= 0 for t in times):
        raise BundleError("malformed manifest: a latency that is negative or not finite")
    sizes = [m.input_bytes, *(sp.feature_bytes for sp in m.split_points)]
    if any(n < 0 for n in (*sizes, *(v.size_bytes for v in variants))):
        raise BundleError("malformed manifest: a negative size")


def manifest_from_dict(d: dict[str, Any]) -> Manifest:
    """Type-checked: every field has its declared type (no coercion of strings to
    numbers), unknown keys are refused; any defect is one BundleError."""
    version = d.get("schema_version")
    if version == 1:
        raise BundleError(
            "bundle schema 1 (a copy of the weights in every head and tail) is no longer "
            f"supported; {_rebuild_hint(d)}"
        )
    if version != SCHEMA_VERSION:
        raise BundleError(f"unsupported manifest schema_version {version!r}")
    try:
        m = _manifest_adapter().validate_json(json.dumps(d), strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"])) or "manifest"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise BundleError(f"malformed manifest: {where}: {first['msg']}{more}") from e
    _check_values(m)
    _check_layout(m)
    return m


def _modified(root: Path, rel: str, actual: str, digest: str) -> BundleError:
    return BundleError(f"{root}: file {rel} was modified (sha256 {actual[:12]}… != {digest[:12]}…)")


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
    # segment file -> the bytes load_bundle(keep_segments=True) verified, until read once
    _verified: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

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

    def read_verified(self, rel: str) -> bytes:
        """A listed file's bytes, checked against the manifest now: sessions built from
        them run exactly what was verified, even if the file changed since loading. The
        bytes ``load_bundle(keep_segments=True)`` verified are handed over once instead."""
        kept = self._verified.pop(rel, None)
        if kept is not None:
            return kept
        digest = self.manifest.files.get(rel)
        if digest is None:
            raise BundleError(f"{self.root}: file {rel} is not listed in the manifest")
        try:
            data = self.path(rel).read_bytes()
        except OSError as e:
            raise BundleError(f"{self.root}: cannot read file {rel}: {e}") from e
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise _modified(self.root, rel, actual, digest)
        return data


def load_bundle(root: str | os.PathLike[str], *, keep_segments: bool = False) -> Bundle:
    """Load and verify a bundle; raise :class:`BundleError` naming the bad file.

    ``keep_segments``: keep the verified bytes of the segment files for
    :meth:`Bundle.read_verified`, which hands each over once: a runtime about to build
    every segment session (the edge's full model, the cloud's tails) reads and hashes
    them once instead of twice."""
    root = Path(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: not a bundle (missing {MANIFEST})")
    with open(mpath, "rb") as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{mpath}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        d = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: manifest is not valid JSON: {e}") from e
    except RecursionError as e:
        raise BundleError(f"{mpath}: manifest nests too deeply") from e
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
    try:
        m = manifest_from_dict(d)
    except BundleError as e:
        raise BundleError(f"{root}: {e}") from e
    referenced = m.model_files()
    if m.calibration:
        referenced.add(m.calibration)
    unlisted = referenced - set(m.files)
    if unlisted:
        raise BundleError(f"{root}: manifest references files without a hash: {sorted(unlisted)}")
    keep = set(m.full_paths()) if keep_segments else set()
    verified: dict[str, bytes] = {}
    for rel, digest in sorted(m.files.items()):
        p = (root / rel).resolve()
        if root.resolve() not in p.parents:
            raise BundleError(f"{root}: file {rel!r} escapes the bundle directory")
        if not p.is_file():
            raise BundleError(f"{root}: missing file {rel}")
        if rel in keep:
            data = p.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            verified[rel] = data
        else:
            actual = sha256_file(p)
        if actual != digest:
            raise _modified(root, rel, actual, digest)
    return Bundle(
        root=root, manifest=m, version=hashlib.sha256(raw).hexdigest(), _verified=verified
    )


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file the manifest references and write ``manifest.json``."""
    refs = manifest.model_files() | set(manifest.files)
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


def update_bundle(
    root: str | os.PathLike[str], mutate: Callable[[Path, Manifest], Manifest]
) -> Bundle:
    """Add files/metadata to an existing bundle: verify, let ``mutate`` write files into
    the directory and return the new manifest, then re-hash and re-verify."""
    b = load_bundle(root)
    m = mutate(b.root, b.manifest)
    write_manifest(b.root, m)
    return load_bundle(b.root)
