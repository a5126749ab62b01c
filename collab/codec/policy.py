"""Pick the codec that minimises predicted transfer time under an accuracy budget.

predicted_ms = encode_ms + bytes * 8 / bandwidth_bps * 1000 + decode_ms, over codecs
whose top-1 agreement loss (1 - agreement) is within the budget; lossless codecs are
always eligible. Deterministic: ties (equal predicted time) go to the smaller name.
The same policy picks the image codec (JPEG quality, PNG) of a cloud-only request that
comes as a camera image, from the calibration's ``image`` section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from collab.codec.image import ImageCodec, is_image_codec
from collab.codec.spec import Codec
from collab.errors import CodecError, ConfigError

REQUIRED = ("bytes", "encode_ms", "decode_ms", "agreement")


@dataclass(frozen=True)
class CodecChoice:
    codec: str
    predicted_ms: float
    bytes: float


def _stat(name: str, row: Mapping[str, float], key: str) -> float:
    try:
        v = float(row[key])
    except KeyError:
        raise ConfigError(f"calibration entry {name!r} lacks {key!r}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"calibration entry {name!r}: {key} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"calibration entry {name!r}: {key}={v!r} must be finite and >= 0")
    return v


def predicted_ms(row: Mapping[str, float], bandwidth_bps: float) -> float:
    return (
        float(row["encode_ms"])
        + float(row["bytes"]) * 8000.0 / bandwidth_bps
        + float(row["decode_ms"])
    )


@dataclass(frozen=True)
class CodecRow:
    """One validated calibration entry."""

    name: str
    lossless: bool
    bytes: float
    encode_ms: float
    decode_ms: float
    agreement: float


def codec_rows(stats: Mapping[str, Mapping[str, float]]) -> tuple[CodecRow, ...]:
    """Validate a calibration table once (sorted by name, so ties go to the smaller
    name); ConfigError names the bad entry."""
    if not stats:
        raise ConfigError("empty codec calibration table")
    rows = []
    for name in sorted(stats):
        row = stats[name]
        try:
            codec: Codec | ImageCodec = (
                ImageCodec.parse(name) if is_image_codec(name) else Codec.parse(name)
            )
        except CodecError as e:
            raise ConfigError(f"calibration table: {e}") from e
        if not isinstance(row, Mapping):
            raise ConfigError(f"calibration entry {name!r} is not a mapping")
        vals = {k: _stat(name, row, k) for k in REQUIRED}
        if vals["agreement"] > 1.0:
            raise ConfigError(f"calibration entry {name!r}: agreement {vals['agreement']} > 1")
        rows.append(
            CodecRow(
                name=name,
                lossless=codec.lossless,
                bytes=vals["bytes"],
                encode_ms=vals["encode_ms"],
                decode_ms=vals["decode_ms"],
                agreement=vals["agreement"],
            )
        )
    return tuple(rows)


def allowed(row: CodecRow, accuracy_budget: float) -> bool:
    """Lossless codecs always; a lossy one if its top-1 agreement loss is within the budget."""
    return row.lossless or 1.0 - row.agreement <= accuracy_budget + 1e-12


def best_codec(
    rows: tuple[CodecRow, ...], *, bandwidth_bps: float, accuracy_budget: float
) -> tuple[CodecRow, float]:
    """The fastest of validated ``rows`` within the budget and its predicted ms: the
    per-request hot path of the decision engine, which validates each table once
    (:func:`codec_rows`)."""
    best: CodecRow | None = None
    best_ms = math.inf
    per_byte = 8000.0 / bandwidth_bps
    for r in rows:
        if not allowed(r, accuracy_budget):
            continue
        ms = r.encode_ms + r.bytes * per_byte + r.decode_ms
        if ms < best_ms:  # sorted rows: ties keep the smaller name
            best, best_ms = r, ms
    if best is None:
        raise ConfigError(
            f"no codec meets accuracy_budget={accuracy_budget} and the table has no lossless codec"
        )
    return best, best_ms


def choose_codec(
    stats: Mapping[str, Mapping[str, float]], *, bandwidth_bps: float, accuracy_budget: float
) -> CodecChoice:
    """``stats``: codec name -> STATS (see calibration.json). Raises ConfigError on an
    empty or invalid table, or when no codec fits the budget (no lossless entry)."""
    if not (
        isinstance(bandwidth_bps, int | float)
        and math.isfinite(bandwidth_bps)
        and bandwidth_bps > 0
    ):
        raise ConfigError(f"bandwidth_bps must be a positive number, got {bandwidth_bps!r}")
    if not (isinstance(accuracy_budget, int | float) and 0.0 <= accuracy_budget <= 1.0):
        raise ConfigError(f"accuracy_budget must be in [0, 1], got {accuracy_budget!r}")
    row, ms = best_codec(
        codec_rows(stats), bandwidth_bps=bandwidth_bps, accuracy_budget=accuracy_budget
    )
    return CodecChoice(codec=row.name, predicted_ms=ms, bytes=row.bytes)
