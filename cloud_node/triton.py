"""A Triton Inference Server model repository for the cloud side of a bundle.

Operators with GPUs can serve the tails and the full model on Triton instead of
``collab cloud``: every segment becomes an ONNX Runtime model (``onnxruntime_onnx``,
the verified bytes of the bundle) with dynamic batching, and the full model and every
tail an ensemble that chains its segments, named after the manifest's tensors:

- ``<model>_seg<i>``: segment ``i``, ``max_batch_size``, ``dynamic_batching`` with
  ``max_queue_delay_microseconds``, input/output names, data types and dims (without
  the batch dim) from the manifest;
- ``<model>_full``, ``<model>_tail_<split>``: ensembles of those (Triton batches inside
  the composing models; an ensemble only routes tensors).

What Triton cannot be told is refused with one ConfigError: a bundle without a batch
dimension (``dynamic_batch`` false: dynamic batching needs one), a dim that is not a
positive integer, a data type Triton's ONNX backend has no name for. Head variants and
full-model variants are edge-side and not exported. The edge client does not speak
KServe v2 (Triton's gRPC protocol): it needs a separate adapter (ModelInfer tensors in
place of feature frames, no ServerTiming or LoadReport), not written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from collab.bundle import Bundle, Manifest
from collab.errors import ConfigError

_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # TYPE_FP32 ...
    dims: tuple[int, ...]  # without the batch dim


@dataclass(frozen=True)
class TritonModel:
    """One directory of the repository: an ONNX model (``onnx`` = its bundle path) or an
    ensemble (``steps`` = the composing models, in order)."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    onnx: str | None = None
    steps: tuple[TritonModel, ...] = ()

    def config(self, *, max_batch_size: int, max_queue_delay_us: int) -> str:
        """The model's ``config.pbtxt``."""
        lines = [f'name: "{self.name}"']
        if self.onnx is not None:
            lines += ['platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size}"]
        else:
            lines += ['platform: "ensemble"', f"max_batch_size: {max_batch_size}"]
        lines += [_tensors("input", self.inputs), _tensors("output", self.outputs)]
        if self.onnx is not None:
            lines.append(
                f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}"
            )
        else:
            steps = ",\n".join(
                "    {\n"
                f'      model_name: "{s.name}"\n'
                "      model_version: -1\n"
                f'      input_map {{ key: "{s.inputs[0].name}" value: "{s.inputs[0].name}" }}\n'
                f'      output_map {{ key: "{s.outputs[0].name}" value: "{s.outputs[0].name}" }}\n'
                "    }"
                for s in self.steps
            )
            lines.append(f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}")
        return "\n".join(lines) + "\n"


def _tensors(kind: str, ts: tuple[Tensor, ...]) -> str:
    body = ",\n".join(
        f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n'
        f"    dims: [ {', '.join(map(str, t.dims))} ]\n  }}"
        for t in ts
    )
    return f"{kind} [\n{body}\n]"


def _dims(shape: tuple[int, ...], what: str) -> tuple[int, ...]:
    dims = tuple(shape[1:])
    if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ConfigError(
            f"{what}: shape {list(shape)} has a dim Triton's config cannot state "
            "(dynamic or not a positive integer); export a bundle with fixed shapes"
        )
    return dims


def _type(dtype: str, what: str) -> str:
    t = _TYPES.get(dtype)
    if t is None:
        raise ConfigError(f"{what}: data type {dtype!r} has no Triton name")
    return t


def repository(m: Manifest) -> list[TritonModel]:
    """Every model of the repository for ``m``: the segments, then the ensembles."""
    if not m.dynamic_batch:
        raise ConfigError(
            f"{m.model_name}: its ONNX files have a fixed batch size; Triton's dynamic "
            "batching needs a batch dimension (re-export with a dynamic batch)"
        )
    base = _NAME.sub("_", m.model_name)
    types = [m.input_dtype] + [""] * (len(m.segments) - 1)
    plain = [sp for sp in m.split_points if sp.bottleneck is None]
    for sp in plain:
        types[sp.boundary] = sp.feature_dtype
    segs: list[TritonModel] = []
    for i, seg in enumerate(m.segments):
        nxt = m.segments[i + 1] if i + 1 < len(m.segments) else None
        out_shape = nxt.input_shape if nxt is not None else m.output_shape
        what = f"{m.model_name} segment {i} ({seg.path})"
        in_type = _type(types[i] or "float32", what)
        out_type = _type((types[i + 1] if nxt is not None else "") or "float32", what)
        segs.append(
            TritonModel(
                f"{base}_seg{i}",
                (Tensor(seg.input, in_type, _dims(seg.input_shape, what)),),
                (Tensor(seg.output, out_type, _dims(out_shape, what)),),
                onnx=seg.path,
            )
        )

    def ensemble(name: str, steps: list[TritonModel]) -> TritonModel:
        return TritonModel(name, steps[0].inputs, steps[-1].outputs, steps=tuple(steps))

    models = [*segs, ensemble(f"{base}_full", segs)]
    models += [
        ensemble(f"{base}_tail_{_NAME.sub('_', sp.name)}", segs[sp.boundary :])
        for sp in plain  # a bottleneck's tail starts with its decoder: served by ORT nodes only
    ]
    return models


def export(bundle: Bundle, out: Path, *, max_batch_size: int, max_queue_delay_us: int) -> list[str]:
    """Write the repository of ``bundle`` into ``out`` (new or empty); the model names."""
    if max_batch_size < 1 or max_queue_delay_us < 0:
        raise ConfigError("max_batch_size must be >= 1 and max_queue_delay_us >= 0")
    models = repository(bundle.manifest)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty directory")
    for tm in models:
        d = out / tm.name
        (d / "1").mkdir(parents=True)  # an ensemble has an empty version directory
        cfg = tm.config(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us)
        (d / "config.pbtxt").write_text(cfg)
        if tm.onnx is not None:
            (d / "1" / "model.onnx").write_bytes(bundle.read_verified(tm.onnx))
    return [tm.name for tm in models]
