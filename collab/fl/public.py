"""Public pretraining: the model every member starts from when ``public.fraction > 0``.

Client-level DP noise per coordinate is sigma·S/m against a signal of about S/sqrt(d), so DP
from a random initialisation with few clients drowns (docs/fl.md). The standard remedy
(public pretraining + private fine-tuning) is to learn the features on data that is NOT
private and federate only a small parameter set under DP. Here the public data is a
documented, seeded, stratified share of the digits training split that no client ever
holds (collab.fl.data.public_indices); the test split stays separate.

Every member (aggregator, clients, key holder) must start from the same weights: the
training is seeded and single-threaded, and the result is cached on disk (keyed by the
config), computed once under a file lock, so a federation's processes pretrain once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from collab.fl.config import FLConfig
from collab.fl.data import public_data
from collab.fl.model import accuracy, build_model, federated_names, get_flat, set_flat
from collab.log import logger

_VERSION = 1  # bump when the pretraining procedure changes


def shifted_copies(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (N, 1, H, W) image plus its 8 one-pixel shifts (zero fill): 9x the public data."""
    out = [x]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            s = np.zeros_like(x)
            h, w = x.shape[2], x.shape[3]
            s[:, :, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
                :, :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
            ]
            out.append(s)
    return np.concatenate(out), np.tile(y, len(out))


def cache_dir() -> Path:
    env = os.environ.get("COLLAB_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "edgecollab") / "fl-public"


def _key(cfg: FLConfig) -> str:
    pub = asdict(cfg.public)
    pub.pop("reset_federated")  # applied after loading: does not change the pretrained weights
    spec = {
        "v": _VERSION,
        "model": cfg.model.name,
        "seed": cfg.seed,
        "public": pub,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def pretrain(model: nn.Module, cfg: FLConfig) -> nn.Module:
    """Train every parameter of ``model`` on the public data (seeded, one thread)."""
    p = cfg.public
    x, y = public_data(p.fraction, cfg.seed)
    if p.augment:
        x, y = shifted_copies(x, y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 4099)
            opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y)
            loss_fn = nn.CrossEntropyLoss()
            model.train()
            for _ in range(p.epochs):
                perm = torch.randperm(len(xt))
                for i in range(0, len(xt), p.batch_size):
                    b = perm[i : i + p.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss_fn(model(xt[b]), yt[b]).backward()  # type: ignore[no-untyped-call]
                    opt.step()
                sched.step()
            model.eval()
    finally:
        torch.set_num_threads(threads)
    logger.info(
        "public pretraining: %d public examples (%d with shifts), train acc %.3f",
        len(public_data(p.fraction, cfg.seed)[1]),
        len(y),
        accuracy(model, x, y),
    )
    return model


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def initial_model(cfg: FLConfig) -> nn.Module:
    """The model every member starts from: seeded init, pretrained on the public split if
    ``cfg.public`` is enabled (loaded from the on-disk cache when another member of the
    federation already computed it)."""
    model = build_model(cfg.model.name)
    if not cfg.public.enabled:
        return model
    seeded = get_flat(model, federated_names(model, cfg.model.federated))
    path = cache_dir() / f"{cfg.model.name}-{_key(cfg)}.pt"
    with _locked(path):
        if path.is_file():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:
            pretrain(model, cfg)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(path)
    if cfg.public.reset_federated:
        set_flat(model, federated_names(model, cfg.model.federated), seeded)
    return model.eval()
