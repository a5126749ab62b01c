#!/usr/bin/env python3
"""The cloud tier under open-loop load: four execution/scheduling modes side by side.

Modes (each a real ``collab cloud`` process, one after the other, per model):

  (a) batch1    one session, intra-op threads = cores, batch size 1, FIFO
  (b) sessions  N sessions x 1 thread pinned to the cores, batch size 1, FIFO
  (c) batching  dynamic batching (16 / 2 ms), execution mode by start-up benchmark, FIFO
  (d) edf       (c) with EDF, early rejection and the admission bound (the defaults)

The SLO is fixed per model before any search: p99 <= ``--slo-factor`` (3) x the
unloaded p50 of the better of (a) and (b) (sequential requests after idle gaps, what a
lone open-loop request sees). Every request carries that SLO as its gRPC deadline; a
request not answered OK within it is a miss (latency inf). Load is open loop: Poisson
arrivals from ``--streams`` streams, each request sent at its scheduled instant whether
or not earlier ones returned, latency counted from that instant (benchmarks/cloud.py's
machinery). Capacity at the SLO: the highest offered rate whose p99 <= SLO and whose
goodput keeps up (>= 0.95 x offered): double from 1 / p50, then bisect.

Overload: each mode is then offered 2x its own capacity for ``--seconds``; reported are
goodput (answers within the deadline, per second) as a share of that capacity, and how
the misses ended: refused by the node before compute (an error status with time to
spare: EDF's early rejection or the queue bound), or not (timed out: queued until the
deadline, or computed too late; the node's /metrics tell how many of those it computed).

Usage: .venv/bin/python benchmarks/cloud_tier.py [--models resnet,vgg-wide]
       [--seconds 3] [--steps 2]        (about 8 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cloud as base  # benchmarks/cloud.py

MODES: dict[str, tuple[str, ...]] = {
    "batch1": (
        "--max-batch-size", "1", "--execution", "threads", "--no-edf",
        "--max-queue-ms", "0",
    ),
    "sessions": (
        "--max-batch-size", "1", "--execution", "sessions", "--no-edf",
        "--max-queue-ms", "0",
    ),
    "batching": (
        "--max-batch-size", "16", "--max-wait-ms", "2", "--execution", "auto",
        "--no-edf", "--max-queue-ms", "0",
    ),
    "edf": ("--max-batch-size", "16", "--max-wait-ms", "2", "--execution", "auto"),
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One open-loop window at a fixed offered rate."""

    rate: float
    sent: int
    good: int  # answered OK within the deadline
    refused: int  # an error status before the deadline: refused by the node, never computed
    timed_out: int  # no answer by the deadline (queued until it passed, or computed late)
    computed: float  # samples the node computed in the window (/metrics)
    p99: float
    seconds: float

    @property
    def goodput(self) -> float:
        return self.good / self.seconds

    def ok(self, slo_ms: float) -> bool:
        return self.p99 <= slo_ms and self.good >= 0.95 * self.sent


async def _window(
    call: Any, req: Any, mport: int, *, rate: float, streams: int, seconds: float, slo_ms: float
) -> Run:
    rng = np.random.default_rng(int(rate * 1000) % 2**32)
    plans = [base._arrivals(rng, rate / streams, seconds) for _ in range(streams)]
    timeout = slo_ms / 1000.0
    lat: list[float] = []
    refused = timed_out = 0
    tasks: set[asyncio.Task[None]] = set()
    s0, _ = base.batch_stats(mport)
    start = time.perf_counter() + 0.05

    async def one(ref: float) -> None:
        nonlocal refused, timed_out
        sent_at = time.perf_counter()
        try:
            await call(req, timeout=max(0.001, ref + timeout - sent_at))
        except grpc.aio.AioRpcError as e:
            early = time.perf_counter() - ref < 0.9 * timeout
            if early and e.code() in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ):
                refused += 1
            else:
                timed_out += 1
            return
        lat.append(time.perf_counter() - ref)

    async def stream(plan: np.ndarray) -> None:
        for offset in plan:
            t = start + float(offset)
            delay = t - time.perf_counter() - base._WAKE_EARLY_S
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.add(asyncio.create_task(one(min(t, time.perf_counter()))))

    await asyncio.gather(*(stream(p) for p in plans))
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.2)  # the node drains (whatever is late is dropped)
    s1, _ = base.batch_stats(mport)
    sent = sum(len(p) for p in plans)
    ms = np.array([x * 1000.0 for x in lat] + [float("inf")] * (sent - len(lat)))
    good = int(np.sum(ms <= slo_ms))
    timed_out += len(lat) - good  # answered, but after the deadline
    return Run(rate, sent, good, refused, timed_out, s1 - s0, base._pct(ms, 99), seconds)


@dataclass(frozen=True)
class ModeResult:
    mode: str
    execution: str
    capacity: float
    at_capacity: Run | None
    overload: Run | None


async def _unloaded_p50(port: int, target: base.Target) -> float:
    ch, call, req = await base._connect(port, target)
    await base._warm_up(call, req, 4)
    ms = np.array(await base._sequential(call, req, 150, base.IDLE_GAP_S)) * 1000.0
    await ch.close()
    return float(np.median(ms))


def _execution(mport: int) -> str:
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("collab_cloud_execution_mode{") and line.endswith(" 1.0"):
            return line.split('mode="', 1)[1].split('"', 1)[0]
    return "?"


async def _search(
    port: int, mport: int, target: base.Target, mode: str, *, slo_ms: float, args: Any
) -> ModeResult:
    ch, call, req = await base._connect(port, target)
    await base._warm_up(call, req, args.streams)
    l0 = float(np.median(await base._sequential(call, req, 100))) * 1000.0
    runs: list[Run] = []

    async def probe(rate: float) -> bool:
        r = await _window(
            call, req, mport, rate=rate, streams=args.streams, seconds=args.seconds, slo_ms=slo_ms
        )
        runs.append(r)
        print(
            f"    {mode:<9} offered {rate:7.0f}/s  goodput {r.goodput:7.0f}/s  p99 "
            f"{r.p99:8.2f} ms  refused {r.refused:5d}  timed out {r.timed_out:5d}  "
            f"{'pass' if r.ok(slo_ms) else 'FAIL'}",
            flush=True,
        )
        return r.ok(slo_ms)

    rate = 1000.0 / l0
    lo, hi = (rate, float("inf")) if await probe(rate) else (0.0, rate)
    while hi == float("inf") and len(runs) < 12:
        rate *= 2
        lo, hi = (rate, hi) if await probe(rate) else (lo, rate)
    while lo == 0.0 and len(runs) < 5:
        rate /= 2
        lo, hi = (rate, hi) if await probe(rate) else (lo, rate)
    for _ in range(args.steps if lo > 0 and hi < float("inf") else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if await probe(mid) else (lo, mid)
    best = max(
        (r for r in runs if r.ok(slo_ms) and r.rate <= lo), key=lambda r: r.rate, default=None
    )
    over = None
    if lo > 0:
        print(f"    {mode:<9} 2x overload:", flush=True)
        await probe(2 * lo)
        over = runs[-1]
    await ch.close()
    return ModeResult(mode, _execution(mport), lo, best, over)


def bench_model(name: str, tmp: Path, args: Any) -> tuple[base.Target, float, list[ModeResult]]:
    target = base.make_target(base.bundle_for(name, tmp), base.BUILT.get(name, (0, None))[1])
    p50 = {}
    for mode in ("batch1", "sessions"):
        with base.running(base.ServerSpec(mode, MODES[mode]), target) as (port, _, _m):
            p50[mode] = asyncio.run(_unloaded_p50(port, target))
    slo = args.slo_factor * min(p50.values())
    print(
        f"  [{target.label}] unloaded p50 (idle gaps): "
        + ", ".join(f"{m} {v:.2f} ms" for m, v in p50.items())
        + f"; SLO p99 <= {slo:.2f} ms (load average {base.loadavg()})",
        flush=True,
    )
    results = []
    for mode, flags in MODES.items():
        with base.running(base.ServerSpec(mode, flags), target) as (port, _, mport):
            assert mport is not None
            results.append(asyncio.run(_search(port, mport, target, mode, slo_ms=slo, args=args)))
    return target, slo, results


def print_table(rows: list[tuple[base.Target, float, list[ModeResult]]]) -> None:
    print("\nthroughput at the SLO, and at 2x that mode's capacity (open loop, Poisson)")
    head = (
        f"{'model':<26} {'SLO ms':>7} {'mode':<9} {'exec':<9} {'cap/s':>7} {'x best':>7} "
        f"{'ovl goodput':>12} {'% cap':>6} {'misses':>7} {'refused':>8} {'computed late':>14}"
    )
    print(head)
    print("-" * len(head))
    for target, slo, results in rows:
        ab = max(r.capacity for r in results if r.mode in ("batch1", "sessions"))
        for r in results:
            o = r.overload
            if o is None:
                tail = f"{'-':>12} {'-':>6} {'-':>7} {'-':>8} {'-':>14}"
            else:
                misses = o.sent - o.good
                late = max(0.0, o.computed - o.good)  # computed, but not a timely answer
                share = f"{100 * o.refused / misses:.0f}%" if misses else "-"
                tail = (
                    f"{o.goodput:12.0f} {100 * o.goodput / max(r.capacity, 1e-9):5.0f}% "
                    f"{misses:7d} {share:>8} {late:14.0f}"
                )
            print(
                f"{target.label:<26} {slo:7.2f} {r.mode:<9} {r.execution:<9} {r.capacity:7.0f} "
                f"{r.capacity / max(ab, 1e-9):6.2f}x {tail}"
            )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="resnet,vgg-wide")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0, help="per open-loop window")
    ap.add_argument("--steps", type=int, default=2, help="bisection steps after doubling")
    ap.add_argument("--slo-factor", type=float, default=3.0)
    args = ap.parse_args()
    t0 = time.monotonic()
    print(f"load average {base.loadavg()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows.append(bench_model(name, Path(tmp), args))
    print_table(rows)
    print(f"\n{time.monotonic() - t0:.0f} s; load average {base.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
