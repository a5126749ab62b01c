#!/usr/bin/env python3
"""Real FL rounds, plaintext vs CKKS (packed and not), measured across processes.

Each setting is a real federation as `collab fl run` runs it: Mosquitto, an aggregator
process and one process per client on loopback gRPC, this process as key holder. A
round's time is MEASURED: the time between two consecutive model announcements arriving
here (fetch of the previous aggregate + decrypt at every client, local training,
encryption, upload, aggregation, release), median over rounds 2..R (round 1 includes
process start-up). Settings run alternately (ABBA order over ``--repeats``) so machine
load hits them alike; ratios are against the plaintext setting of the same run.

Also per setting: upload bytes of one update (encoded by the same code) vs float32; the
aggregate error of round 1 (every setting starts from the same model and trains the same
deltas, so the round-1 models differ only by the encoding: max |w_HE - w_plain| against
max |w_plain - w_0|); test accuracy after the last round.

    .venv/bin/python benchmarks/fl_rounds.py --epochs 2 --rounds 10 [--clients 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import statistics
import tempfile
from pathlib import Path

import numpy as np

from collab.fl import he
from collab.fl.config import FLConfig, config_from_dict
from collab.fl.data import member_data
from collab.fl.local import RoundPoint, run_mode
from collab.fl.member import ModelHolder
from collab.fl.round_sum import RoundState, encode_update, make_summer, upload_header
from collab.fl.rounds import RoundPlanner
from collab.procs import mosquitto

SETTINGS = {
    "plain": ("plain", False),
    "he packed": ("he", True),
    "he (unpacked)": ("he", False),
}


def config(args: argparse.Namespace, mode: str, packed: bool, tag: str) -> FLConfig:
    cfg = config_from_dict(
        {
            "federation": f"bench{tag}",
            "clients": args.clients,
            "rounds": args.rounds,
            "modes": [mode],
            "model": {"name": args.model},
            "train": {"local_epochs": args.epochs, "lr": 0.05, "momentum": 0.9},
            "round": {"min_clients": args.clients, "deadline_s": 600.0},
            "he": {"pack": packed},
        }
    )
    return cfg


def wire_bytes(cfg: FLConfig, n_examples: int) -> tuple[int, int]:
    """(one upload, one aggregate download) in bytes, encoded and summed by the
    federation's code (sizes do not depend on the values)."""
    cfg = dataclasses.replace(cfg, round=dataclasses.replace(cfg.round, min_clients=1))
    keys = he.generate_keys(cfg.he.params()) if cfg.he_enabled else None
    holder = ModelHolder(cfg, secret_context=keys.secret if keys else None)
    planner = RoundPlanner(cfg, holder.dim, context_id=keys.context_id if keys else "")
    spec = planner.next_spec("v", ["c0"], max_examples=n_examples)
    rng = np.random.default_rng(0)
    vec = np.concatenate([rng.normal(scale=1e-3, size=holder.dim), [1.0]])
    chunks = encode_update(
        vec, ctx=holder.ctx, packing=spec.packing, params=cfg.he.params(), rng=rng
    )
    summer = make_summer(spec.encoding, keys.public if keys else None)
    st = RoundState(spec, summer, cfg.he.params().slots)
    st.submit(upload_header(spec, "c0", len(chunks)), chunks)
    agg = st.close()
    assert agg is not None
    return sum(map(len, chunks)), sum(map(len, agg.chunks))


@dataclasses.dataclass
class Result:
    round_s: list[float] = dataclasses.field(default_factory=list)
    acc: list[float] = dataclasses.field(default_factory=list)
    r1: list[np.ndarray] = dataclasses.field(default_factory=list)
    crit_cpu: list[float] = dataclasses.field(default_factory=list)
    total_cpu: list[float] = dataclasses.field(default_factory=list)
    bytes: int = 0


_CLIENT_CPU = re.compile(r"round (\d+): update accepted .*; cpu ([\d.]+)s\)")
_AGG_CPU = re.compile(r"round (\d+): aggregator cpu ([\d.]+)s")


def round_cpu(workdir: Path) -> tuple[list[float], list[float]]:
    """Per round from 2 on, from the processes' own logs (robust to other load on the
    machine): (critical path = the busiest client + the aggregator, total of all)."""
    clients: dict[int, list[float]] = {}
    for m in _CLIENT_CPU.finditer((workdir / "clients.log").read_text()):
        clients.setdefault(int(m[1]), []).append(float(m[2]))
    agg = {
        int(m[1]): float(m[2]) for m in _AGG_CPU.finditer((workdir / "aggregator.log").read_text())
    }
    rounds = sorted(r for r in clients if r >= 2 and r in agg)
    crit = [max(clients[r]) + agg[r] for r in rounds]
    total = [sum(clients[r]) + agg[r] for r in rounds]
    return crit, total


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def round_times(points: list[RoundPoint]) -> list[float]:
    t = [p.published_s for p in points]
    return [b - a for a, b in itertools.pairwise(t)]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs of every setting (ABBA order)")
    ap.add_argument("--model", default="digits_mlp_1m")
    ap.add_argument(
        "--settings", default=",".join(SETTINGS), help=f"comma-separated of {list(SETTINGS)}"
    )
    ap.add_argument("--out", type=Path, default=None, help="keep logs here (default: a tmp dir)")
    args = ap.parse_args()
    names = [s.strip() for s in args.settings.split(",")]
    results = {n: Result() for n in names}
    init = ModelHolder(config(args, "plain", False, "")).state.flat.copy()
    out = args.out or Path(tempfile.mkdtemp(prefix="fl-rounds-"))
    order: list[str] = []
    for rep in range(args.repeats):
        order += names if rep % 2 == 0 else names[::-1]
    with mosquitto() as broker:
        for i, name in enumerate(order):
            mode, packed = SETTINGS[name]
            cfg = config(args, mode, packed, f"{i}")
            res = results[name]

            def keep_r1(rnd: int, holder: ModelHolder, res: Result = res) -> None:
                if rnd == 1:
                    res.r1.append(holder.state.flat.copy())

            print(f"[{i + 1}/{len(order)}] {name} ...", flush=True)
            pts = run_mode(
                cfg.for_mode(mode), broker.url, out / f"{i}", progress=False, observe=keep_r1
            )
            res.round_s += round_times(pts)
            res.acc.append(pts[-1].accuracy if pts else float("nan"))
            crit, total = round_cpu(out / f"{i}")
            res.crit_cpu += crit
            res.total_cpu += total
            raw = {
                n: {
                    "round_s": r.round_s,
                    "acc": r.acc,
                    "crit_cpu": r.crit_cpu,
                    "total_cpu": r.total_cpu,
                }
                for n, r in results.items()
            }
            (out / "results.json").write_text(json.dumps(raw, indent=1))  # kept as it goes
    base_cfg = config(args, "plain", False, "")
    d = init.size
    n_max = max(len(member_data(base_cfg, k)[1]) for k in range(args.clients))
    for name in names:
        mode, packed = SETTINGS[name]
        results[name].bytes = wire_bytes(config(args, mode, packed, "").for_mode(mode), n_max)[0]
    plain = results[names[0]]
    base_t = statistics.median(plain.round_s)
    step = float(np.abs(plain.r1[0] - init).max())
    print(
        f"\n{args.model}: {d:,} federated parameters; {args.clients} client processes, "
        f"{args.rounds} rounds, {args.epochs} local epochs, {args.repeats} repeats (ABBA); "
        f"float32 update {4 * (d + 1) / 1e6:.2f} MB; workdir {out}"
    )
    hdr = (
        f"{'setting':<16}{'round s (med)':>14}{'x plain':>9}{'upload MB':>11}{'x f32':>7}"
        f"{'round-1 err':>13}{'rel err':>9}{'crit cpu':>9}{'x':>6}{'total cpu':>10}{'x':>6}"
        f"  {'acc @R':<14}rounds"
    )
    print(hdr)
    print("-" * len(hdr))
    for name in names:
        r = results[name]
        t = statistics.median(r.round_s)
        err = max(float(np.abs(a - b).max()) for a in r.r1 for b in plain.r1)
        accs = "/".join(f"{a:.3f}" for a in r.acc)
        print(
            f"{name:<16}{t:>14.2f}{t / base_t:>9.2f}{r.bytes / 1e6:>11.2f}"
            f"{r.bytes / (4 * (d + 1)):>7.2f}{err:>13.2e}{err / step:>9.1e}"
            f"{med(r.crit_cpu):>9.2f}{med(r.crit_cpu) / med(plain.crit_cpu):>6.2f}"
            f"{med(r.total_cpu):>10.2f}{med(r.total_cpu) / med(plain.total_cpu):>6.2f}"
            f"  {accs:<14}{len(r.round_s)}"
        )
    print(
        f"\nround-1 err: max |w_setting - w_plain| after round 1 (plain vs plain: run to run); "
        f"rel err: / max |w_plain - w_0| = {step:.3g}; acc @R: test accuracy after round "
        f"{args.rounds}, one value per repeat; base config {base_cfg.train}\n"
        "crit cpu: CPU s of the busiest client + the aggregator per round; total cpu: of all "
        "clients + the aggregator (both from the processes' logs, medians over rounds 2..R)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
