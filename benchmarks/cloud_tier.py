#!/usr/bin/env python3
"""The cloud tier under open-loop load: four execution/scheduling modes side by side.

Modes (each a real ``collab cloud`` process; all four run at once, idle but for the
window being measured, so the modes see the same machine):

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
goodput keeps up (>= 0.95 x offered), on one geometric ladder of rates (x1.25 from a
fifth of 1 / the fastest mode's back-to-back latency; a window lasts ``--seconds`` or long
enough for ``--min-requests``, so a p99 never rests on a handful of requests) climbed by
every mode in turn, window by window (a, b, c, d, a, b, ...): a burst of host noise hits
neighbouring windows of every mode alike, instead of one
mode's whole search. A mode leaves the ladder after two failed rungs in a row. The ladder
is climbed ``--ladders`` times and a mode's capacity is the median of what they found
(all are printed): at a p99 SLO a single host stall fails a rung.

Overload: each mode is then offered 2x its own capacity for ``--seconds``, the modes
interleaved again, ``--repeats`` times (the median of each figure is reported); reported are
goodput (answers within the deadline, per second) as a share of that capacity, and how
the misses ended: refused by the node before compute (an error status with time to
spare: EDF's early rejection or the queue bound), or not (timed out: queued until the
deadline, or computed too late; the node's /metrics tell how many of those it computed).

Usage: .venv/bin/python benchmarks/cloud_tier.py [--models resnet,vgg-wide]
       [--seconds 2] [--ladders 3] [--repeats 3]      (about 20 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
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
    ladders: tuple[float, ...]  # the capacity each ladder found


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


@dataclass
class _Conn:
    mode: str
    call: Any
    req: Any
    mport: int


async def _ladder(
    conns: list[_Conn], target: base.Target, *, slo_ms: float, l0: float, args: Any
) -> list[ModeResult]:
    """Every mode up one shared ladder of rates, then 2x its capacity, interleaved."""

    async def probe(c: _Conn, rate: float) -> Run:
        seconds = max(args.seconds, args.min_requests / rate)  # p99 of enough requests
        r = await _window(
            c.call, c.req, c.mport, rate=rate, streams=args.streams, seconds=seconds,
            slo_ms=slo_ms,
        )  # fmt: skip
        print(
            f"    {c.mode:<9} offered {rate:7.0f}/s  goodput {r.goodput:7.0f}/s  p99 "
            f"{r.p99:8.2f} ms  refused {r.refused:5d}  timed out {r.timed_out:5d}  "
            f"{'pass' if r.ok(slo_ms) else 'FAIL'}",
            flush=True,
        )
        return r

    caps: dict[str, list[Run | None]] = {c.mode: [] for c in conns}
    for k in range(args.ladders):
        print(f"    ladder {k + 1}/{args.ladders}:", flush=True)
        top: dict[str, Run | None] = {c.mode: None for c in conns}
        fails = {c.mode: 0 for c in conns}
        rate = 0.2 * 1000.0 / l0
        while any(f < 2 for f in fails.values()) and rate < 64 * 1000.0 / l0:
            for c in conns:
                if fails[c.mode] >= 2:
                    continue
                r = await probe(c, rate)
                if r.ok(slo_ms):
                    top[c.mode], fails[c.mode] = r, 0
                else:
                    fails[c.mode] += 1
            rate *= 1.25
        for m, found in top.items():
            caps[m].append(found)
    # a mode's capacity: the median over the ladders (one host stall fails a rung of one
    # ladder, not the figure)
    best = {m: _median_cap(rs) for m, rs in caps.items()}
    over: dict[str, list[Run]] = {c.mode: [] for c in conns}
    for i in range(args.repeats):
        print(f"    2x overload, round {i + 1}/{args.repeats}:", flush=True)
        for c in conns:
            b = best[c.mode]
            if b is not None:
                over[c.mode].append(await probe(c, 2 * b.rate))
    out = []
    for c in conns:
        b = best[c.mode]
        cap = b.rate if b is not None else 0.0
        ladders = tuple(r.rate if r is not None else 0.0 for r in caps[c.mode])
        out.append(
            ModeResult(c.mode, _execution(c.mport), cap, b, _median_run(over[c.mode]), ladders)
        )
    return out


def _median_cap(runs: list[Run | None]) -> Run | None:
    """The ladder whose capacity is the median (a ladder with none counts as 0)."""
    ranked = sorted(runs, key=lambda r: r.rate if r is not None else 0.0)
    return ranked[(len(ranked) - 1) // 2] if ranked else None


def _median_run(runs: list[Run]) -> Run | None:
    """The run with the median goodput (its own counts stay consistent)."""
    if not runs:
        return None
    return sorted(runs, key=lambda r: r.goodput)[len(runs) // 2]


async def _measure_all(
    ports: dict[str, tuple[int, int]], target: base.Target, *, slo_ms: float, args: Any
) -> list[ModeResult]:
    conns, chans = [], []
    for mode, (port, mport) in ports.items():
        ch, call, req = await base._connect(port, target)
        await base._warm_up(call, req, args.streams)
        conns.append(_Conn(mode, call, req, mport))
        chans.append(ch)
    # the ladder starts from the fastest mode's back-to-back latency
    l0 = min([float(np.median(await base._sequential(c.call, c.req, 100))) for c in conns])
    l0 *= 1000.0
    try:
        return await _ladder(conns, target, slo_ms=slo_ms, l0=l0, args=args)
    finally:
        for ch in chans:
            await ch.close()


def bench_model(name: str, tmp: Path, args: Any) -> tuple[base.Target, float, list[ModeResult]]:
    target = base.make_target(base.bundle_for(name, tmp), base.BUILT.get(name, (0, None))[1])
    with ExitStack() as stack:
        ports: dict[str, tuple[int, int]] = {}
        for mode, flags in MODES.items():
            port, _, mport = stack.enter_context(base.running(base.ServerSpec(mode, flags), target))
            assert mport is not None
            ports[mode] = (port, mport)
        p50 = {m: asyncio.run(_unloaded_p50(ports[m][0], target)) for m in ("batch1", "sessions")}
        slo = args.slo_factor * min(p50.values())
        print(
            f"  [{target.label}] unloaded p50 (idle gaps): "
            + ", ".join(f"{m} {v:.2f} ms" for m, v in p50.items())
            + f"; SLO p99 <= {slo:.2f} ms (load average {base.loadavg()})",
            flush=True,
        )
        return target, slo, asyncio.run(_measure_all(ports, target, slo_ms=slo, args=args))


def print_table(rows: list[tuple[base.Target, float, list[ModeResult]]]) -> None:
    print("\nthroughput at the SLO, and at 2x that mode's capacity (open loop, Poisson)")
    head = (
        f"{'model':<26} {'SLO ms':>7} {'mode':<9} {'exec':<9} {'cap/s':>7} {'x best':>7} "
        f"{'ovl goodput':>12} {'% cap':>6} {'misses':>7} {'refused':>8} {'computed late':>14}"
        f"  ladders"
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
                f"{r.capacity / max(ab, 1e-9):6.2f}x {tail}  "
                + "/".join(f"{c:.0f}" for c in r.ladders)
            )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="resnet,vgg-wide")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0, help="per open-loop window")
    ap.add_argument("--min-requests", type=int, default=500, help="per window, at least")
    ap.add_argument("--ladders", type=int, default=3, help="capacity searches (median taken)")
    ap.add_argument("--repeats", type=int, default=3, help="2x overload windows per mode")
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
