"""A model cut at its split points into consecutive segments, each weight in exactly one.

Segment i maps boundary i to boundary i + 1 (boundary 0 is the model input, the last one
its output, the ones between the kept cut tensors). Every segment is extracted from ONE
ONNX graph of the whole model and checked in ONNX Runtime the way the runtimes will run
it, as a chain: fed the previous segment's ORT output, at batch 1 and at the check batch,
its output must match the reference value of its end boundary (PyTorch, or the original
ONNX model). So every head (a prefix of the chain) is checked against the reference
feature and every tail against the reference output, and both with the dynamic batch.

A segment that cannot be extracted, loaded or matched is made again by ``export`` when
the caller has one (the PyTorch path exports the piece directly), else the cut at its end
is refused and the segment runs on to the next cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx.utils
from tqdm import tqdm

from collab import ort
from collab.errors import BundleError, SplitError
from collab.log import logger
from collab.split.export import extract_piece, max_abs_diff

SEGMENT_DIR = "segments"
ORT_RTOL = 1e-4  # ONNX Runtime vs the reference: max abs diff <= ORT_RTOL * max(1, max|ref|)

# (start tensor, end tensor, path): write that piece of the model as a one-input ONNX file
Exporter = Callable[[str, str, Path], None]


@dataclass(frozen=True)
class Boundary:
    """A cut tensor the model may be split at."""

    name: str  # split point name
    tensor: str  # tensor name in the source graph
    shape: tuple[int, ...]  # at batch 1


@dataclass(frozen=True)
class SegmentFile:
    path: str  # relative to the bundle root
    input: str
    output: str


@dataclass(frozen=True)
class Segmented:
    segments: list[SegmentFile]
    cuts: list[Boundary]  # the kept ones, segments[k] starts at cuts[k - 1]
    ort_max_abs: dict[str, float]  # per kept cut: worst diff of its head and of the output


def ort_close(got: np.ndarray, ref: np.ndarray) -> tuple[bool, float]:
    d = max_abs_diff(got, ref)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return d <= ORT_RTOL * max(1.0, scale), d


def _name(index: int, end: str) -> str:
    return f"{SEGMENT_DIR}/{index:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', end)}.onnx"


def _check(
    path: Path, xs: Sequence[np.ndarray], want: np.ndarray
) -> tuple[list[np.ndarray], float]:
    """Run the written segment on each batch of ``xs``; its outputs and the worst diff."""
    try:
        sess = ort.make_session(path, lean=True)
        ys = [ort.run(sess, x) for x in xs]
    except (BundleError, ort.InferenceError) as e:
        raise SplitError(f"{path.name}: ONNX Runtime cannot run it: {e}") from e
    worst = 0.0
    for x, y in zip(xs, ys, strict=True):
        ok, d = ort_close(y, want[: len(x)])
        if not ok:
            raise SplitError(
                f"ONNX Runtime differs from the reference by {d:.3g} at batch {len(x)}"
            )
        worst = max(worst, d)
    return ys, worst


def _make(
    ex: onnx.utils.Extractor,
    start: str,
    end: str,
    path: Path,
    xs: Sequence[np.ndarray],
    want: np.ndarray,
    opset: int,
    export: Exporter | None,
) -> tuple[list[np.ndarray], float]:
    try:
        extract_piece(ex, path, inputs=(start, start), output=(end, end), opset=opset)
        return _check(path, xs, want)
    except SplitError as e:
        if export is None:
            raise
        # e.g. a piece that recomputes the batch size from the model input: in the
        # whole-model graph it still reads that input. Export the piece directly.
        logger.debug("segment %s -> %s: extracted piece unusable (%s); exporting it", start, end, e)
        path.unlink(missing_ok=True)
        export(start, end, path)
        return _check(path, xs, want)


def build_segments(
    ex: onnx.utils.Extractor,
    cuts: Sequence[Boundary],
    root: Path,
    x: np.ndarray,
    ref: Mapping[str, np.ndarray],
    *,
    input_name: str,
    output_name: str,
    opset: int,
    refused: dict[str, str],
    export: Exporter | None = None,
    desc: str = "segments",
    progress: bool = False,
) -> Segmented:
    """Write and check the segments between ``cuts`` in ``root/segments``.

    ``x`` is the check batch (row 0 the example input); ``ref`` holds the reference value
    of every cut tensor and of the output on it. Refused cuts are added to ``refused``;
    SplitError if the model itself fails (no segment ends at the output)."""
    (root / SEGMENT_DIR).mkdir()
    kept = list(cuts)
    values: list[list[np.ndarray]] = [[x[:1], x]]  # ORT value of each boundary so far, per batch
    files: list[SegmentFile] = []
    diffs: dict[str, float] = {}
    with tqdm(total=len(kept) + 1, desc=desc, unit="segment", disable=not progress) as bar:
        while len(files) <= len(kept):
            i = len(files)
            start = input_name if i == 0 else kept[i - 1].tensor
            end = output_name if i == len(kept) else kept[i].tensor
            rel = _name(i, kept[i].name if i < len(kept) else output_name)
            try:
                ys, d = _make(ex, start, end, root / rel, values[i], ref[end], opset, export)
            except SplitError as e:
                (root / rel).unlink(missing_ok=True)
                if i == 0 and not kept:
                    raise SplitError(f"the whole model: {e}") from e
                # refuse the cut this segment ends at; at the output, the one it starts at
                drop = i if i < len(kept) else i - 1
                refused[kept[drop].name] = str(e)
                logger.warning("cut %s refused: %s", kept[drop].name, e)
                del kept[drop]
                if drop < i:
                    (root / files.pop().path).unlink()
                    values.pop()
                bar.update()
                continue
            files.append(SegmentFile(path=rel, input=start, output=end))
            values.append(ys)
            diffs[end] = d
            bar.update()
    worst_out = diffs[output_name]
    return Segmented(
        segments=files,
        cuts=kept,
        ort_max_abs={c.name: max(diffs[c.tensor], worst_out) for c in kept},
    )
