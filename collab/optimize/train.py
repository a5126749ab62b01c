"""Short training loops for the optimizers: fine-tuning a pruned model and
distilling a student (Hinton et al.: soft targets at temperature T, weight alpha).

Threads are capped: the machine is shared, and these models are tiny.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from collab.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    temperature: float = 4.0  # distillation only
    alpha: float = 0.7  # weight of the soft-label term; 1 - alpha goes to the hard labels
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch_size must be >= 1 and lr > 0")
        if self.temperature <= 0 or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"need temperature > 0 and alpha in [0, 1], got T={self.temperature}, alpha={self.alpha}"
            )


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels).
    The T^2 keeps the soft term's gradient scale independent of T."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: FinetuneConfig,
    *,
    teacher: nn.Module | None = None,
    desc: str = "fine-tune",
    progress: bool = True,
) -> nn.Module:
    """Fine-tune ``model`` on (x, y) — with ``teacher`` given, by distillation. In place;
    returns the model in eval mode."""
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"training data: {len(x)} inputs and {len(y)} labels")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        gen = torch.Generator().manual_seed(cfg.seed)
        xt, yt = (
            torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            torch.from_numpy(y.astype(np.int64)),
        )
        soft = None
        if teacher is not None:
            teacher.eval()
            with torch.no_grad():
                soft = torch.cat([teacher(c) for c in xt.split(256)])
        steps = cfg.epochs * ((len(x) + cfg.batch_size - 1) // cfg.batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
        for _ in tqdm(
            range(cfg.epochs), desc=desc, unit="epoch", disable=not progress, leave=False
        ):
            model.train()
            for idx in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
                out = model(xt[idx])
                if soft is None:
                    loss = F.cross_entropy(out, yt[idx])
                else:
                    loss = distillation_loss(
                        out, soft[idx], yt[idx], temperature=cfg.temperature, alpha=cfg.alpha
                    )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(old_threads)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = torch.cat(
        [model(c) for c in torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).split(256)]
    )
    return float((pred.argmax(dim=1).numpy() == y).mean())
