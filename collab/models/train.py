"""Train the example models on the fixed digits train split (seconds to a minute on a CPU).

Every model sees the same augmentation, applied to the 8x8 digits before they are turned
into the model's input (``ExampleSpec.from_digits``): one-pixel random shifts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from collab.extras import missing

try:
    import torch
    from torch import nn
except ImportError as _e:
    raise missing(_e, __name__) from _e
from tqdm import tqdm

from collab.errors import ConfigError
from collab.log import logger
from collab.models import datasets
from collab.models.examples import load_example
from collab.models.registry import labelled_inputs, spec


@dataclass(frozen=True, kw_only=True)
class ExampleTrainingConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1  # one is bit-reproducible and no slower on a busy 2-core box

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.threads < 1:
            raise ConfigError("epochs, batch_size and threads must be >= 1 and lr > 0")


# Per-model recipes: the committed weights were trained with exactly these.
RECIPES: dict[str, ExampleTrainingConfig] = {
    "digits": ExampleTrainingConfig(),
    "resnet": ExampleTrainingConfig(epochs=8, lr=3e-3),
    "mobilenet": ExampleTrainingConfig(epochs=8, lr=5e-3),
    "transformer": ExampleTrainingConfig(epochs=100, lr=1e-2, weight_decay=1e-2),
}


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    model: nn.Module  # eval mode
    accuracy: float  # top-1 on the held-out test split
    seconds: float


def recipe(name: str, **overrides: int | float) -> ExampleTrainingConfig:
    spec(name)  # ConfigError for unknown names
    return replace(RECIPES[name], **overrides)  # type: ignore[arg-type]


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = torch.cat([model(c) for c in torch.from_numpy(x).split(256)]).argmax(dim=1).numpy()
    return float((pred == y).mean())


def train_example(
    name: str, cfg: ExampleTrainingConfig | None = None, *, progress: bool = True
) -> TrainResult:
    """Train example ``name`` from its seeded init; returns the model and its test accuracy."""
    cfg = cfg or recipe(name)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    try:
        model = _train(name, cfg, progress)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    xs, ys = labelled_inputs(name, None, "test")
    acc = accuracy(model, xs, ys)
    logger.info("%s test accuracy %.4f on %d held-out inputs (%.1f s)", name, acc, len(ys), seconds)
    return TrainResult(model=model, accuracy=acc, seconds=seconds)


def _train(name: str, cfg: ExampleTrainingConfig, progress: bool) -> nn.Module:
    torch.manual_seed(cfg.seed)
    to_input = spec(name).from_digits
    if to_input is None:
        raise ConfigError(
            f"example model {name!r} is not trained on digits (its data set is {spec(name).dataset})"
        )
    model = load_example(name, pretrained=False)
    x, y = datasets.digits("train")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=cfg.lr,
        total_steps=cfg.epochs * ((len(x) + cfg.batch_size - 1) // cfg.batch_size),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_fn = nn.CrossEntropyLoss()
    for _epoch in tqdm(range(cfg.epochs), desc=f"train {name}", unit="epoch", disable=not progress):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
            sx, sy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            xb = torch.roll(xt[idx], shifts=(sy, sx), dims=(2, 3))
            xb = torch.from_numpy(to_input(xb.numpy()))
            opt.zero_grad()
            loss_fn(model(xb), yt[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def save_weights(model: nn.Module, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out)
