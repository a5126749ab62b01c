"""``split_model``: trace, cut, export, verify, profile and write a bundle of segments."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from collab.extras import missing

try:
    import onnx
    import onnx.utils
    import torch
    from torch import nn
except ImportError as _e:
    raise missing(_e, __name__) from _e
from tqdm import tqdm

from collab.bundle import (
    Bundle,
    Manifest,
    Preprocessing,
    Segment,
    SplitPoint,
    load_bundle,
    staging_dir,
    write_manifest,
)
from collab.errors import ConfigError, SplitError
from collab.log import logger
from collab.split.export import export_onnx, export_with_cuts, max_abs_diff
from collab.split.graph import Cut, Granularity, analyse, carve, trace, with_cut_outputs
from collab.split.profile import profile_chain
from collab.split.segments import Boundary, Segmented, build_segments

INPUT_NAME = "input"
OUTPUT_NAME = "output"
TORCH_ATOL = 1e-4  # tail(head(x)) vs model(x), both in PyTorch


def _as_input(example_input: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(example_input)
    if not x.is_floating_point():
        raise ConfigError(f"example input must be a float tensor, got {x.dtype}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ConfigError(f"example input needs a batch dimension, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float32).contiguous()


def _verify_batch(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` inputs for the dynamic-batch check: the given ones, else seeded perturbations."""
    if x.shape[0] >= n:
        return x[:n].clone()
    g = torch.Generator().manual_seed(0)
    reps = x[:1].repeat(n, *([1] * (x.dim() - 1)))
    noise = torch.randn(reps.shape, generator=g) * (float(x.std()) if x.numel() > 1 else 1.0) * 0.1
    return torch.cat([x, (reps + noise)[x.shape[0] :]])


def split_model(
    model: nn.Module,
    example_input: torch.Tensor | np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    opset: int = 17,
    runs: int = 20,
    progress: bool = True,
    granularity: Granularity = "block",
    extra: dict[str, Any] | None = None,
    preprocessing: Preprocessing | None = None,
) -> Bundle:
    """Cut ``model`` at every valid point and write a verified, profiled bundle to ``out_dir``.

    ``example_input`` has a batch dimension; its first row is used for shapes and
    profiling. Cuts whose composition or ONNX Runtime check fails are refused (logged,
    listed in ``manifest.extra["refused"]``); nothing is written unless everything else
    succeeds. ``preprocessing``: how camera images become its input, when it takes
    images (recorded in the manifest for ``Client.infer_image`` and image codecs).
    """
    threads = torch.get_num_threads()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.set_num_threads(1)  # checks are tiny; OpenMP spinning on a busy 2-core box is not
    # nn.TransformerEncoderLayer's fused fast path has no ONNX export; use the plain ops
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _split(
            model,
            example_input,
            out_dir,
            name=name,
            opset=opset,
            runs=runs,
            progress=progress,
            granularity=granularity,
            extra=extra,
            preprocessing=preprocessing,
        )
    finally:
        torch.set_num_threads(threads)
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _split(
    model: nn.Module,
    example_input: torch.Tensor | np.ndarray,
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    opset: int,
    runs: int,
    progress: bool,
    granularity: Granularity,
    extra: dict[str, Any] | None,
    preprocessing: Preprocessing | None,
) -> Bundle:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if runs < 1:
        raise ConfigError("runs must be >= 1")
    if granularity not in ("block", "all"):
        raise ConfigError(f"granularity must be 'block' or 'all', not {granularity!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output directory {out} exists and is not empty")
    if model.training:
        logger.warning("model was in training mode; splitting it in eval mode")
    model.eval()
    x = _as_input(example_input)
    x1 = x[:1]
    xb = _verify_batch(x, 3)

    gm = trace(model, x1)
    an = analyse(gm, granularity=granularity)
    logger.info(
        "%s: %d graph positions, %d valid cuts (one tensor crossing); kept %d at %s granularity "
        "(%d inside blocks, %d redundant before elementwise ops)",
        name,
        an.positions,
        an.valid,
        len(an.cuts),
        granularity,
        an.dropped_interior,
        an.merged,
    )
    if len(an.cuts) < 2:
        logger.warning(
            "%s has only %d usable cut(s): at most positions several tensors cross "
            "(skip connections, concatenations, multiple uses of the input)",
            name,
            len(an.cuts),
        )
    with torch.no_grad():
        refb = model(xb)
    if not isinstance(refb, torch.Tensor) or refb.dtype != torch.float32:
        raise SplitError("the model must return one float32 tensor")
    ref1 = refb[:1]

    refused: dict[str, str] = {}
    with staging_dir(out) as tmp:
        cut_names = [f"cut_{i}" for i in range(len(an.cuts))]
        with tempfile.TemporaryDirectory() as scratch:
            proto = export_with_cuts(
                with_cut_outputs(gm, an.cuts),
                x1,
                Path(scratch) / "cuts.onnx",
                input_name=INPUT_NAME,
                output_name=OUTPUT_NAME,
                cut_names=cut_names,
                opset=opset,
            )
        ref = {OUTPUT_NAME: refb.numpy()}
        bounds: list[Boundary] = []
        torch_checks: dict[str, float] = {}
        cut_of: dict[str, Cut] = {}
        for cut, tensor in tqdm(
            list(zip(an.cuts, cut_names, strict=True)),
            desc=f"check {name}",
            unit="cut",
            disable=not progress,
        ):
            try:
                fb, torch_checks[cut.name] = _torch_check(gm, cut, xb, refb)
            except SplitError as e:
                refused[cut.name] = str(e)
                logger.warning("cut %s refused: %s", cut.name, e)
                continue
            ref[tensor], cut_of[tensor] = fb.numpy(), cut
            bounds.append(Boundary(name=cut.name, tensor=tensor, shape=(1, *cut.shape[1:])))

        def export(start: str, end: str, path: Path) -> None:
            piece = gm if end == OUTPUT_NAME else carve(gm, cut_of[end])[0]
            if start != INPUT_NAME:
                piece = carve(piece, cut_of[start])[1]
            example = x1 if start == INPUT_NAME else torch.from_numpy(ref[start][:1])
            export_onnx(piece, example, path, input_name=start, output_name=end, opset=opset)

        seg = build_segments(
            onnx.utils.Extractor(proto),
            bounds,
            tmp,
            xb.numpy(),
            ref,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            opset=opset,
            refused=refused,
            export=export,
            desc=f"segments {name}",
            progress=progress,
        )
        meta: dict[str, Any] = {
            "granularity": granularity,
            "graph_positions": an.positions,
            "valid_cuts": an.valid,
            "refused": refused,
            "checks": {
                c.name: {
                    "torch_max_abs": torch_checks[c.name],
                    "ort_max_abs": seg.ort_max_abs[c.name],
                }
                for c in seg.cuts
            },
            "profile_runs": runs,
            "torch_version": torch.__version__,
        }
        write_bundle(
            tmp,
            seg,
            x1.numpy(),
            name=name,
            output_shape=tuple(ref1.shape),
            opset=opset,
            runs=runs,
            progress=progress,
            extra={**meta, **(extra or {})},
            preprocessing=preprocessing,
        )
    logger.info("%s: bundle with %d split points written to %s", name, len(seg.cuts), out)
    return load_bundle(out)


def write_bundle(
    root: Path,
    seg: Segmented,
    x1: np.ndarray,
    *,
    name: str,
    output_shape: tuple[int, ...],
    opset: int,
    runs: int,
    progress: bool,
    extra: dict[str, Any],
    preprocessing: Preprocessing | None = None,
) -> Manifest:
    """Profile the checked segments in ``root`` and write the manifest: the end of every
    split, whatever the source."""
    logger.info("%s: profiling %d segments (%d runs each)", name, len(seg.segments), runs)
    timed = profile_chain(
        [root / s.path for s in seg.segments],
        x1,
        runs=runs,
        desc=f"profile {name}",
        progress=progress,
    )
    ms = [t for t, _ in timed]
    shapes = [tuple(x1.shape), *(tuple(y.shape) for _, y in timed[:-1])]
    segments = tuple(
        Segment(path=s.path, input=s.input, output=s.output, input_shape=shape, ms=round(t, 4))
        for s, shape, t in zip(seg.segments, shapes, ms, strict=True)
    )
    points = tuple(
        SplitPoint(
            name=c.name,
            index=k,
            boundary=k + 1,
            feature_shape=c.shape,
            feature_dtype="float32",
            feature_bytes=int(timed[k][1].nbytes),
            head_ms=round(sum(ms[: k + 1]), 4),
            tail_ms=round(sum(ms[k + 1 :]), 4),
        )
        for k, c in enumerate(seg.cuts)
    )
    manifest = Manifest(
        model_name=name,
        input_name=INPUT_NAME,
        input_shape=tuple(x1.shape),
        input_dtype="float32",
        output_shape=output_shape,
        full_ms=round(sum(ms), 4),
        input_bytes=int(x1.nbytes),
        segments=segments,
        split_points=points,
        opset=opset,
        dynamic_batch=True,
        extra=extra,
        preprocessing=preprocessing,
    )
    return write_manifest(root, manifest)


def _torch_check(
    gm: torch.fx.GraphModule, cut: Cut, xb: torch.Tensor, refb: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The head output of ``cut`` on ``xb``, once tail(head(x)) matches the model in
    PyTorch (``xb`` holds the example input in row 0 plus more rows, so one batched pass
    checks the dynamic batch dimension too)."""
    head, tail = carve(gm, cut)
    with torch.no_grad():
        fb = head(xb)
        d_torch = max_abs_diff(tail(fb.clone()), refb)  # clone: tails may start in-place
    if d_torch > TORCH_ATOL:
        raise SplitError(f"tail(head(x)) differs from the model by {d_torch:.3g} > {TORCH_ATOL}")
    return fb, d_torch
