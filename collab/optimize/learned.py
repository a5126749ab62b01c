"""Learned parts trained by distillation from a frozen teacher: a bottleneck (encoder on
the head side, decoder on the tail side) and an early-exit head at a cut.

Both train on the teacher's cut tensors and logits of unlabeled inputs, precomputed
once, so a step costs only the small new modules (and, for the bottleneck's output term,
one pass through the frozen tail). The bottleneck trains through the project's own
quantizer: per sample and channel min/max to ``bits`` levels (``intN`` in
:mod:`collab.codec.quantize`), rounded with a straight-through gradient, so the code it
learns is one the shipped codecs reproduce. Threads are capped: the machine is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from collab.errors import ConfigError
from collab.optimize.train import distillation_loss


@dataclass(frozen=True, kw_only=True)
class LearnConfig:
    """One training run; the wall-clock budget ends it early (the step count is a cap)."""

    steps: int = 3000
    warmup_steps: int = 300  # feature reconstruction only, before the tail joins in
    batch_size: int = 16
    kd_batch_size: int = 4  # rows of each batch that also go through the (costly) frozen tail
    lr: float = 2e-3
    temperature: float = 2.0
    alpha: float = 0.9  # soft-label weight; the rest is CE on the teacher's top-1
    feature_weight: float = 1.0
    budget_s: float = 600.0
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.kd_batch_size) < 1:
            raise ConfigError("steps, batch_size and kd_batch_size must be >= 1")
        if self.lr <= 0 or self.budget_s <= 0:
            raise ConfigError("lr and budget_s must be > 0")
        if not 0 <= self.warmup_steps <= self.steps or self.threads < 1:
            raise ConfigError("need 0 <= warmup_steps <= steps and threads >= 1")
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError("need temperature > 0 and alpha in [0, 1]")


def quantize_ste(y: torch.Tensor, bits: int) -> torch.Tensor:
    """The codec's ``int<bits>`` round trip per sample and channel (min/max affine),
    with the identity as its gradient."""
    lo = y.amin(dim=(2, 3), keepdim=True)
    hi = y.amax(dim=(2, 3), keepdim=True)
    scale = (hi - lo).clamp_min(1e-6) / (2**bits - 1)
    q = torch.round((y - lo) / scale) * scale + lo
    return y + (q - y).detach()


def _stack(cin: int, mid: int, cout: int) -> nn.Sequential:
    """1x1 to ``mid``, 3x3 depthwise context, 1x1 to ``cout``: cheap on the edge."""
    return nn.Sequential(
        nn.Conv2d(cin, mid, 1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU6(),
        nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU6(),
        nn.Conv2d(mid, cout, 1),
    )


class Encoder(nn.Module):
    """Cut tensor (C channels) -> code (``code_channels``), same spatial size."""

    def __init__(self, channels: int, code_channels: int) -> None:
        super().__init__()
        self.net = _stack(channels, channels, code_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Code -> an estimate of the cut tensor (linear output: cut tensors are not clipped)."""

    def __init__(self, code_channels: int, channels: int) -> None:
        super().__init__()
        self.net = _stack(code_channels, 2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ExitHead(nn.Module):
    """Cut tensor -> logits: a 1x1 expansion, global average pooling, a linear layer."""

    def __init__(self, channels: int, classes: int, hidden: int = 512) -> None:
        super().__init__()
        self.expand = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.expand(x).mean(dim=(2, 3)))


@dataclass(frozen=True, kw_only=True)
class TrainLog:
    """What a run did, recorded in the bundle beside the weights it produced."""

    steps: int
    seconds: float
    final_loss: float
    num_train: int
    config: dict[str, object]


def _loop(
    params: list[nn.Parameter],
    n: int,
    cfg: LearnConfig,
    step: Callable[[torch.Tensor, int], torch.Tensor],
    desc: str,
    progress: bool,
) -> TrainLog:
    """AdamW + cosine schedule over random minibatches until ``steps`` or the budget."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    t0 = time.perf_counter()
    done, loss_ema = 0, float("nan")
    with tqdm(total=cfg.steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        for i in range(cfg.steps):
            if time.perf_counter() - t0 > cfg.budget_s:
                break
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
            loss = step(idx, i)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            v = loss.item()
            loss_ema = v if done == 0 else 0.95 * loss_ema + 0.05 * v
            done += 1
            bar.update()
            if done % 20 == 0:
                bar.set_postfix_str(f"loss {loss_ema:.4f}")
    return TrainLog(
        steps=done,
        seconds=time.perf_counter() - t0,
        final_loss=loss_ema,
        num_train=n,
        config=asdict(cfg),
    )


@contextmanager
def _run(
    cfg: LearnConfig, feats: np.ndarray, logits: np.ndarray, what: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Threads capped and the seed set for one run; yields (cut tensors, teacher logits,
    teacher top-1) as tensors."""
    if feats.ndim != 4:
        raise ConfigError(f"{what} needs an (N, C, H, W) cut tensor, got {feats.shape}")
    if len(feats) != len(logits) or len(feats) == 0:
        raise ConfigError(f"training data: {len(feats)} features and {len(logits)} teacher outputs")
    old = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        f = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        yield f, t, t.argmax(dim=1)
    finally:
        torch.set_num_threads(old)


def train_bottleneck(
    tail: nn.Module,
    feats: np.ndarray,
    logits: np.ndarray,
    *,
    code_channels: int,
    bits: int,
    cfg: LearnConfig,
    progress: bool = True,
) -> tuple[Encoder, Decoder, TrainLog]:
    """Distil an encoder/decoder pair at a cut: reconstruct the cut tensor (MSE over its
    variance) and, after the warm-up, match the frozen ``tail``'s output on the
    reconstruction to the teacher ``logits`` (soft KD + CE on the teacher's top-1)."""
    with _run(cfg, feats, logits, "a bottleneck") as (f, t, labels):
        var = float(f.var()) or 1.0
        enc, dec = Encoder(f.shape[1], code_channels), Decoder(code_channels, f.shape[1])
        tail.eval()
        for p in tail.parameters():
            p.requires_grad_(False)

        def step(idx: torch.Tensor, i: int) -> torch.Tensor:
            x = f[idx]
            rec = dec(quantize_ste(enc(x), bits))
            loss = cfg.feature_weight * F.mse_loss(rec, x) / var
            if i >= cfg.warmup_steps:
                k = idx[: cfg.kd_batch_size]
                loss = loss + distillation_loss(
                    tail(rec[: len(k)]),
                    t[k],
                    labels[k],
                    temperature=cfg.temperature,
                    alpha=cfg.alpha,
                )
            return loss

        enc.train()
        dec.train()
        log = _loop(
            [*enc.parameters(), *dec.parameters()], len(f), cfg, step, "bottleneck", progress
        )
    return enc.eval(), dec.eval(), log


def train_exit(
    feats: np.ndarray,
    logits: np.ndarray,
    *,
    cfg: LearnConfig,
    hidden: int = 512,
    progress: bool = True,
) -> tuple[ExitHead, TrainLog]:
    """Distil an exit head from the cut tensors ``feats`` to the teacher ``logits``."""
    with _run(cfg, feats, logits, "an exit head") as (f, t, labels):
        head = ExitHead(f.shape[1], t.shape[1], hidden)

        def step(idx: torch.Tensor, i: int) -> torch.Tensor:
            return distillation_loss(
                head(f[idx]), t[idx], labels[idx], temperature=cfg.temperature, alpha=cfg.alpha
            )

        head.train()
        log = _loop(list(head.parameters()), len(f), cfg, step, "exit head", progress)
    return head.eval(), log
