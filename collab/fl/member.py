"""What every holder of the global model does (clients and the key holder): keep the
model at the current version by applying decrypted aggregates, and (clients) turn a
round into an upload."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from collab.errors import FLError
from collab.fl import he
from collab.fl.config import FLConfig
from collab.fl.model import accuracy, federated_names, get_flat, set_flat
from collab.fl.pack import Packing
from collab.fl.public import initial_model
from collab.fl.randomness import privacy_rng
from collab.fl.round_sum import Aggregate, decode_aggregate, stream_update
from collab.fl.state import GlobalModel, average, next_version
from collab.fl.train import DPParams, TrainParams, local_train, prepare_update


def train_params(cfg: FLConfig) -> TrainParams:
    t = cfg.train
    return TrainParams(
        local_epochs=t.local_epochs,
        batch_size=t.batch_size,
        lr=t.lr,
        momentum=t.momentum,
        prox_mu=t.prox_mu,
    )


def dp_params(cfg: FLConfig) -> DPParams | None:
    if not cfg.dp_enabled:
        return None
    return DPParams(
        clip=cfg.dp.clip,
        noise_multiplier=cfg.dp.noise_multiplier,
        expected_clients=cfg.expected_clients,
        weight_cap=cfg.dp.weight_cap,
    )


@dataclass
class ModelHolder:
    """A replica of the global model; ``secret_context`` is needed only under HE."""

    cfg: FLConfig
    secret_context: bytes | None = None
    model: torch.nn.Module = field(init=False)
    names: list[str] = field(init=False)
    state: GlobalModel = field(init=False)
    ctx: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        torch.set_num_threads(1)
        self.model = initial_model(self.cfg)
        self.names = federated_names(self.model, self.cfg.model.federated)
        s = self.cfg.server
        self.state = GlobalModel(
            get_flat(self.model, self.names),
            optimizer=s.optimizer,
            lr=s.lr,
            beta1=s.beta1,
            beta2=s.beta2,
            tau=s.tau,
        )
        if self.cfg.he_enabled:
            if self.secret_context is None:
                raise FLError("HE mode: this member needs the federation's secret context")
            self.ctx = he.load_context(self.secret_context, require_secret=True)

    @property
    def dim(self) -> int:
        return int(self.state.flat.size)

    def apply(self, agg: Aggregate) -> None:
        """Check the version chain, decrypt the SUM, divide, step the server optimizer."""
        if next_version(agg.base_version, agg.chunks) != agg.version:
            raise FLError(
                f"aggregate of round {agg.round}: version {agg.version} does not match its bytes"
            )
        total = decode_aggregate(
            list(agg.chunks),
            agg.encoding,
            agg.num_values,
            self.ctx,
            packing=agg.packing,
            params=self.cfg.he.params(),
            reporters=len(agg.reporters),
        )
        avg = average(total, fixed_denominator=agg.fixed_denominator or None)
        self.state.apply(
            round_=agg.round, base_version=agg.base_version, version=agg.version, avg_delta=avg
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> float:
        set_flat(self.model, self.names, self.state.flat)
        return accuracy(self.model, x, y)


@dataclass
class Trainer:
    """A client: its shard of data plus a model replica."""

    holder: ModelHolder
    x: np.ndarray
    y: np.ndarray
    seed: int

    def update(
        self, round_: int, *, compression: str = "", packing: Packing | None = None
    ) -> Iterator[bytes]:
        """Train, then the upload's chunks, yielded as each is encrypted (``packing``: the
        round's, from its announcement)."""
        cfg = self.holder.cfg
        delta = local_train(
            self.holder.model,
            self.holder.names,
            self.holder.state.flat,
            self.x,
            self.y,
            train_params(cfg),
            seed=self.seed * 100_003 + round_,
        )
        # the noise share: from the OS, so no config, client id or round reproduces it
        rng = privacy_rng([self.seed, round_, 17] if cfg.insecure_deterministic else None)
        vec = prepare_update(delta, len(self.y), dp_params(cfg), rng)
        return stream_update(
            vec,
            ctx=self.holder.ctx,
            compression=compression,
            packing=packing,
            params=cfg.he.params(),
            rng=rng,
        )
