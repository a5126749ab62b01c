#!/usr/bin/env python3
"""The Flower side of benchmarks/fl_flower.py; runs in .venv-flower (benchmarks/flower/setup.sh).

A real Flower server (legacy ``flwr.server.start_server``, FedAvg) in this process and
one ``flwr.client.start_client`` process per client on loopback gRPC; no simulation
engine (no ray). The federation is the one ``fl_flower.py`` wrote to ``--data`` (.npz):
the same client shards, initial weights, model, local optimizer (collab.fl.train's
local_train with the same seeds), client sampling (all clients every round) and rounds.
Writes per-round accuracy, the time each round's aggregate was ready, and the bytes of
parameters each round moved (to the clients and back) as JSON to ``--out``.

    .venv-flower/bin/python benchmarks/flower/run_flower.py --data fed.npz --out flower.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # collab.fl.model / collab.fl.train: torch + numpy only

import flwr  # noqa: E402
import torch  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402

from collab.fl.model import accuracy, build_model, federated_names, set_flat  # noqa: E402
from collab.fl.train import TrainParams, local_train  # noqa: E402


def _load(path: Path) -> dict[str, Any]:
    z = np.load(path, allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    return {"z": z, "meta": meta}


def _model(meta: dict[str, Any]) -> tuple[torch.nn.Module, list[str]]:
    torch.manual_seed(0)
    m = build_model(meta["model"])
    return m, federated_names(m, meta["federated"])


def _split(flat: np.ndarray, shapes: list[list[int]]) -> list[np.ndarray]:
    out, pos = [], 0
    for s in shapes:
        n = int(np.prod(s)) if s else 1
        out.append(flat[pos : pos + n].reshape(s).astype(np.float32))
        pos += n
    return out


class DigitsClient(flwr.client.NumPyClient):  # type: ignore[misc]
    def __init__(self, k: int, data: dict[str, Any]) -> None:
        z, meta = data["z"], data["meta"]
        self.k, self.meta = k, meta
        self.x, self.y = z[f"x{k}"], z[f"y{k}"]
        self.model, self.names = _model(meta)
        set_flat(self.model, self.names, z["init"])  # non-federated parameters too
        self.params = TrainParams(**meta["train"])
        self.round = 0

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        self.round += 1
        flat = np.concatenate([p.ravel() for p in parameters]).astype(np.float64)
        seed = self.meta["seeds"][self.k] * 100_003 + self.round  # as collab.fl.member
        delta = local_train(self.model, self.names, flat, self.x, self.y, self.params, seed=seed)
        return _split(flat + delta, self.meta["shapes"]), len(self.y), {}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        return 0.0, len(self.y), {}


def _client(k: int, data_path: str, address: str) -> None:
    torch.set_num_threads(1)
    client = DigitsClient(k, _load(Path(data_path)))
    flwr.client.start_client(server_address=address, client=client.to_client(), insecure=True)


class Recorder(FedAvg):  # type: ignore[misc]
    """FedAvg that records what each round moved: parameters to every sampled client and
    every client's result back (the bytes of the serialized tensors)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.down: dict[int, int] = {}
        self.up: dict[int, int] = {}

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
        out = super().configure_fit(server_round, parameters, client_manager)
        self.down[server_round] = sum(sum(map(len, ins.parameters.tensors)) for _, ins in out)
        return out

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        self.up[server_round] = sum(sum(map(len, r.parameters.tensors)) for _, r in results)
        return super().aggregate_fit(server_round, results, failures)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    data = _load(args.data)
    meta, z = data["meta"], data["z"]
    n, rounds = meta["clients"], meta["rounds"]
    model, names = _model(meta)
    set_flat(model, names, z["init"])
    xt, yt = z["xt"], z["yt"]
    t0 = time.monotonic()
    points: list[dict[str, float]] = []

    def evaluate(server_round: int, parameters: list[np.ndarray], config: Any) -> Any:
        ready = time.monotonic() - t0
        set_flat(model, names, np.concatenate([p.ravel() for p in parameters]))
        acc = accuracy(model, xt, yt)
        points.append({"round": server_round, "accuracy": acc, "ready_s": ready})
        return 0.0, {"accuracy": acc}

    init = _split(np.asarray(z["init"], dtype=np.float64), meta["shapes"])
    strategy = Recorder(
        fraction_fit=1.0,  # all clients every round (q = 1), as the federation compared
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_available_clients=n,
        min_evaluate_clients=0,
        evaluate_fn=evaluate,
        initial_parameters=flwr.common.ndarrays_to_parameters(init),
    )
    address = f"127.0.0.1:{args.port}"
    ctx = mp.get_context("fork")  # torch and flwr imported once (no gRPC object exists yet)
    procs = [ctx.Process(target=_client, args=(k, str(args.data), address)) for k in range(n)]
    for p in procs:
        p.start()
    try:
        flwr.server.start_server(
            server_address=address,
            config=flwr.server.ServerConfig(num_rounds=rounds),
            strategy=strategy,
        )
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    out = [
        {
            **pt,
            "up_bytes": strategy.up.get(int(pt["round"]), 0),
            "down_bytes": strategy.down.get(int(pt["round"]), 0),
        }
        for pt in points
    ]
    args.out.write_text(json.dumps({"flwr": flwr.__version__, "rounds": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
