"""Client side of one round: local training, then the (clipped, weighted, noised) update.

The vector a client uploads has ``d + 1`` values: the pre-weighted update and, in the
last slot, its weight, so the aggregator only ever ADDS (in plaintext or under CKKS) and
whoever decrypts divides by the right denominator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from collab.extras import missing

try:
    import torch
    from torch import nn
except ImportError as _e:
    raise missing(_e, __name__) from _e

from collab.fl.model import get_flat, set_flat
from collab.log import logger


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    local_epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    prox_mu: float = 0.0


@dataclass(frozen=True, kw_only=True)
class DPParams:
    clip: float
    noise_multiplier: float
    #: m_expected: mean number of reporters; each adds N(0, sigma²S²/m) so the sum carries sigmaS.
    expected_clients: float
    weight_cap: float | None = None

    @property
    def share_std(self) -> float:
        """std of one reporter's noise share: sigma·S/sqrt(m)."""
        return self.noise_multiplier * self.clip / float(np.sqrt(self.expected_clients))


#: tail of the noise-share norm an honest upload may reach: ‖N(0, s²I_d)‖ exceeds
#: s·(sqrt(d) + t) with probability ≤ exp(-t²/2) (Gaussian concentration), 1.3e-14 at t = 8.
NORM_TAIL = 8.0


def upload_norm_bound(dp: DPParams, d: int) -> float:
    """The largest L2 norm the update part (``d`` values) of an honest DP upload has:
    its clipped update (≤ S) plus its noise share. What the aggregator can enforce in
    plaintext DP: the share hides whether the rest is signal, so this is not S."""
    return dp.clip + dp.share_std * (float(np.sqrt(d)) + NORM_TAIL)


def warm_up() -> None:
    """Pay torch's lazy first-optimizer cost (≈3 s: it imports dynamo machinery) at start-up,
    not inside a round's deadline (and once in a parent before forking clients)."""
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    (w * 2).sum().backward()  # type: ignore[no-untyped-call]
    opt.step()


def local_train(
    model: nn.Module,
    names: Sequence[str],
    global_flat: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: TrainParams,
    seed: int,
) -> np.ndarray:
    """Train the federated params from ``global_flat``; return the delta (local - global)."""
    set_flat(model, names, global_flat)
    params = dict(model.named_parameters())
    for n, prm in params.items():
        prm.requires_grad_(n in set(names))
    trainable = [params[n] for n in names]
    anchor = [t.detach().clone() for t in trainable]
    opt = torch.optim.SGD(trainable, lr=p.lr, momentum=p.momentum)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(p.local_epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), p.batch_size):
            b = perm[i : i + p.batch_size]
            loss = loss_fn(model(xt[b]), yt[b])
            if p.prox_mu > 0:  # FedProx: keep local weights near the global model
                loss = loss + 0.5 * p.prox_mu * sum(
                    ((w - a) ** 2).sum() for w, a in zip(trainable, anchor, strict=True)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    model.eval()
    return (get_flat(model, names) - global_flat).astype(np.float64)


def clip_l2(delta: np.ndarray, bound: float) -> np.ndarray:
    norm = float(np.linalg.norm(delta))
    return delta * min(1.0, bound / norm) if norm > 0 else delta


def prepare_update(
    delta: np.ndarray, num_examples: int, dp: DPParams | None, rng: np.random.Generator
) -> np.ndarray:
    """The ``d + 1`` vector a client uploads (see module doc).

    Plain: weight n_k, vector n_k·Δ. DP: Δ clipped to ‖·‖ ≤ S, weight w_k = min(1, n_k/cap)
    (or 1) so each contribution has sensitivity ≤ S, plus this client's noise share; the
    decryptor divides by the FIXED m_expected (McMahan et al. 2018), so the released model
    does not depend on how many clients reported."""
    if not np.isfinite(delta).all():  # a diverged local model: still send the noise share
        logger.warning("local training diverged (non-finite update); contributing a zero update")
        delta = np.zeros_like(delta)
    if dp is None:
        w = float(num_examples)
        return np.concatenate([w * delta, [w]])
    w = 1.0 if dp.weight_cap is None else min(1.0, num_examples / dp.weight_cap)
    noisy = w * clip_l2(delta, dp.clip) + rng.normal(0.0, dp.share_std, size=delta.shape)
    return np.concatenate([noisy, [1.0]])
