#!/usr/bin/env python3
"""Flower's FedAvg and ours side by side on the same digits federation.

Same client shards (collab.fl.data's seeded Dirichlet split), same initial weights, same
model, same local optimizer (collab.fl.train.local_train with the same seeds), same
client sampling (every client every round: q = 1) and rounds. Ours runs as
`collab fl run` does (Mosquitto, an aggregator process, one process per client, this
process as key holder) in modes plain, dp and he (packed CKKS); Flower runs as a real
server and client processes on loopback (legacy start_server/start_client, no ray) in
its own venv (.venv-flower: flwr needs protobuf<7, the project pins 7): create it once
with ``benchmarks/flower/setup.sh``. Settings alternate over ``--repeats``.

Reported per setting: test accuracy per round, median round wall time (between two
consecutive aggregates being ready; round 1 includes start-up and is left out), and the
bytes of model payload one round moves (uploads of every client + what every client
downloads; ours: the update chunks and the aggregate, Flower: the serialized tensors).

    benchmarks/flower/setup.sh && .venv/bin/python benchmarks/fl_flower.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from collab.fl.config import FLConfig, load_config
from collab.fl.data import member_data, test_data
from collab.fl.local import RoundPoint, run_mode
from collab.fl.member import ModelHolder, train_params
from collab.fl.plot import plot_accuracy
from collab.procs import free_port, mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fl_rounds import round_times, wire_bytes

ROOT = Path(__file__).resolve().parents[1]
FLOWER_PY = ROOT / ".venv-flower" / "bin" / "python"
OURS = {"ours plain": "plain", "ours dp": "dp", "ours he (packed)": "he"}


def write_federation(cfg: FLConfig, path: Path) -> None:
    """Everything the Flower side needs to run the same federation."""
    holder = ModelHolder(cfg)
    if cfg.model.federated != "all":
        raise SystemExit("the comparison federates the whole model (model.federated: all)")
    params = dict(holder.model.named_parameters())
    arrays: dict[str, np.ndarray] = {"init": holder.state.flat.copy()}
    for k in range(cfg.clients):
        arrays[f"x{k}"], arrays[f"y{k}"] = member_data(cfg, k)
    arrays["xt"], arrays["yt"] = test_data()
    meta = {
        "model": cfg.model.name,
        "federated": cfg.model.federated,
        "shapes": [list(params[n].shape) for n in holder.names],
        "train": dataclasses.asdict(train_params(cfg)),
        "seeds": [cfg.seed * 1000 + k for k in range(cfg.clients)],  # as edge_node.fl_client
        "clients": cfg.clients,
        "rounds": cfg.rounds,
    }
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]


def run_flower(data: Path, out: Path) -> list[dict[str, float]]:
    if not FLOWER_PY.exists():
        raise SystemExit(f"{FLOWER_PY} missing: run benchmarks/flower/setup.sh first")
    cmd = [
        str(FLOWER_PY),
        str(ROOT / "benchmarks" / "flower" / "run_flower.py"),
        "--data",
        str(data),
        "--out",
        str(out),
        "--port",
        str(free_port()),
    ]
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
    res = json.loads(out.read_text())
    return [p for p in res["rounds"] if p["round"] > 0]  # round 0: the initial model


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default="collab/fl/example_digits.yaml")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("fl-flower-out"))
    args = ap.parse_args()
    base = dataclasses.replace(load_config(args.config), rounds=args.rounds)
    base = dataclasses.replace(base, he=dataclasses.replace(base.he, pack=True))
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fl-flower-"))
    data = work / "federation.npz"
    write_federation(base, data)
    names = ["flower fedavg", *OURS]
    order: list[str] = []
    for rep in range(args.repeats):
        order += names if rep % 2 == 0 else names[::-1]
    acc: dict[str, list[list[float]]] = {n: [] for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    eps: dict[str, float | None] = {}
    flower_bytes = 0
    with mosquitto() as broker:
        for i, name in enumerate(order):
            print(f"[{i + 1}/{len(order)}] {name} ...", flush=True)
            if name == "flower fedavg":
                t0 = time.monotonic()
                pts = run_flower(data, work / f"flower{i}.json")
                print(f"    {time.monotonic() - t0:.0f} s", flush=True)
                acc[name].append([p["accuracy"] for p in pts])
                ready = [p["ready_s"] for p in pts]
                times[name] += [b - a for a, b in itertools.pairwise(ready)]
                flower_bytes = int(statistics.median(p["up_bytes"] + p["down_bytes"] for p in pts))
                continue
            mode = OURS[name]
            cfg = dataclasses.replace(base.for_mode(mode), federation=f"cmp{i}-{mode}")
            ours: list[RoundPoint] = run_mode(cfg, broker.url, work / f"{i}", progress=False)
            acc[name].append([p.accuracy for p in ours])
            times[name] += round_times(ours)
            eps[name] = ours[-1].epsilon if ours else None
    n_max = max(len(member_data(base, k)[1]) for k in range(base.clients))
    moved = {"flower fedavg": flower_bytes}
    for name, mode in OURS.items():
        up, down = wire_bytes(base.for_mode(mode), n_max)
        moved[name] = base.clients * (up + down)
    rounds = range(1, args.rounds + 1)
    hdr = (
        f"{'setting':<18}"
        + "".join(f"{r:>6}" for r in rounds)
        + f"{'round s':>9}{'MB/round':>10}{'x flower':>9}"
    )
    print(
        f"\n{base.clients} clients, {base.model.name}, {base.train.local_epochs} local epochs, "
        f"q = {base.round.sample_rate}; accuracy per round (median over {args.repeats} runs)"
    )
    print(hdr)
    print("-" * len(hdr))
    for name in names:
        per_round = np.median(np.array(acc[name]), axis=0) if acc[name] else []
        line = "".join(f"{a:>6.3f}" for a in per_round)
        t = statistics.median(times[name]) if times[name] else float("nan")
        extra = f"  (eps={eps[name]:.2f})" if eps.get(name) is not None else ""
        print(
            f"{name:<18}{line}{t:>9.2f}{moved[name] / 1e6:>10.2f}"
            f"{moved[name] / max(moved['flower fedavg'], 1):>9.2f}{extra}"
        )
    results = {
        name: [
            RoundPoint(
                round=r,
                accuracy=float(a),
                epsilon=None,
                reporters=base.clients,
                sampled=base.clients,
                seconds=0.0,
            )
            for r, a in zip(rounds, np.median(np.array(acc[name]), axis=0), strict=False)
        ]
        for name in names
        if acc[name]
    }
    plot_accuracy(results, args.out / "flower_vs_ours.png", title="Flower FedAvg vs ours")
    (args.out / "flower_vs_ours.json").write_text(
        json.dumps({"accuracy": acc, "round_s": times, "bytes_per_round": moved}, indent=1)
    )
    print(f"\nPNG + JSON in {args.out}/; logs in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
