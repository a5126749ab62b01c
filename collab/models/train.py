"""Train the digits CNN on the fixed train split (seconds on a CPU)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from collab.log import logger
from collab.models import datasets
from collab.models.examples import digits_cnn


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 4e-3
    seed: int = 0


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def train_digits(cfg: TrainConfig, *, progress: bool = True) -> tuple[nn.Module, float]:
    """Returns the trained model (eval mode) and its test accuracy.

    Runs on one thread: faster than two on a busy 2-core box and bit-reproducible."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, progress: bool) -> tuple[nn.Module, float]:
    torch.manual_seed(cfg.seed)
    model = digits_cnn(pretrained=False)
    x, y = datasets.digits("train")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * ((len(x) + cfg.batch_size - 1) // cfg.batch_size)
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss()
    for _epoch in tqdm(range(cfg.epochs), desc="train digits", disable=not progress):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
            xb = xt[idx]
            # one-pixel random shifts: cheap augmentation for 8x8 digits
            sx, sy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(sy, sx), dims=(2, 3))
            opt.zero_grad()
            loss_fn(model(xb), yt[idx]).backward()
            opt.step()
            sched.step()
    xs, ys = datasets.digits("test")
    acc = accuracy(model, xs, ys)
    logger.info("digits CNN test accuracy %.4f on %d held-out images", acc, len(ys))
    return model.eval(), acc


def save_weights(model: nn.Module, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out)
