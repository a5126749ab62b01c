"""Add a learned bottleneck (a new split point) or an early exit to a bundle.

The teacher is the bundle itself, frozen: its ONNX head gives the cut tensors and its
full model the logits of the training inputs (unlabeled; training source images only),
and the PyTorch model behind the bundle, cut at the same point, gives the differentiable
tail the output-distillation term needs. What is recorded is measured on the exported
ONNX files with ONNX Runtime on the held-out inputs: the bottleneck's codec rows (bytes,
agreement per codec) go into the calibration table like any split point's, the exit's
``tau`` is calibrated there (:func:`calibrate_tau`).

Installing is atomic: files are written under content-hashed names (nothing existing is
overwritten), the calibration table under a new name, then ``manifest.json`` is
replaced in one rename; an interruption before that leaves the bundle as it was and
removes what was staged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from collab.bundle import (
    Bottleneck,
    Bundle,
    EarlyExit,
    Manifest,
    SplitPoint,
    confidence,
    load_bundle,
    update_bundle,
)
from collab.chain import BundleSessions
from collab.codec.calibrate import codec_stats, load_calibration, validate_calibration
from collab.errors import ConfigError
from collab.log import logger
from collab.optimize.learned import LearnConfig, TrainLog, train_bottleneck, train_exit
from collab.optimize.measure import interleaved_latency_ms, run_batched, top1
from collab.optimize.samples import Samples
from collab.optimize.torchmodel import export_onnx

LEARNED_DIR = "learned"
MIN_FEATURE_BYTES = 4096
DEFAULT_LEARN = LearnConfig()  # below this a feature is already as small as a code would be


def bottleneck_name(cut: str, code_channels: int, bits: int) -> str:
    return f"{cut}~bn{code_channels}x{bits}"


def check_cut(m: Manifest, cut: str, *, what: str = "a bottleneck") -> SplitPoint:
    """The plain split point ``cut``, or ConfigError with the reason it cannot take one."""
    names = {sp.name for sp in m.split_points}
    if cut not in names:
        raise ConfigError(
            f"cut {cut!r} cannot take {what}: it is not a split point of {m.model_name} "
            "(a cut where several tensors cross is never one; known: "
            f"{', '.join(sorted(names))})"
        )
    sp = m.split(cut)
    if sp.bottleneck is not None:
        raise ConfigError(f"cut {cut!r} cannot take {what}: it is a bottleneck already")
    if len(sp.feature_shape) != 4 or sp.feature_dtype != "float32":
        raise ConfigError(
            f"cut {cut!r} cannot take {what}: its tensor is {sp.feature_dtype}"
            f"{list(sp.feature_shape)}, not a float32 (N, C, H, W) feature map"
        )
    if what == "a bottleneck" and sp.feature_bytes < MIN_FEATURE_BYTES:
        raise ConfigError(
            f"cut {cut!r} cannot take {what}: its tensor is {sp.feature_bytes} bytes, too small "
            f"to compress (< {MIN_FEATURE_BYTES})"
        )
    return sp


def torch_tail(model: nn.Module, m: Manifest, cut: str) -> nn.Module:
    """The PyTorch tail of ``model`` at the bundle's cut ``cut`` (same tracing and names
    as ``collab split``)."""
    from collab.split.graph import analyse, carve, trace

    example = torch.zeros((2, *m.input_shape[1:]))
    gm = trace(model.eval(), example)
    granularity = m.extra.get("granularity", "block")
    cuts = {c.name: c for c in analyse(gm, granularity=granularity).cuts}
    if cut not in cuts:
        raise ConfigError(f"the model given does not have the bundle's cut {cut!r}")
    return carve(gm, cuts[cut])[1]


def calibrate_tau(conf: np.ndarray, agree: np.ndarray, target: float) -> float:
    """The lowest threshold whose exited set (``conf >= tau``) agrees at least ``target``
    on these inputs; above every confidence (never exit) when no set does."""
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"exit target agreement must be in (0, 1], got {target}")
    if len(conf) != len(agree) or len(conf) == 0:
        raise ConfigError("tau calibration needs as many agreements as confidences (>= 1)")
    order = np.argsort(-conf, kind="stable")
    c, a = conf[order], agree[order].astype(np.float64)
    ok = np.cumsum(a) / np.arange(1, len(a) + 1) >= target
    # a threshold must take every input tied with the last one it takes
    last_of_tie = np.r_[c[1:] != c[:-1], True]
    good = np.flatnonzero(ok & last_of_tie)
    return float(c[good[-1]]) if len(good) else float(np.nextafter(np.float32(1.0), 2.0))


@dataclass(frozen=True, kw_only=True)
class Added:
    """What one run added (or would have) and its held-out measurements."""

    name: str
    log: TrainLog
    stats: dict[str, Any]  # bottleneck: codec -> stats row; exit: tau, rate, agreement


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


@contextmanager
def _staging(root: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=".learned.", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(
    root: Path,
    staged: Mapping[str, Path],
    change: Callable[[Manifest], Manifest],
    calibration: dict[str, Any] | None,
) -> Bundle:
    """Move ``staged`` (final rel path -> temp file) in, write the new calibration table
    under a new name, switch the manifest; on failure remove what was moved."""
    moved: list[Path] = []
    old_cal: str | None = None

    def mutate(rootp: Path, m: Manifest) -> Manifest:
        nonlocal old_cal
        for rel, src in staged.items():
            dst = rootp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            moved.append(dst)
        new = change(m)
        if calibration is not None:
            text = json.dumps(validate_calibration(calibration, new), indent=1, sort_keys=True)
            rel = f"calibration-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
            (rootp / rel).write_text(text + "\n")
            moved.append(rootp / rel)
            old_cal = m.calibration if m.calibration != rel else None
            new = replace(new, calibration=rel)
        keep = new.model_files() | ({new.calibration} if new.calibration else set())
        return replace(new, files={k: v for k, v in new.files.items() if k in keep})

    try:
        b = update_bundle(root, mutate)
    except BaseException:
        for p in moved:
            p.unlink(missing_ok=True)
        learned = root / LEARNED_DIR
        if learned.is_dir() and not any(learned.iterdir()):
            learned.rmdir()
        raise
    if old_cal:
        (root / old_cal).unlink(missing_ok=True)
    for rel in set(_listed_learned(root)) - set(b.manifest.files):
        (root / rel).unlink(missing_ok=True)  # files of a replaced bottleneck/exit
    return b


def _listed_learned(root: Path) -> list[str]:
    d = root / LEARNED_DIR
    return [p.relative_to(root).as_posix() for p in d.iterdir()] if d.is_dir() else []


def _ms(path: Path, x1: np.ndarray) -> float:
    return interleaved_latency_ms([path], x1, runs=20)[0]


def add_bottleneck(
    root: str | os.PathLike[str],
    model: nn.Module,
    cut: str,
    train: Samples,
    held_out: Samples,
    *,
    code_channels: int = 8,
    bits: int = 4,
    cfg: LearnConfig = DEFAULT_LEARN,
    progress: bool = True,
) -> Added:
    """Train a bottleneck at ``cut`` on ``train``, measure it on ``held_out`` with the
    calibration table's codecs and add it as split point ``<cut>~bn<C>x<bits>``."""
    rootp = Path(root)
    b = load_bundle(rootp)
    m = b.manifest
    sp = check_cut(m, cut)
    cal = load_calibration(b)
    if cal is None:
        raise ConfigError(
            f"{rootp}: the bundle has no codec calibration; run collab calibrate first "
            "(a bottleneck's bytes and agreement are rows of that table)"
        )
    if not 1 <= code_channels < sp.feature_shape[1] or bits not in (2, 3, 4, 8):
        raise ConfigError(f"need 1 <= code channels < {sp.feature_shape[1]} and bits in 2, 3, 4, 8")
    sessions = BundleSessions(b)
    feats = run_batched(sessions.head(cut), train.x)
    logits = run_batched(sessions.full(), train.x)
    tail = torch_tail(model, m, cut)
    enc, dec, log = train_bottleneck(
        tail, feats, logits, code_channels=code_channels, bits=bits, cfg=cfg, progress=progress
    )
    del feats, logits
    name = bottleneck_name(cut, code_channels, bits)
    with _staging(rootp) as tmp:
        f1 = torch.zeros((1, *sp.feature_shape[1:]))
        enc_p = export_onnx(enc, f1, tmp / "encoder.onnx")
        dec_p = export_onnx(dec, enc(f1).detach(), tmp / "decoder.onnx")
        ref = top1(run_batched(sessions.full(), held_out.x))
        cut_x = run_batched(sessions.head(cut), held_out.x)
        code = run_batched(enc_p, cut_x)
        base_tail = sessions.tail(cut)

        def downstream(c: np.ndarray) -> np.ndarray:
            return base_tail(run_batched(dec_p, c))

        rows = {c: codec_stats(code, c, downstream, ref, held_out.y) for c in cal["codecs"]}
        enc_ms, dec_ms = _ms(enc_p, cut_x[:1]), _ms(dec_p, code[:1])
        tag = _digest(enc_p, dec_p)
        enc_rel = f"{LEARNED_DIR}/{name}.{tag}.encoder.onnx"
        dec_rel = f"{LEARNED_DIR}/{name}.{tag}.decoder.onnx"
        new_sp = SplitPoint(
            name=name,
            index=sp.index,
            boundary=sp.boundary,
            feature_shape=(1, *code.shape[1:]),
            feature_dtype="float32",
            feature_bytes=int(code[:1].nbytes),
            head_ms=sp.head_ms + enc_ms,
            tail_ms=sp.tail_ms + dec_ms,
            bottleneck=Bottleneck(
                base=cut,
                encoder=enc_rel,
                decoder=dec_rel,
                encoder_ms=enc_ms,
                decoder_ms=dec_ms,
                train={**asdict(log), "held_out": len(held_out)},
            ),
        )

        def change(mm: Manifest) -> Manifest:
            kept = tuple(p for p in mm.split_points if p.name != name)
            return replace(mm, split_points=(*kept, new_sp))

        points = {k: v for k, v in cal["points"].items() if k != name}
        new_cal = {**cal, "points": {**points, name: rows}}
        _install(rootp, {enc_rel: enc_p, dec_rel: dec_p}, change, new_cal)
    logger.info("added bottleneck %s (%d steps, %.0f s)", name, log.steps, log.seconds)
    return Added(name=name, log=log, stats=rows)


def add_exit(
    root: str | os.PathLike[str],
    cut: str,
    train: Samples,
    held_out: Samples,
    *,
    target: float = 0.995,
    hidden: int = 512,
    cfg: LearnConfig = DEFAULT_LEARN,
    progress: bool = True,
) -> Added:
    """Train an exit head at ``cut`` on ``train``, calibrate its ``tau`` on ``held_out``
    (exited inputs agree with the full model >= ``target``) and add it to the bundle."""
    rootp = Path(root)
    b = load_bundle(rootp)
    m = b.manifest
    sp = check_cut(m, cut, what="an early exit")
    sessions = BundleSessions(b)
    head = train_exit(
        run_batched(sessions.head(cut), train.x),
        run_batched(sessions.full(), train.x),
        cfg=cfg,
        hidden=hidden,
        progress=progress,
    )
    exit_head, log = head
    with _staging(rootp) as tmp:
        path = export_onnx(exit_head, torch.zeros((1, *sp.feature_shape[1:])), tmp / "exit.onnx")
        cut_x = run_batched(sessions.head(cut), held_out.x)
        out = run_batched(path, cut_x)
        agree = top1(out) == top1(run_batched(sessions.full(), held_out.x))
        conf = confidence(out)
        tau = calibrate_tau(conf, agree, target)
        taken = conf >= tau
        rate = float(taken.mean())
        agr = float(agree[taken].mean()) if taken.any() else 1.0
        rel = f"{LEARNED_DIR}/exit.{cut}.{_digest(path)}.onnx"
        e = EarlyExit(
            name=cut,
            split=cut,
            path=rel,
            ms=_ms(path, cut_x[:1]),
            tau=tau,
            target=target,
            rate=rate,
            agreement=agr,
            num_calibration=len(held_out),
            train={**asdict(log), "hidden": hidden},
        )

        def change(mm: Manifest) -> Manifest:
            return replace(mm, exits=(*(x for x in mm.exits if x.name != e.name), e))

        _install(rootp, {rel: path}, change, None)
    stats = {"tau": tau, "rate": rate, "agreement": agr, "n": len(held_out)}
    logger.info("added early exit at %s: tau %.4f, rate %.3f, agreement %.4f", cut, tau, rate, agr)
    return Added(name=cut, log=log, stats=stats)
