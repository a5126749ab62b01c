"""ONNX Runtime quantization of single-input ONNX models (heads, full models).

Methods (the variant name is the method name):

* ``int8_static`` — QDQ, per-channel weights, activations calibrated (MinMax) on
  sample inputs. The fast one: ORT fuses QDQ pairs into integer kernels (VNNI).
* ``int8_dynamic`` — weights only, activation scales computed at run time; no
  calibration data, helps MatMul/Gemm-heavy models, little for convolutions.
* ``fp16`` — halves the file; on x86 CPUs ORT mostly inserts casts, so it is kept
  only when it passes the agreement check and the tier asks for size.

onnxruntime errors are wrapped into :class:`~collab.errors.BundleError` here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from collab.errors import BundleError, ConfigError

METHODS = ("int8_static", "int8_dynamic", "fp16")


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds calibration samples one batch at a time (ORT's CalibrationDataReader)."""

    def __init__(self, input_name: str, samples: np.ndarray, batch: int = 16) -> None:
        self._input_name = input_name
        # equal-sized batches: ORT's histogram calibrators stack per-batch arrays
        self._batch = min(batch, len(samples))
        n = len(samples) - len(samples) % self._batch
        self._samples = np.ascontiguousarray(samples[:n], dtype=np.float32)
        self._it: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self._samples), self._batch):
            yield {self._input_name: self._samples[i : i + self._batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def _input_name(path: Path) -> str:
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise BundleError(f"{path.name}: expected one input, found {names}")
    return names[0]


def _preprocessed(src: Path, tmp: Path) -> Path:
    """ORT's recommended pre-pass (shape inference + graph optimization) so BatchNorm is
    folded into Conv before weights are quantized per channel."""
    out = tmp / "pre.onnx"
    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    except Exception as e:  # some graphs defeat the optimizer; quantize the original then
        logging.getLogger("collab").debug("quant_pre_process failed for %s: %s", src.name, e)
        return src
    return out


CALIBRATION_METHODS = {
    "minmax": (CalibrationMethod.MinMax, {}),
    # clips the 0.01 % outliers: on the ResNet example (5 cut points, 450 held-out inputs)
    # mean agreement 0.991 vs 0.980 at 99.999 and 0.969 at 99.9 (docs/optimize.md)
    "percentile": (CalibrationMethod.Percentile, {"CalibPercentile": 99.99}),
    "entropy": (CalibrationMethod.Entropy, {}),
}


def quantize_int8_static(
    src: Path,
    dst: Path,
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    method: str = "percentile",
) -> None:
    if len(calibration) == 0:
        raise ConfigError("static INT8 quantization needs at least one calibration input")
    if method not in CALIBRATION_METHODS:
        raise ConfigError(
            f"unknown calibration method {method!r} (choose from {', '.join(CALIBRATION_METHODS)})"
        )
    calib_method, calib_opts = CALIBRATION_METHODS[method]
    with tempfile.TemporaryDirectory() as td:
        pre = _preprocessed(src, Path(td))
        reader = ArrayCalibrationReader(_input_name(pre), calibration)
        quantize_static(
            str(pre),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib_method,
            # 7-bit weights: U8S8 kernels on x86 CPUs without VNNI (AVX2, older AVX-512)
            # accumulate pairs in 16 bits and saturate with full-range weights, so the
            # same file agreed 100 % on one machine and 96 % on another. The edge device
            # is not the machine that quantized, so the file must be right on both.
            reduce_range=True,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, **calib_opts},
        )


def quantize_int8_dynamic(
    src: Path, dst: Path, calibration: np.ndarray | None = None, **_: Any
) -> None:
    with tempfile.TemporaryDirectory() as td:
        pre = _preprocessed(src, Path(td))
        quantize_dynamic(
            str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8, reduce_range=True
        )  # portable across CPUs (see quantize_int8_static)


def convert_fp16(src: Path, dst: Path, calibration: np.ndarray | None = None, **_: Any) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types: the bundle contract is float32 in and out, whatever is inside
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(dst))


_IMPL: dict[str, Callable[..., None]] = {
    "int8_static": quantize_int8_static,
    "int8_dynamic": quantize_int8_dynamic,
    "fp16": convert_fp16,
}


def check_methods(methods: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown quantization method(s) {unknown}; choose from {list(METHODS)}")
    return tuple(dict.fromkeys(methods))


def quantize(
    method: str,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: np.ndarray,
    *,
    calibrate: str = "percentile",
) -> Path:
    """Write the ``method`` variant of ``src`` to ``dst``; BundleError if ORT fails.
    ``calibrate`` picks how static INT8 sets activation ranges (see CALIBRATION_METHODS)."""
    check_methods([method])
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:  # ORT's calibrators print progress to stdout and warn on the root logger
        with contextlib.redirect_stdout(io.StringIO()), _quiet_ort_quantizer():
            _run_method(method, src, dst, calibration, calibrate)
    except (ConfigError, BundleError):
        raise
    except Exception as e:  # onnxruntime.quantization raises plain exceptions
        raise BundleError(f"{method} quantization of {src.name} failed: {e}") from e
    return dst


class _DropQuantizerChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _quiet_ort_quantizer() -> Iterator[None]:
    """onnxruntime.quantization warns through the root logger about things that are
    expected here (e.g. no per-channel axis for a LayerNorm weight); keep its errors."""
    f = _DropQuantizerChatter()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def _run_method(method: str, src: Path, dst: Path, calibration: np.ndarray, calibrate: str) -> None:
    if method == "int8_static":
        quantize_int8_static(src, dst, calibration, method=calibrate)
    else:
        _IMPL[method](src, dst, calibration)
