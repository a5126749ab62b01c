#!/usr/bin/env python3
"""FL round cost, plaintext vs CKKS, side by side in one run, on a ≥1M-parameter model.

Every setting runs the SAME code as the federation (local_train, prepare_update,
encode_update, RoundState.submit/close, decode_aggregate, GlobalModel.apply) with the
same seeds, so the training work is identical and only the encoding differs. Stage
times are measured; two round times are reported from them:

  serial    all clients one after another on this machine (upper bound of overhead)
  parallel  clients on their own devices: the slowest client's train+encode, plus the
            aggregator ingesting every upload, closing, and one decrypt+apply (what each
            member does to get the new model)

Ratios are against the plaintext float32 setting of the same run.

    .venv/bin/python benchmarks/fl.py [--clients 4] [--rounds 2] [--epochs 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from collab.fl import he
from collab.fl.config import config_from_dict
from collab.fl.data import client_data
from collab.fl.member import ModelHolder, train_params
from collab.fl.round_sum import (
    RoundState,
    UpdateHeader,
    decode_aggregate,
    encode_update,
    make_summer,
)
from collab.fl.rounds import RoundPlanner
from collab.fl.state import average
from collab.fl.train import local_train, prepare_update, warm_up


@dataclass(frozen=True)
class Setting:
    name: str
    he: dict[str, object] | None
    compression: str = ""


PK = {"encryption": "public_key"}
N8 = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40]}
SETTINGS = [
    Setting("f32 (plaintext)", None),
    Setting("f32+zstd", None, "zstd"),
    Setting(
        "ckks 8192 [60,40,40] pk",
        {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40], **PK},
    ),
    Setting("ckks 8192 [60,40] pk", {**N8, **PK}),
    Setting("ckks 8192 [60,40] sym (default)", N8),
    Setting("ckks 8192 [60,40] sym +zstd", N8, "zstd"),
    Setting(
        "ckks 4096 [60,49] sym", {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 49]}
    ),
]


@dataclass
class Times:
    train: list[float] = field(default_factory=list)
    encode: list[float] = field(default_factory=list)  # prepare + encrypt/serialize (+zstd)
    ingest: list[float] = field(default_factory=list)  # aggregator: parse/deserialize + add
    close: list[float] = field(default_factory=list)
    decrypt: list[float] = field(default_factory=list)  # decode/decrypt + average + apply
    bytes: list[int] = field(default_factory=list)
    serial: list[float] = field(default_factory=list)
    parallel: list[float] = field(default_factory=list)
    parallel_cpu: list[float] = field(default_factory=list)  # same critical path in CPU seconds
    err: float = 0.0


def run_setting(s: Setting, args: argparse.Namespace) -> Times:
    cfg = config_from_dict(
        {
            "federation": "bench",
            "clients": args.clients,
            "rounds": args.rounds,
            "modes": ["he" if s.he else "plain"],
            "model": {"name": "digits_mlp_1m"},
            "train": {"local_epochs": args.epochs, "lr": 0.05, "momentum": 0.9},
            "round": {"min_clients": 1},
            **({"he": s.he} if s.he else {}),
        }
    )
    keys = he.generate_keys(cfg.he.params()) if s.he else None
    holder = ModelHolder(cfg, secret_context=keys.secret if keys else None)
    planner = RoundPlanner(cfg, holder.dim, context_id=keys.context_id if keys else "")
    data = [client_data(k, cfg.clients, cfg.dirichlet_alpha, cfg.seed) for k in range(cfg.clients)]
    t = Times()
    for _ in range(cfg.rounds):
        spec = planner.next_spec(holder.state.version, [f"c{k}" for k in range(cfg.clients)])
        st = RoundState(
            spec, make_summer(spec.encoding, keys.public if keys else None), cfg.he.params().slots
        )
        client_times, client_cpu, ingest, ingest_cpu = [], [], 0.0, 0.0
        plain_sum = np.zeros(spec.num_values)
        for k, (x, y) in enumerate(data):
            t0, c0 = time.perf_counter(), time.process_time()
            delta = local_train(
                holder.model, holder.names, holder.state.flat, x, y, train_params(cfg), seed=k
            )
            t1 = time.perf_counter()
            vec = prepare_update(delta, len(y), None, np.random.default_rng(k))
            chunks = encode_update(vec, ctx=holder.ctx, compression=s.compression)
            t2, c2 = time.perf_counter(), time.process_time()
            plain_sum += vec
            st.submit(
                UpdateHeader(
                    federation="bench",
                    round=spec.round,
                    client_id=f"c{k}",
                    base_version=spec.base_version,
                    encoding=spec.encoding,
                    context_id=spec.context_id,
                    num_values=spec.num_values,
                    num_chunks=len(chunks),
                    compression=s.compression,
                ),
                chunks,
            )
            t3, c3 = time.perf_counter(), time.process_time()
            t.train.append(t1 - t0)
            t.encode.append(t2 - t1)
            t.bytes.append(sum(map(len, chunks)))
            client_times.append(t2 - t0)
            client_cpu.append(c2 - c0)
            ingest += t3 - t2
            ingest_cpu += c3 - c2
        t4, c4 = time.perf_counter(), time.process_time()
        agg = st.close()
        t5 = time.perf_counter()
        assert agg is not None
        total = decode_aggregate(list(agg.chunks), agg.encoding, agg.num_values, holder.ctx)
        avg = average(total, fixed_denominator=None)
        holder.state.apply(
            round_=agg.round, base_version=agg.base_version, version=agg.version, avg_delta=avg
        )
        t6, c6 = time.perf_counter(), time.process_time()
        t.parallel_cpu.append(max(client_cpu) + ingest_cpu + (c6 - c4))
        t.err = max(t.err, float(np.abs(avg - average(plain_sum, fixed_denominator=None)).max()))
        t.ingest.append(ingest)
        t.close.append(t5 - t4)
        t.decrypt.append(t6 - t5)
        t.serial.append(sum(client_times) + ingest + (t5 - t4) + (t6 - t5))
        t.parallel.append(max(client_times) + ingest + (t5 - t4) + (t6 - t5))
    return t


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--epochs", type=int, default=2, help="local epochs (more training = smaller HE share)"
    )
    args = ap.parse_args()
    warm_up()
    probe = ModelHolder(config_from_dict({"model": {"name": "digits_mlp_1m"}}))
    d = probe.dim
    print(
        f"model digits_mlp_1m: {d:,} federated parameters; {args.clients} clients x {args.rounds} rounds, "
        f"{args.epochs} local epoch(s); float32 update = {4 * d / 1e6:.2f} MB\n"
    )
    results = {}
    for s in SETTINGS:
        results[s.name] = run_setting(s, args)
    base = results[SETTINGS[0].name]
    hdr = (
        f"{'setting':<32}{'upload MB':>10}{'x f32':>7}{'train s':>9}{'encode s':>9}{'ingest s':>9}"
        f"{'close s':>8}{'decr s':>8}{'serial s':>9}{'x':>6}{'parallel s':>11}{'x':>6}{'par cpu s':>10}"
        f"{'x':>6}{'max err':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, t in results.items():
        mb = med([float(b) for b in t.bytes]) / 1e6
        print(
            f"{name:<32}{mb:>10.2f}{mb * 1e6 / (4 * d):>7.2f}{med(t.train):>9.3f}{med(t.encode):>9.3f}"
            f"{med(t.ingest):>9.3f}{med(t.close):>8.3f}{med(t.decrypt):>8.3f}{med(t.serial):>9.2f}"
            f"{med(t.serial) / med(base.serial):>6.2f}{med(t.parallel):>11.2f}"
            f"{med(t.parallel) / med(base.parallel):>6.2f}{med(t.parallel_cpu):>10.2f}"
            f"{med(t.parallel_cpu) / med(base.parallel_cpu):>6.2f}{t.err:>10.1e}"
        )
    print(
        "\ntrain/encode: per client (median); ingest: aggregator, all clients of a round; "
        "decr: decrypt/decode + average + apply (once per member)\n"
        "x f32 = upload bytes / float32 bytes; x = round time / plaintext f32 round time (same run);\n"
        "par cpu = the parallel critical path in CPU seconds (robust to other load on a shared machine)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
