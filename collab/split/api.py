"""``split_model``: trace, cut, export, verify, profile and write a bundle."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
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

from collab import ort
from collab.bundle import Bundle, Manifest, SplitPoint, load_bundle, staging_dir, write_manifest
from collab.errors import ConfigError, SplitError
from collab.log import logger
from collab.split.export import export_onnx, export_with_cuts, extract_piece, max_abs_diff
from collab.split.graph import Cut, Granularity, analyse, carve, trace, with_cut_outputs
from collab.split.profile import profile_chain

INPUT_NAME = "input"
TORCH_ATOL = 1e-4  # tail(head(x)) vs model(x), both in PyTorch
ORT_RTOL = 1e-4  # ONNX Runtime vs PyTorch: max abs diff <= ORT_RTOL * max(1, max|ref|)


@dataclass(frozen=True)
class _Piece:
    cut: Cut
    head: str
    tail: str
    checks: dict[str, float]


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _stem(index: int, name: str) -> str:
    return f"{index:02d}_{_safe(name)}.onnx"


def _ort_close(got: np.ndarray, ref: torch.Tensor) -> tuple[bool, float]:
    d = max_abs_diff(got, ref)
    return d <= ORT_RTOL * max(1.0, float(ref.abs().max())), d


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
) -> Bundle:
    """Cut ``model`` at every valid point and write a verified, profiled bundle to ``out_dir``.

    ``example_input`` has a batch dimension; its first row is used for shapes and
    profiling. Cuts whose composition or ONNX Runtime check fails are refused (logged,
    listed in ``manifest.extra["refused"]``); nothing is written unless everything else
    succeeds.
    """
    threads = torch.get_num_threads()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.set_num_threads(1)  # checks are tiny; OpenMP spinning on a busy 2-core box is not
    # nn.TransformerEncoderLayer's fused fast path has no ONNX export; use the plain ops
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _split(model, example_input, out_dir, name=name, opset=opset, runs=runs,
                      progress=progress, granularity=granularity, extra=extra)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _split(
    model: nn.Module, example_input: torch.Tensor | np.ndarray, out_dir: str | os.PathLike[str], *,
    name: str, opset: int, runs: int, progress: bool, granularity: Granularity, extra: dict[str, Any] | None,
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
        name, an.positions, an.valid, len(an.cuts), granularity, an.dropped_interior, an.merged,
    )
    if len(an.cuts) < 2:
        logger.warning(
            "%s has only %d usable cut(s): at most positions several tensors cross "
            "(skip connections, concatenations, multiple uses of the input)", name, len(an.cuts),
        )
    with torch.no_grad():
        refb = model(xb)
    if not isinstance(refb, torch.Tensor) or refb.dtype != torch.float32:
        raise SplitError("the model must return one float32 tensor")
    ref1 = refb[:1]

    refused: dict[str, str] = {}
    with staging_dir(out) as tmp:
        (tmp / "head").mkdir()
        (tmp / "tail").mkdir()
        export_onnx(gm, x1, tmp / "full.onnx", input_name=INPUT_NAME, output_name="output", opset=opset)
        full_sess = ort.make_session(tmp / "full.onnx")
        for n in (1, xb.shape[0]):
            ok, d = _ort_close(ort.run(full_sess, xb[:n].numpy()), refb[:n])
            if not ok:
                raise SplitError(f"full.onnx: ONNX Runtime differs from PyTorch by {d:.3g} at batch {n}")

        pieces: list[_Piece] = []
        cut_names = [f"cut_{i}" for i in range(len(an.cuts))]
        with tempfile.TemporaryDirectory() as scratch:
            proto = export_with_cuts(
                with_cut_outputs(gm, an.cuts), x1, Path(scratch) / "cuts.onnx",
                input_name=INPUT_NAME, output_name="output", cut_names=cut_names, opset=opset,
            )
        ex = onnx.utils.Extractor(proto)
        for cut, tensor in tqdm(list(zip(an.cuts, cut_names, strict=True)), desc=f"export {name}", unit="cut", disable=not progress):
            try:
                pieces.append(_export_cut(gm, ex, cut, tensor, tmp, len(pieces), xb, refb, opset))
            except SplitError as e:
                refused[cut.name] = str(e)
                logger.warning("cut %s refused: %s", cut.name, e)
                for side in ("head", "tail"):
                    (tmp / side / _stem(len(pieces), cut.name)).unlink(missing_ok=True)

        meta: dict[str, Any] = {
            "granularity": granularity,
            "graph_positions": an.positions,
            "valid_cuts": an.valid,
            "refused": refused,
            "checks": {p.cut.name: p.checks for p in pieces},
            "profile_runs": runs,
            "torch_version": torch.__version__,
        }
        write_pieces(tmp, [(p.cut.name, p.head, p.tail, (1, *p.cut.shape[1:])) for p in pieces],
                     x1.numpy(), name=name, output_shape=tuple(ref1.shape), opset=opset, runs=runs,
                     progress=progress, extra={**meta, **(extra or {})})
    logger.info("%s: bundle with %d split points written to %s", name, len(pieces), out)
    return load_bundle(out)


def write_pieces(root: Path, pieces: list[tuple[str, str, str, tuple[int, ...]]], x1: np.ndarray, *,
                 name: str, output_shape: tuple[int, ...], opset: int, runs: int, progress: bool,
                 extra: dict[str, Any]) -> Manifest:
    """Profile ``full.onnx`` and every checked (cut name, head, tail, feature shape) piece
    pair in ``root`` and write the manifest: the end of every split, whatever the source."""
    logger.info("%s: profiling full model and %d cuts (%d runs each)", name, len(pieces), runs)
    full_ms, timed = profile_chain(
        [(root / head, root / tail) for _, head, tail, _ in pieces], root / "full.onnx", x1, runs=runs,
        desc=f"profile {name}", progress=progress,
    )
    points = tuple(
        SplitPoint(name=cut, index=i, head=head, tail=tail, feature_shape=shape, feature_dtype="float32",
                   feature_bytes=int(feat.nbytes), head_ms=round(head_ms, 4), tail_ms=round(tail_ms, 4))
        for i, ((cut, head, tail, shape), (head_ms, tail_ms, feat)) in enumerate(zip(pieces, timed, strict=True))
    )
    manifest = Manifest(
        model_name=name, input_name=INPUT_NAME, input_shape=tuple(x1.shape), input_dtype="float32",
        output_shape=output_shape, full="full.onnx", full_ms=round(full_ms, 4),
        input_bytes=int(x1.nbytes), split_points=points, opset=opset, dynamic_batch=True, extra=extra,
    )
    return write_manifest(root, manifest)


def _export_cut(
    gm: torch.fx.GraphModule, ex: onnx.utils.Extractor, cut: Cut, tensor: str, root: Path, index: int,
    xb: torch.Tensor, refb: torch.Tensor, opset: int,
) -> _Piece:
    """Check one cut in torch, extract its ONNX pieces, check them in ONNX Runtime.

    ``xb`` holds the example input in row 0 plus more rows, so one batched pass checks
    both the composition and the dynamic batch dimension."""
    head, tail = carve(gm, cut)
    with torch.no_grad():
        fb = head(xb)
        d_torch = max_abs_diff(tail(fb.clone()), refb)  # clone: tails may start in-place
    if d_torch > TORCH_ATOL:
        raise SplitError(f"tail(head(x)) differs from the model by {d_torch:.3g} > {TORCH_ATOL}")
    stem = _stem(index, cut.name)
    hrel, trel = f"head/{stem}", f"tail/{stem}"
    try:
        extract_piece(ex, root / hrel, inputs=(INPUT_NAME, INPUT_NAME), output=(tensor, "feature"), opset=opset)
        extract_piece(ex, root / trel, inputs=(tensor, "feature"), output=("output", "output"), opset=opset)
        d_ort = _check_ort(root / hrel, root / trel, xb, fb, refb)
    except SplitError as e:
        # e.g. a tail that recomputes the batch size from its own input: the pieces of the
        # whole-model export still read the model input there. Export the pieces directly.
        logger.debug("cut %s: extracted pieces unusable (%s); exporting head and tail", cut.name, e)
        with torch.no_grad():
            export_onnx(head, xb[:1], root / hrel, input_name=INPUT_NAME, output_name="feature", opset=opset)
            export_onnx(tail, fb[:1], root / trel, input_name="feature", output_name="output", opset=opset)
        d_ort = _check_ort(root / hrel, root / trel, xb, fb, refb)
    return _Piece(cut=cut, head=hrel, tail=trel, checks={"torch_max_abs": d_torch, "ort_max_abs": d_ort})


def _check_ort(hpath: Path, tpath: Path, xb: torch.Tensor, fb: torch.Tensor, refb: torch.Tensor) -> float:
    """ONNX Runtime on the written files vs PyTorch, at batch 1 and the full check batch."""
    hs, ts = ort.make_session(hpath), ort.make_session(tpath)
    d_ort = 0.0
    for n in (1, xb.shape[0]):
        h = ort.run(hs, xb[:n].numpy())
        ok_h, dh = _ort_close(h, fb[:n])
        ok_t, dt = _ort_close(ort.run(ts, h), refb[:n])
        if not (ok_h and ok_t):
            raise SplitError(f"ONNX Runtime differs from PyTorch at batch {n} (head {dh:.3g}, head+tail {dt:.3g})")
        d_ort = max(d_ort, dh, dt)
    return d_ort
