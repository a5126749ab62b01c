"""Models the federation trains, and the flat view of their FEDERATED parameters.

Only the parameters under the user's chosen modules are federated (and trained
locally); the rest stay at their (seeded) initial values on every member.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from collab.errors import ConfigError


def _digits_cnn() -> nn.Module:
    from collab.models.examples import digits_cnn

    return digits_cnn(pretrained=False)


def _digits_mlp_1m() -> nn.Module:
    """A wide MLP on 8x8 digits, ≈1.1M parameters: the HE benchmark's ≥1M-parameter model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 10),
        )


MODELS: dict[str, Callable[[], nn.Module]] = {
    "digits_cnn": _digits_cnn,
    "digits_mlp_1m": _digits_mlp_1m,
}


def build_model(name: str) -> nn.Module:
    try:
        make = MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
    return make()


def federated_names(model: nn.Module, federated: str | Sequence[str]) -> list[str]:
    """Parameter names under the chosen module prefixes (or all of them)."""
    names = [n for n, _ in model.named_parameters()]
    if federated == "all":
        return names
    modules = dict(model.named_modules())
    out: list[str] = []
    for prefix in federated:
        if prefix not in modules or prefix == "":
            raise ConfigError(
                f"model has no module {prefix!r}; modules: "
                f"{[m for m in modules if m and '.' not in m]}"
            )
        out.extend(n for n in names if n.startswith(prefix + ".") and n not in out)
    if not out:
        raise ConfigError(f"modules {list(federated)} have no parameters")
    return out


def get_flat(model: nn.Module, names: Sequence[str]) -> np.ndarray:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in names]).numpy().astype(np.float32)


def set_flat(model: nn.Module, names: Sequence[str], flat: np.ndarray) -> None:
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in names)
    if flat.shape != (total,):
        raise ConfigError(f"flat vector has shape {flat.shape}, expected ({total},)")
    pos = 0
    with torch.no_grad():
        for n in names:
            p = params[n]
            p.copy_(
                torch.from_numpy(
                    np.ascontiguousarray(flat[pos : pos + p.numel()], dtype=np.float32)
                ).view_as(p)
            )
            pos += p.numel()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())
