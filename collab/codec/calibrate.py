"""Measure every split point x codec on sample inputs and store ``calibration.json``.

The decision engine predicts transfer time and accuracy loss from this table (see
:mod:`collab.codec.policy`), so every number is measured on the bundle's own ONNX
files with ONNX Runtime: frame bytes, encode/decode time (per single-sample frame, as
requests travel), relative L2 error, and top-1 agreement of the decoded path with the
uncompressed full model (plus accuracy when labels are given). No torch here.

Bundles of image models (a manifest ``preprocessing``) measured on camera images also
get an ``image`` section: per image codec (``jpeg:Q``, ``png``, ``webp:Q``) the file
bytes of the raw uint8 image, encode and decode + preprocess times (what the cloud
node does), and top-1 agreement of the full model on the decoded image with the full
model on the original. It costs the cloud-only path of ``Client.infer_image``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from collab.bundle import Bundle, Manifest, load_bundle, update_bundle
from collab.chain import BundleSessions
from collab.codec.frame import decode, encode
from collab.codec.image import (
    DEFAULT_IMAGE_CODECS,
    ImageCodec,
    check_images,
    decode_image,
    encode_image,
    preprocess,
    resize,
)
from collab.codec.spec import Codec
from collab.errors import BundleError, CodecError, ConfigError
from collab.log import logger

SCHEMA = 1
FILENAME = "calibration.json"
DEFAULT_CODECS: tuple[str, ...] = (
    "f32",
    "f32+zstd1",
    "f16+zstd1",
    "int8+zstd1",
    "int8+zstd1+sparse",
    "int8+brotli5",
    "int4+zstd1",
    "int4+brotli5",
    "int4+brotli5+sparse",
    "int3+zstd1",
    "int3+brotli5",
    "int2+brotli5",
)
STAT_KEYS = ("bytes", "ratio", "encode_ms", "decode_ms", "rel_l2", "agreement", "accuracy")
BATCH = 64


def _batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(x[i : i + BATCH]) for i in range(0, len(x), BATCH)])


def _rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    num = float(np.linalg.norm((got - ref).ravel()))
    den = float(np.linalg.norm(ref.ravel()))
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def _summary(
    sizes: np.ndarray,
    enc_ms: np.ndarray,
    dec_ms: np.ndarray,
    rel: np.ndarray,
    raw_bytes: int,
    top1: np.ndarray,
    ref_top1: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, float | None]:
    """The STATS row of one codec from its per-sample measurements."""
    mean_bytes = float(sizes.mean())
    return {
        "bytes": mean_bytes,
        "ratio": float(raw_bytes / mean_bytes),
        # medians: the build machine is shared and noisy; one stall should not move the policy
        "encode_ms": float(np.median(enc_ms)),
        "decode_ms": float(np.median(dec_ms)),
        "rel_l2": float(rel.mean()),
        "agreement": float((top1 == ref_top1).mean()),
        "accuracy": None if labels is None else float((top1 == labels).mean()),
    }


def codec_stats(
    x: np.ndarray,
    codec: str,
    downstream: Callable[[np.ndarray], np.ndarray],
    ref_top1: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, float | None]:
    """STATS of one codec on tensors ``x`` (batch dim 0, one frame per sample)."""
    n = len(x)
    sizes = np.empty(n)
    enc_ms = np.empty(n)
    dec_ms = np.empty(n)
    rel = np.empty(n)
    out = np.empty_like(x)
    for i in range(n):
        xi = x[i : i + 1]
        t0 = time.perf_counter()
        frame = encode(xi, codec)
        t1 = time.perf_counter()
        yi = decode(frame)
        t2 = time.perf_counter()
        sizes[i], enc_ms[i], dec_ms[i] = len(frame), (t1 - t0) * 1e3, (t2 - t1) * 1e3
        out[i] = yi[0]
        rel[i] = _rel_l2(yi, xi)
    top1 = _batched(downstream, out).argmax(axis=1)
    return _summary(sizes, enc_ms, dec_ms, rel, x[0].nbytes, top1, ref_top1, labels)


def image_stats(
    pixels: np.ndarray,
    codec: str,
    m: Manifest,
    full: Callable[[np.ndarray], np.ndarray],
    ref: np.ndarray,
    ref_top1: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, float | None]:
    """STATS of one image codec on uint8 images ``pixels`` (N, H, W, 3) already at the
    bundle's size: ``ref`` is their uncompressed model input. ``ratio`` is the raw uint8
    image size over the file size; ``decode_ms`` includes the preprocessing."""
    pre = m.preprocessing
    assert pre is not None
    n = len(pixels)
    sizes, enc_ms, dec_ms, rel = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    out = np.empty_like(ref)
    cap = pre.size[0] * pre.size[1]
    for i in range(n):
        t0 = time.perf_counter()
        data = encode_image(pixels[i], codec)
        t1 = time.perf_counter()
        xi = preprocess(decode_image(data, max_pixels=cap)[None], pre)
        t2 = time.perf_counter()
        sizes[i], enc_ms[i], dec_ms[i] = len(data), (t1 - t0) * 1e3, (t2 - t1) * 1e3
        out[i] = xi[0]
        rel[i] = _rel_l2(xi[0], ref[i])
    top1 = _batched(full, out).argmax(axis=1)
    return _summary(sizes, enc_ms, dec_ms, rel, pixels[0].nbytes, top1, ref_top1, labels)


def _check_images(m: Manifest, images: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Camera images for the image section, resized to the bundle's size (as the edge does)."""
    pre = m.preprocessing
    if pre is None:
        raise ConfigError(
            f"{m.model_name}: image codecs need a bundle with preprocessing "
            "(collab split --mean/--std)"
        )
    pixels, _ = check_images(images)
    if labels is not None and len(labels) != len(pixels):
        raise ConfigError(f"{len(labels)} labels for {len(pixels)} images")
    return resize(pixels, pre.size)


def _check_inputs(
    m: Manifest, inputs: np.ndarray, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(inputs)
    if (
        x.dtype.kind != "f"
        or x.ndim != len(m.input_shape)
        or tuple(x.shape[1:]) != tuple(m.input_shape[1:])
    ):
        raise ConfigError(
            f"calibration inputs must be float with shape (N, {', '.join(map(str, m.input_shape[1:]))}),"
            f" got {x.dtype}{list(x.shape)}"
        )
    if len(x) == 0:
        raise ConfigError("calibration needs at least one input")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(x):
            raise ConfigError(f"{len(labels)} labels for {len(x)} inputs")
    return x, labels


def measure(
    bundle: Bundle,
    inputs: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    codecs: Sequence[str] = DEFAULT_CODECS,
    progress: bool = True,
    images: np.ndarray | None = None,
    image_codecs: Sequence[str] = DEFAULT_IMAGE_CODECS,
) -> dict[str, Any]:
    """Build the calibration table without writing it. ``images``: uint8 camera images
    (N, H, W, 3) for the ``image`` section (``inputs`` is then usually their
    preprocessing; the image section's reference is the model on these images)."""
    from tqdm import tqdm

    names = [Codec.parse(c).name for c in codecs]
    if not names or len(set(names)) != len(names):
        raise ConfigError("codecs must be a non-empty list without duplicates")
    image_names = [ImageCodec.parse(c).name for c in image_codecs] if images is not None else []
    if images is not None and (not image_names or len(set(image_names)) != len(image_names)):
        raise ConfigError("image codecs must be a non-empty list without duplicates")
    m = bundle.manifest
    x, labels = _check_inputs(m, inputs, labels)
    pixels = None if images is None else _check_images(m, images, labels)
    sessions = BundleSessions(bundle)
    full = sessions.full()
    ref_top1 = _batched(full, x).argmax(axis=1)
    result: dict[str, Any] = {"schema": SCHEMA, "num_inputs": len(x), "codecs": names}
    total = len(names) * (1 + len(m.split_points)) + len(image_names)
    with tqdm(
        total=total, desc=f"calibrate {m.model_name}", disable=not progress, unit="codec"
    ) as bar:
        section: dict[str, Any] = {}
        for c in names:
            section[c] = codec_stats(x, c, full, ref_top1, labels)
            bar.update()
        result["input"] = section
        result["points"] = {}
        for sp in m.split_points:
            tail = sessions.tail(sp.name)
            feats = _batched(sessions.head(sp.name), x)
            section = {}
            for c in names:
                bar.set_postfix_str(f"{sp.name} {c}")
                section[c] = codec_stats(feats, c, tail, ref_top1, labels)
                bar.update()
            result["points"][sp.name] = section
        if pixels is not None:
            assert m.preprocessing is not None
            ref = preprocess(pixels, m.preprocessing)
            ref_img = _batched(full, ref).argmax(axis=1)
            section = {}
            for c in image_names:
                bar.set_postfix_str(f"image {c}")
                section[c] = image_stats(pixels, c, m, full, ref, ref_img, labels)
                bar.update()
            result.update(image=section, image_codecs=image_names, num_images=len(pixels))
    validate_calibration(result, m)
    return result


def calibrate_bundle(
    bundle_dir: str | os.PathLike[str],
    inputs: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    codecs: Sequence[str] = DEFAULT_CODECS,
    progress: bool = True,
    images: np.ndarray | None = None,
    image_codecs: Sequence[str] = DEFAULT_IMAGE_CODECS,
) -> dict[str, Any]:
    """Measure and store ``calibration.json`` in the bundle (manifest.calibration, hashed)."""
    bundle = load_bundle(bundle_dir)
    result = measure(
        bundle,
        inputs,
        labels,
        codecs=codecs,
        progress=progress,
        images=images,
        image_codecs=image_codecs,
    )

    def mutate(root: Path, m: Manifest) -> Manifest:
        tmp = root / (FILENAME + ".tmp")
        tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, root / FILENAME)
        return replace(m, calibration=FILENAME)

    update_bundle(bundle.root, mutate)
    logger.info(
        "wrote %s for %s: %d codecs x %d split points on %d inputs",
        FILENAME,
        bundle.manifest.model_name,
        len(result["codecs"]),
        len(result["points"]),
        result["num_inputs"],
    )
    return result


def _check_stats(where: str, row: Any) -> None:
    if not isinstance(row, Mapping) or set(row) != set(STAT_KEYS):
        raise BundleError(f"calibration {where}: expected keys {sorted(STAT_KEYS)}")
    for k in STAT_KEYS:
        v = row[k]
        if v is None and k == "accuracy":
            continue
        if not isinstance(v, int | float) or isinstance(v, bool) or not v >= 0:
            raise BundleError(f"calibration {where}: {k}={v!r} must be a number >= 0")
    if row["agreement"] > 1 or (row["accuracy"] is not None and row["accuracy"] > 1):
        raise BundleError(f"calibration {where}: agreement/accuracy must be <= 1")


def validate_calibration(data: Any, manifest: Manifest | None = None) -> dict[str, Any]:
    """Check a calibration table's schema (and split names against ``manifest``)."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise BundleError(f"calibration: unsupported schema (expected {{'schema': {SCHEMA}, ...}})")
    codecs = data.get("codecs")
    if not isinstance(codecs, list) or not codecs:
        raise BundleError("calibration: 'codecs' must be a non-empty list")
    try:
        for c in codecs:
            Codec.parse(c)
    except CodecError as e:
        raise BundleError(f"calibration: {e}") from e
    if not isinstance(data.get("num_inputs"), int) or data["num_inputs"] <= 0:
        raise BundleError("calibration: 'num_inputs' must be a positive integer")
    sections: Iterable[tuple[str, Any]] = [("input", data.get("input"))]
    points = data.get("points")
    if not isinstance(points, dict):
        raise BundleError("calibration: 'points' must be an object")
    if manifest is not None and set(points) != {sp.name for sp in manifest.split_points}:
        raise BundleError("calibration: split points do not match the manifest")
    sections = [*sections, *((f"points.{k}", v) for k, v in points.items())]
    for where, sec in sections:
        if not isinstance(sec, dict) or set(sec) != set(codecs):
            raise BundleError(f"calibration {where}: must have one entry per codec")
        for c, row in sec.items():
            _check_stats(f"{where}.{c}", row)
    if "image" in data or "image_codecs" in data:
        _check_image_section(data, manifest)
    return data


def _check_image_section(data: dict[str, Any], manifest: Manifest | None) -> None:
    names, sec = data.get("image_codecs"), data.get("image")
    if not isinstance(names, list) or not names:
        raise BundleError("calibration: 'image_codecs' must be a non-empty list")
    try:
        for c in names:
            ImageCodec.parse(c)
    except CodecError as e:
        raise BundleError(f"calibration: {e}") from e
    if not isinstance(data.get("num_images"), int) or data["num_images"] <= 0:
        raise BundleError("calibration: 'num_images' must be a positive integer")
    if manifest is not None and manifest.preprocessing is None:
        raise BundleError("calibration: an image section needs a bundle with preprocessing")
    if not isinstance(sec, dict) or set(sec) != set(names):
        raise BundleError("calibration image: must have one entry per image codec")
    for c, row in sec.items():
        _check_stats(f"image.{c}", row)


def load_calibration(bundle: Bundle) -> dict[str, Any] | None:
    """The bundle's validated calibration table, or None when it has none."""
    try:
        data = bundle.calibration()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"calibration: cannot read {bundle.manifest.calibration}: {e}") from e
    return None if data is None else validate_calibration(data, bundle.manifest)
