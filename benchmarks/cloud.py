#!/usr/bin/env python3
"""Cloud node throughput/latency, side by side in one run.

For each model: a real ``collab cloud`` process with dynamic batching, the same with
``--max-batch-size 1``, and a hand-written minimal gRPC + ONNX Runtime server doing
the same work (decode frame, run the graph, encode the output). For each server:
unloaded latency and server CPU per request (one client, sequential), then C
concurrent closed-loop clients (grpc.aio, in this process) for S seconds. Every
(model, configuration) pair runs once per round, round-robin, over several rounds,
and the median round is reported, because the 2-core box is shared; the load
average is printed before, during and after.

Models: the example ``resnet`` and ``transformer`` tails (little to gain from
batching in ONNX Runtime for the conv tail), and ``vgg-head`` / ``vgg-wide``, built
here with ``collab.split.split_model``: a small conv stem with a VGG-style classifier
of three fully-connected layers (16 MB / 80 MB of float32 weights) as the cloud tail.
Those tails are weight-bound: a batch of 16 reads the weights once, so that is where
batching should pay.

Targets (issue 4): batching >= 3x req/s of batch size 1 with p99 <= 2x unloaded
latency; our unloaded per-request latency <= 1.10x the minimal server's.

The closed-loop phase cannot meet the p99 half of that target by construction (Little's
law): C = 16 clients that each wait for their answer keep 16 requests in the system, so
mean latency = 16 / throughput, and p99 >= mean; p99 <= 2 x unloaded latency L0 would need
throughput >= 16 / (2 L0) = 8x what one sequential client gets (1 / L0), which is more
than batching can give on 2 cores. So the ``slo`` phase measures what serving papers
(Clipper, InferLine) report: throughput at a latency SLO under open-loop load. For each
model it runs the batch=1 server, then the batching one (``--max-batch-size 16
--max-wait-ms 2``), each up for its whole search. It measures the server's unloaded p50
(sequential requests back to back, and with idle gaps in between), then offers Poisson
load from C streams (each sends on its own exponential clock without waiting for
answers). Latency counts from the scheduled send, so client lag counts too (no coordinated
omission), and a request still unanswered after the window (+ grace) counts as infinite.
The search finds the highest rate whose p99 <= SLO while throughput keeps up (>= 0.95 x
offered): start at 1 / L0, double until it fails, then bisect. The SLO is p99 <=
``--slo-factor`` (2) x the batch=1 server's unloaded p50 (``--slo-reference``: back to
back, the default, or after idle gaps), and it is the same for both servers. The reported
number is the ratio of the two capacities (target >= 3x). The plot ``<png>-slo.png``
shows p99 against offered rate.

Usage: .venv/bin/python benchmarks/cloud.py [--models resnet,transformer,vgg-head]
       [--seconds 4] [--rounds 4] [--slo-seconds 4] [--slo-rounds 1]   (about 20 minutes)
       .venv/bin/python benchmarks/cloud.py --slo-only [--slo-reference idle]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collab import codec  # noqa: E402
from collab.bundle import Bundle, load_bundle  # noqa: E402
from collab.procs import free_port, stop_process, wait_for_port  # noqa: E402
from collab.proto import collab_pb2, collab_pb2_grpc  # noqa: E402
from collab.transport import make_channel  # noqa: E402

# --------------------------------------------------------------------------- bundles


# models built here: name -> (classifier width, the split whose tail is measured)
BUILT = {"vgg-head": (2048, "classifier.0"), "vgg-wide": (4096, "classifier.0")}


def bundle_for(name: str, tmp: Path) -> Path:
    if name in BUILT:
        return vgg_head_bundle(tmp / name, name=name, width=BUILT[name][0])
    from collab.errors import CollabError
    from collab.split.examples import cache_root, example_bundle

    try:
        return example_bundle(name)
    except CollabError as e:  # e.g. the example model's sources are being edited
        cached = sorted(cache_root().glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
        if not cached:
            raise
        print(
            f"  (cannot build the {name} example bundle: {e}; using the newest cached "
            f"one, {cached[-1].name})",
            flush=True,
        )
        return cached[-1]


def vgg_head_bundle(out: Path, *, name: str, width: int) -> Path:
    """A weight-bound cloud tail: conv stem (edge) + VGG-style FC classifier (cloud) with
    1024*width + width*width + 10*width float32 weights (width 2048: 16 MB, 4096: 80 MB)."""
    import torch
    from torch import nn

    from collab.split import split_model

    class VggHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(4),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(1024, width),
                nn.ReLU(),
                nn.Linear(width, width),
                nn.ReLU(),
                nn.Linear(width, 10),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x))

    torch.manual_seed(0)
    split_model(VggHead().eval(), torch.randn(1, 3, 32, 32), out, name=name, progress=False)
    return out


@dataclass(frozen=True)
class Target:
    bundle: Bundle
    split: str | None  # None = Infer on the full model
    frame: bytes

    def request(self) -> collab_pb2.InferRequest | collab_pb2.DecodeRequest:
        mid = collab_pb2.ModelId(name=self.bundle.name)
        if self.split is None:
            return collab_pb2.InferRequest(model=mid, frame=self.frame)
        return collab_pb2.DecodeRequest(model=mid, split_point=self.split, frame=self.frame)

    @property
    def label(self) -> str:
        return f"{self.bundle.name} " + (f"tail@{self.split}" if self.split else "full model")


def make_target(path: Path, split: str | None = None) -> Target:
    """``split`` None: the earliest cut (the biggest tail)."""
    from collab.chain import BundleSessions

    b = load_bundle(path)
    m = b.manifest
    x = np.random.default_rng(0).standard_normal((1, *m.input_shape[1:])).astype(np.float32)
    if not m.split_points:
        return Target(b, None, codec.encode(x, "f32"))
    sp = m.split(split) if split else min(m.split_points, key=lambda s: s.index)
    feat = BundleSessions(b).head(sp.name)(x)
    return Target(b, sp.name, codec.encode(feat, "f32"))


# --------------------------------------------------------------------------- servers


def minimal_server(port: int, bundle_dir: str, split: str, flavour: str) -> None:
    """The baseline: what anyone would write in 20 lines with grpc + onnxruntime
    (``sync``: thread-pool server; ``aio``: asyncio server running ORT inline)."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from collab.chain import BundleSessions

    b = load_bundle(bundle_dir)
    sessions = BundleSessions(b, lean=False)  # the segment chain the cloud node runs too
    model = sessions.full() if split == "-" else sessions.tail(split)
    opts = [("grpc.max_receive_message_length", 64 << 20)]

    def infer(request, context):  # type: ignore[no-untyped-def]
        y = model(codec.decode(request.frame))
        return collab_pb2.InferResponse(output=codec.encode(y, "f32"))

    async def ainfer(request, context):  # type: ignore[no-untyped-def]
        return infer(request, context)

    if flavour == "aio":

        class AioServicer(collab_pb2_grpc.CloudServiceServicer):
            Infer = Decode = staticmethod(ainfer)  # type: ignore[assignment]

        async def main() -> None:
            server = grpc.aio.server(options=opts)
            collab_pb2_grpc.add_CloudServiceServicer_to_server(AioServicer(), server)
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            await server.wait_for_termination()

        asyncio.run(main())
        return

    class Servicer(collab_pb2_grpc.CloudServiceServicer):
        Infer = Decode = staticmethod(infer)  # type: ignore[assignment]

    server = grpc.server(ThreadPoolExecutor(max_workers=16), options=opts)
    collab_pb2_grpc.add_CloudServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


@dataclass(frozen=True)
class ServerSpec:
    name: str
    args: tuple[str, ...]  # `collab cloud` flags, or ("sync",) / ("aio",) for a minimal server


def cpu_seconds(pid: int) -> float:
    """CPU time of a process (sum over its threads, ns resolution from schedstat; clock
    ticks of /proc/PID/stat are 10 ms, too coarse for a few hundred sub-ms requests):
    a load-independent cost measure."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # thread exited meanwhile
            continue
    return total / 1e9


@contextmanager
def running(spec: ServerSpec, target: Target) -> Iterator[tuple[int, int, int | None]]:
    port, mport = free_port(), None
    if spec.args[0].startswith("--"):
        mport = free_port()
        cmd = [
            sys.executable,
            "-m",
            "collab.cli",
            "cloud",
            "--log-level",
            "WARNING",
            "--bundle",
            str(target.bundle.root),
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-port",
            str(mport),
            *spec.args,
        ]
    else:
        cmd = [
            sys.executable,
            __file__,
            "--minimal-server",
            str(port),
            str(target.bundle.root),
            target.split or "-",
            spec.args[0],
        ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 60, proc)
        yield port, proc.pid, mport
    finally:
        stop_process(proc)


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Result:
    unloaded_p50: float
    unloaded_cpu_ms: float  # server CPU time per request, one sequential client
    rps: float
    p50: float
    p99: float
    cpu_ms: float  # server CPU time per request under load
    mean_batch: float  # samples per executed batch under load (0 = not reported)
    lat_ms: np.ndarray  # every loaded request's latency (for the CDF plot)


def batch_stats(mport: int | None) -> tuple[float, float]:
    """(samples, batches) executed so far, from the node's /metrics."""
    if mport is None:
        return 0.0, 0.0
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    total = {"sum": 0.0, "count": 0.0}
    for line in body.splitlines():
        for k in total:
            if line.startswith(f"collab_cloud_batch_size_{k}{{"):
                total[k] += float(line.rsplit(" ", 1)[1])
    return total["sum"], total["count"]


async def _connect(port: int, target: Target) -> tuple[Any, Any, Any]:
    """(grpc.aio channel, the target's unary call, its request), channel ready."""
    ch = make_channel(f"127.0.0.1:{port}", aio=True, retries=False, health_check=False)
    stub = collab_pb2_grpc.CloudServiceStub(ch)
    call = stub.Infer if target.split is None else stub.Decode
    await asyncio.wait_for(ch.channel_ready(), 30)
    return ch, call, target.request()


async def _warm_up(call: Any, req: Any, clients: int) -> None:
    for _ in range(50):  # warm-up: connections, ORT arenas, batch shapes
        await call(req, timeout=30)
    await asyncio.gather(*(call(req, timeout=30) for _ in range(clients * 4)))


async def _sequential(call: Any, req: Any, n: int, mean_gap_s: float = 0.0) -> list[float]:
    """Latencies (s) of ``n`` sequential requests: the unloaded latency. Back to back by
    default; with ``mean_gap_s`` each waits an exponential gap first, so the client and
    the server are idle (threads asleep) when it arrives, as an open-loop request is."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        if mean_gap_s > 0:
            await asyncio.sleep(float(rng.exponential(mean_gap_s)))
        t0 = time.perf_counter()
        await call(req, timeout=30)
        out.append(time.perf_counter() - t0)
    return out


async def _measure(
    port: int,
    pid: int,
    mport: int | None,
    target: Target,
    clients: int,
    seconds: float,
    unloaded_n: int,
) -> Result:
    ch, call, req = await _connect(port, target)
    await _warm_up(call, req, clients)
    uc0 = cpu_seconds(pid)
    unloaded = await _sequential(call, req, unloaded_n)
    unloaded_cpu = (cpu_seconds(pid) - uc0) * 1000.0 / unloaded_n
    lat: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await call(req, timeout=30)
            lat.append(time.perf_counter() - t0)

    s0, b0 = batch_stats(mport)
    t0, c0 = time.perf_counter(), cpu_seconds(pid)
    await asyncio.gather(*(client() for _ in range(clients)))
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - c0
    s1, b1 = batch_stats(mport)
    await ch.close()
    ms = np.array(lat) * 1000.0
    return Result(
        float(np.median(unloaded)) * 1000.0,
        unloaded_cpu,
        len(lat) / wall,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        1000.0 * cpu / len(lat),
        (s1 - s0) / (b1 - b0) if b1 > b0 else 0.0,
        ms,
    )


def ort_per_sample(target: Target, sizes: tuple[int, ...] = (1, 4, 16)) -> dict[int, float]:
    """ONNX Runtime alone: ms per sample at each batch size (min over interleaved runs) —
    what batching can save in compute at best."""
    from collab.chain import BundleSessions

    sessions = BundleSessions(target.bundle, lean=False)
    model = sessions.full() if target.split is None else sessions.tail(target.split)
    x1 = codec.decode(target.frame)
    xs = {n: np.repeat(x1, n, axis=0) for n in sizes}
    best = {n: float("inf") for n in sizes}
    for _ in range(3):
        model(xs[sizes[-1]])
    for _ in range(15):
        for n in sizes:
            t0 = time.perf_counter()
            model(xs[n])
            best[n] = min(best[n], (time.perf_counter() - t0) * 1000.0 / n)
    return best


@dataclass(frozen=True)
class Overhead:
    cpu_ms: dict[str, float]  # server CPU per request (median over blocks)
    p50_ms: dict[str, float]  # latency (median over blocks of the block's median)


async def _overhead(
    servers: dict[str, tuple[int, int]], target: Target, blocks: int, block: int
) -> Overhead:
    """Sequential requests to servers that run side by side, alternating in blocks, so
    that machine noise hits each alike; CPU read from each server's threads."""
    calls = {}
    for name, (port, pid) in servers.items():
        ch = make_channel(f"127.0.0.1:{port}", aio=True, retries=False, health_check=False)
        await asyncio.wait_for(ch.channel_ready(), 30)
        stub = collab_pb2_grpc.CloudServiceStub(ch)
        calls[name] = (stub.Infer if target.split is None else stub.Decode, pid, ch)
    req = target.request()
    for call, _, _ in calls.values():
        for _ in range(100):
            await call(req, timeout=30)
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    lat: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(blocks):
        for name, (call, pid, _) in calls.items():
            c0, ls = cpu_seconds(pid), []
            for _ in range(block):
                t0 = time.perf_counter()
                await call(req, timeout=30)
                ls.append(time.perf_counter() - t0)
            cpu[name].append((cpu_seconds(pid) - c0) * 1000.0 / block)
            lat[name].append(statistics.median(ls) * 1000.0)
    for _, _, ch in calls.values():
        await ch.close()
    return Overhead(
        {k: statistics.median(v) for k, v in cpu.items()},
        {k: statistics.median(v) for k, v in lat.items()},
    )


def overhead(
    targets: list[Target], specs: list[ServerSpec], *, blocks: int, block: int
) -> list[Overhead]:
    out = []
    for target in targets:
        with contextlib.ExitStack() as stack:
            servers = {s.name: stack.enter_context(running(s, target))[:2] for s in specs}
            out.append(asyncio.run(_overhead(servers, target, blocks, block)))
        print(
            f"  [{target.label}] side-by-side overhead done (load average {loadavg()})", flush=True
        )
    return out


def print_overhead(
    targets: list[Target], res: list[Overhead], minimal: str, blocks: int, block: int
) -> None:
    print(
        f"\n### Per-request overhead vs the minimal gRPC+ORT server, side by side "
        f"(servers up together, {blocks} alternating blocks of {block} sequential requests; "
        f"medians over blocks)\n"
    )
    names = [k for k in res[0].cpu_ms if k != minimal]
    print(
        "| tail | minimal CPU ms/req | minimal p50 ms | "
        + " | ".join(f"{k}: CPU ratio | {k}: p50 ratio" for k in names)
        + " |"
    )
    print("|---|---:|---:|" + "---:|---:|" * len(names))
    for t, o in zip(targets, res, strict=True):
        mc, ml = o.cpu_ms[minimal], o.p50_ms[minimal]
        print(
            f"| {t.label} | {mc:.3f} | {ml:.3f} | "
            + " | ".join(f"{o.cpu_ms[k] / mc:.3f}x | {o.p50_ms[k] / ml:.3f}x" for k in names)
            + " |"
        )


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median_result(rs: list[Result]) -> Result:
    """Per-metric medians; the loaded numbers come from the round with the median req/s."""
    mid = sorted(rs, key=lambda x: x.rps)[len(rs) // 2]
    return Result(
        statistics.median(x.unloaded_p50 for x in rs),
        statistics.median(x.unloaded_cpu_ms for x in rs),
        mid.rps,
        mid.p50,
        mid.p99,
        statistics.median(x.cpu_ms for x in rs),
        mid.mean_batch,
        mid.lat_ms,
    )


def bench(
    targets: list[Target],
    specs: list[ServerSpec],
    *,
    clients: int,
    seconds: float,
    rounds: int,
    unloaded_n: int,
) -> list[tuple[Target, dict[str, Result], dict[int, float]]]:
    pers = []
    for target in targets:
        pers.append(ort_per_sample(target))
        print(
            f"  [{target.label}] ONNX Runtime alone, ms/sample by batch size: "
            + ", ".join(f"bs{n}: {v:.3f}" for n, v in pers[-1].items()),
            flush=True,
        )
    runs: list[dict[str, list[Result]]] = [{s.name: [] for s in specs} for _ in targets]
    jobs = [(i, spec) for i in range(len(targets)) for spec in specs]
    from tqdm import tqdm

    with tqdm(total=rounds * len(jobs), desc="cloud benchmark", unit="run", file=sys.stderr) as bar:
        for r in range(rounds):
            print(f"  round {r + 1}/{rounds}: load average {loadavg()}", flush=True)
            for i, spec in jobs:  # round-robin: machine noise hits every config alike
                target = targets[i]
                with running(spec, target) as (port, pid, mport):
                    res = asyncio.run(
                        _measure(port, pid, mport, target, clients, seconds, unloaded_n)
                    )
                runs[i][spec.name].append(res)
                bar.update()
                tqdm.write(
                    f"  [{target.label}] round {r + 1}/{rounds} {spec.name:<30} "
                    f"unloaded {res.unloaded_p50:6.2f} ms cpu {res.unloaded_cpu_ms:.3f}  "
                    f"{res.rps:7.0f} req/s  p50 {res.p50:6.2f}  p99 {res.p99:6.2f}  "
                    f"cpu/req {res.cpu_ms:.3f} ms  batch {res.mean_batch:.1f}",
                    file=sys.stdout,
                )
    return [
        (t, {k: median_result(rs) for k, rs in run.items()}, per)
        for t, run, per in zip(targets, runs, pers, strict=True)
    ]


def print_table(
    target: Target,
    res: dict[str, Result],
    per: dict[int, float],
    clients: int,
    base: str,
    minimal: str,
) -> None:
    b = res[base]
    print(
        f"\n### {target.label} — {clients} concurrent clients "
        f"(frame {len(target.frame)} B, median of rounds)\n"
    )
    print(
        "ONNX Runtime alone, ms/sample: "
        + ", ".join(f"batch {n}: {v:.3f}" for n, v in per.items())
        + "\n"
    )
    print(
        "| server | unloaded p50 ms | unloaded CPU ms/req | req/s | p50 ms | p99 ms | "
        "p99 / unloaded | req/s vs batch=1 | loaded CPU ms/req | mean batch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, r in res.items():
        mb = f"{r.mean_batch:.1f}" if r.mean_batch else "-"
        print(
            f"| {k} | {r.unloaded_p50:.2f} | {r.unloaded_cpu_ms:.3f} | {r.rps:.0f} | "
            f"{r.p50:.2f} | {r.p99:.2f} | {r.p99 / r.unloaded_p50:.2f}x | {r.rps / b.rps:.2f}x | "
            f"{r.cpu_ms:.3f} | {mb} |"
        )
    if minimal in res:
        m = res[minimal]
        print(
            "\nper-request latency vs minimal gRPC+ORT server (unloaded p50): "
            + ", ".join(
                f"{k}: {r.unloaded_p50 / m.unloaded_p50:.2f}x"
                for k, r in res.items()
                if k != minimal
            )
        )
        print(
            f"throughput at {clients} clients vs minimal server: "
            + ", ".join(f"{k}: {r.rps / m.rps:.2f}x" for k, r in res.items() if k != minimal)
        )
        print(
            "server CPU per request vs minimal server, unloaded: "
            + ", ".join(
                f"{k}: {r.unloaded_cpu_ms / m.unloaded_cpu_ms:.2f}x"
                for k, r in res.items()
                if k != minimal
            )
        )
        print(
            f"server CPU per request vs minimal server, {clients} clients: "
            + ", ".join(f"{k}: {r.cpu_ms / m.cpu_ms:.2f}x" for k, r in res.items() if k != minimal)
        )


def plot(
    out: list[tuple[Target, dict[str, Result], dict[int, float]]], path: Path, clients: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(out), figsize=(6 * len(out), 8), squeeze=False)
    for col, (target, res, _) in enumerate(out):
        ax = axes[0][col]
        for k, r in res.items():
            xs = np.sort(r.lat_ms)
            ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=k)
            ax.axvline(r.unloaded_p50, ls=":", lw=0.8, color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms), dotted = unloaded p50")
        ax.set_ylabel("CDF")
        ax.set_title(f"{target.label}: {clients} concurrent clients")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        names = list(res)
        ax.bar(range(len(names)), [res[k].rps for k in names])
        ax.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names], fontsize=7)
        ax.set_ylabel("requests/s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


# --------------------------------------------------------------------------- slo: open loop


# Timers of the asyncio loop fire up to ~1 ms late (epoll rounds the timeout up to whole ms),
# so a stream wakes this much before a scheduled send; a late send is timed from its
# scheduled instant (client lag counts, no coordinated omission), an early one from when it
# actually left.
_WAKE_EARLY_S = 0.001


@dataclass(frozen=True)
class Probe:
    """One open-loop run at a fixed offered rate."""

    rate: float  # offered req/s (Poisson, nominal)
    sent: int  # arrivals in the window (all are sent, late if the client lagged)
    achieved: float  # answers received within the window, per second
    p50: float  # ms from the scheduled send; inf = no answer (by the window's end + grace)
    p99: float
    lag_p99: float  # ms a send left after its scheduled instant (client-side; in the latency)
    lost: int  # requests without an answer (failed, deadline exceeded or still outstanding)
    mean_batch: float  # samples per executed batch (0 = not reported)
    ok: bool  # p99 <= SLO and achieved >= 0.95 x offered


@dataclass(frozen=True)
class SloRun:
    """One throughput-at-SLO search on one server."""

    unloaded_p50: float  # ms, sequential back-to-back requests to this server
    idle_p50: float  # ms, sequential requests after idle gaps (what a lone open-loop one sees)
    idle_p99: float  # ms, the same; above the SLO = the SLO cannot hold even at zero load
    slo_ms: float
    probes: list[Probe]

    @property
    def best(self) -> Probe | None:
        """The highest passing probe below the lowest failing one (None: nothing passed)."""
        fail = min((p.rate for p in self.probes if not p.ok), default=float("inf"))
        ok = [p for p in self.probes if p.ok and p.rate < fail]
        return max(ok, key=lambda p: p.rate) if ok else None

    @property
    def capacity(self) -> float:
        b = self.best
        return b.rate if b else 0.0


def _pct(ms: np.ndarray, q: float) -> float:
    """Percentile that tolerates inf (no interpolation: the next sample up)."""
    return float(np.percentile(ms, q, method="higher")) if len(ms) else float("inf")


def _arrivals(rng: np.random.Generator, rate: float, seconds: float) -> np.ndarray:
    """Poisson arrival instants in [0, seconds) at ``rate`` per second."""
    n = int(rate * seconds + 6 * np.sqrt(rate * seconds) + 16)
    while True:
        t = np.cumsum(rng.exponential(1.0 / rate, n))
        if t[-1] >= seconds:
            return t[t < seconds]
        n *= 2


async def _open_loop(
    call: Any,
    req: Any,
    mport: int | None,
    *,
    rate: float,
    streams: int,
    seconds: float,
    slo_ms: float,
    seed: int,
) -> Probe:
    """``streams`` independent Poisson streams of ``rate / streams`` each, for ``seconds``:
    every request is sent at its scheduled instant whether or not earlier ones returned.
    Answers still missing ``grace`` after the window (deadline of every call) count as inf."""
    rng = np.random.default_rng(seed)
    grace = max(0.5, 20 * slo_ms / 1000.0)
    plans = [_arrivals(rng, rate / streams, seconds) for _ in range(streams)]
    lat: list[float] = []
    lag: list[float] = []
    in_window = 0
    tasks: set[asyncio.Task[None]] = set()
    s0, b0 = batch_stats(mport)
    start = time.perf_counter() + 0.05
    end = start + seconds

    async def one(ref: float) -> None:
        nonlocal in_window
        try:
            await call(req, timeout=max(0.01, end + grace - time.perf_counter()))
        except grpc.aio.AioRpcError:
            return  # counted as lost (inf)
        t = time.perf_counter()
        lat.append(t - ref)
        if t <= end:
            in_window += 1

    async def stream(plan: np.ndarray) -> None:
        for offset in plan:
            t = start + float(offset)
            delay = t - time.perf_counter() - _WAKE_EARLY_S
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()  # behind schedule: send every due request at once
            lag.append(now - t)
            tasks.add(asyncio.create_task(one(min(t, now))))

    await asyncio.gather(*(stream(p) for p in plans))
    if tasks:
        _, pending = await asyncio.wait(
            tasks, timeout=max(0.0, end + grace + 0.1 - time.perf_counter())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    s1, b1 = batch_stats(mport)
    sent = sum(len(p) for p in plans)
    ms = np.array(lat + [float("inf")] * (sent - len(lat))) * 1000.0
    p99, achieved = _pct(ms, 99), in_window / seconds
    return Probe(
        rate,
        sent,
        achieved,
        _pct(ms, 50),
        p99,
        max(0.0, _pct(np.array(lag) * 1000.0, 99)),
        sent - len(lat),
        (s1 - s0) / (b1 - b0) if b1 > b0 else 0.0,
        p99 <= slo_ms and achieved >= 0.95 * sent / seconds,
    )


SLO_REFERENCES = ("sequential", "idle")
IDLE_GAP_S = 0.01  # mean gap before each request of the "idle" unloaded latency


async def _slo_search(
    port: int,
    mport: int | None,
    target: Target,
    *,
    label: str,
    slo_ms: float | None,
    reference: str,
    factor: float,
    streams: int,
    seconds: float,
    unloaded_n: int,
    steps: int,
    seed: int,
) -> SloRun:
    """Unloaded p50 of this server (back to back, and after idle gaps), then the highest
    open-loop rate meeting the SLO (``slo_ms`` None: ``factor`` x this server's unloaded p50 of
    kind ``reference``): start at 1 / back-to-back p50 (what one closed-loop client gets),
    double (or halve) until the outcome flips, then bisect ``steps`` times."""
    from tqdm import tqdm

    ch, call, req = await _connect(port, target)
    await _warm_up(call, req, streams)
    l0 = statistics.median(await _sequential(call, req, unloaded_n)) * 1000.0
    idle_ms = np.array(await _sequential(call, req, max(50, unloaded_n // 2), IDLE_GAP_S)) * 1e3
    idle, idle99 = float(np.median(idle_ms)), _pct(idle_ms, 99)
    slo = factor * (l0 if reference == "sequential" else idle) if slo_ms is None else slo_ms
    tqdm.write(
        f"  [{target.label}] {label:<24} unloaded p50 {l0:.3f} ms back to back, "
        f"{idle:.3f} ms (p99 {idle99:.3f}) after idle gaps; SLO p99 <= {slo:.3f} ms "
        f"(load average {loadavg()})",
        file=sys.stdout,
    )
    probes: list[Probe] = []

    async def probe(rate: float) -> bool:
        p = await _open_loop(
            call,
            req,
            mport,
            rate=rate,
            streams=streams,
            seconds=seconds,
            slo_ms=slo,
            seed=seed + len(probes),
        )
        probes.append(p)
        mb = f"  batch {p.mean_batch:4.1f}" if p.mean_batch else ""
        tqdm.write(
            f"  [{target.label}] {label:<24} offered {p.rate:7.0f}/s (sent "
            f"{p.sent / seconds:7.0f}/s)  achieved "
            f"{p.achieved:7.0f}/s  p50 {p.p50:8.2f}  p99 {p.p99:8.2f} ms  lost {p.lost:5d}  "
            f"send lag p99 {p.lag_p99:5.2f} ms{mb}  {'pass' if p.ok else 'FAIL'}",
            file=sys.stdout,
        )
        await asyncio.sleep(0.3)  # let the server drain (late requests are dropped)
        return p.ok

    rate = 1000.0 / l0
    lo, hi = (rate, float("inf")) if await probe(rate) else (0.0, rate)
    while hi == float("inf") and len(probes) < 16:
        rate *= 2
        lo, hi = (rate, hi) if await probe(rate) else (lo, rate)
    while lo == 0.0 and len(probes) < 6:
        rate /= 2
        lo, hi = (rate, hi) if await probe(rate) else (lo, rate)
    for _ in range(steps if lo > 0 and hi < float("inf") else 0):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if await probe(mid) else (lo, mid)
    await ch.close()
    return SloRun(l0, idle, idle99, slo, probes)


def slo_bench(
    targets: list[Target],
    base: ServerSpec,
    batching: ServerSpec,
    *,
    streams: int,
    seconds: float,
    rounds: int,
    unloaded_n: int,
    steps: int,
    reference: str,
    factor: float,
) -> list[dict[str, list[SloRun]]]:
    """Per target and round: the batch=1 search (it sets the SLO), then the batching one
    against the same SLO; each server runs for its whole search."""
    from tqdm import tqdm

    out: list[dict[str, list[SloRun]]] = [{base.name: [], batching.name: []} for _ in targets]
    with tqdm(
        total=rounds * len(targets) * 2, desc="throughput at SLO", unit="search", file=sys.stderr
    ) as bar:
        for r in range(rounds):
            print(f"  slo round {r + 1}/{rounds}: load average {loadavg()}", flush=True)
            for i, target in enumerate(targets):
                slo: float | None = None
                for j, spec in enumerate((base, batching)):
                    with running(spec, target) as (port, _, mport):
                        run = asyncio.run(
                            _slo_search(
                                port,
                                mport,
                                target,
                                label=spec.name,
                                slo_ms=slo,
                                reference=reference,
                                factor=factor,
                                streams=streams,
                                seconds=seconds,
                                unloaded_n=unloaded_n,
                                steps=steps,
                                seed=100_000 * r + 1000 * i + 100 * j,
                            )
                        )
                    slo = run.slo_ms
                    out[i][spec.name].append(run)
                    bar.update()
                    tqdm.write(
                        f"  [{target.label}] {spec.name}: {run.capacity:.0f} req/s at "
                        f"p99 <= {run.slo_ms:.2f} ms",
                        file=sys.stdout,
                    )
    return out


def print_slo(
    targets: list[Target],
    res: list[dict[str, list[SloRun]]],
    base: str,
    batching: str,
    streams: int,
    seconds: float,
    reference: str,
    factor: float,
) -> None:
    rounds = len(res[0][base]) if res else 0
    ref = (
        "back-to-back"
        if reference == "sequential"
        else f"after idle gaps (exponential, mean {IDLE_GAP_S * 1000:g} ms)"
    )
    print(
        f"\n### Throughput at a latency SLO, open loop ({streams} Poisson client streams, "
        f"{seconds:g} s per probe{f', median of {rounds} rounds' if rounds > 1 else ''}; "
        f"SLO: p99 <= {factor:g} x the batch=1 server's unloaded p50 {ref}; a probe passes "
        f"if also achieved >= 0.95 x offered)\n"
    )
    print(
        f"| tail | unloaded p50 ms back to back, batch=1 / batch<=16 | after idle gaps, "
        f"p50 (p99), batch=1 / batch<=16 | SLO p99 ms | req/s at SLO, {base} | req/s at SLO, "
        f"{batching} | ratio (target >= 3x) | mean batch at capacity | "
        f"p99 at capacity, batch=1 / batch<=16 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    infeasible: list[str] = []
    for t, r in zip(targets, res, strict=True):
        b, m = r[base], r[batching]
        cb = statistics.median(x.capacity for x in b)
        cm = statistics.median(x.capacity for x in m)
        bests = [x.best for x in m]
        batch = statistics.median(p.mean_batch for p in bests if p) if any(bests) else 0.0
        p99s = [
            "/".join(f"{p.p99:.2f}" if p else "-" for p in (x.best for x in runs))
            for runs in (b, m)
        ]
        ratio = f"{cm / cb:.2f}x" if cb else "-"
        print(
            f"| {t.label} | {statistics.median(x.unloaded_p50 for x in b):.3f} / "
            f"{statistics.median(x.unloaded_p50 for x in m):.3f} | "
            f"{statistics.median(x.idle_p50 for x in b):.3f} "
            f"({statistics.median(x.idle_p99 for x in b):.2f}) / "
            f"{statistics.median(x.idle_p50 for x in m):.3f} "
            f"({statistics.median(x.idle_p99 for x in m):.2f}) | "
            f"{statistics.median(x.slo_ms for x in b):.3f} | {cb:.0f} | {cm:.0f} | {ratio} | "
            f"{batch:.1f} | {p99s[0]} / {p99s[1]} |"
        )
        if statistics.median(x.idle_p99 for x in b) > statistics.median(x.slo_ms for x in b):
            infeasible.append(t.label)
        if rounds > 1:
            print(
                f"|   per round: | | | | {', '.join(f'{x.capacity:.0f}' for x in b)} | "
                f"{', '.join(f'{x.capacity:.0f}' for x in m)} | "
                + ", ".join(
                    f"{y.capacity / x.capacity:.2f}x" if x.capacity else "-"
                    for x, y in zip(b, m, strict=True)
                )
                + " | | |"
            )
    if infeasible:
        print(
            f"\nSLO below the p99 of lone requests to the idle batch=1 server (unattainable "
            f"at any load on this machine, as measured): {', '.join(infeasible)}"
        )


def plot_slo(targets: list[Target], res: list[dict[str, list[SloRun]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 4.5), squeeze=False)
    for ax, target, r in zip(axes[0], targets, res, strict=True):
        slo = statistics.median(x.slo_ms for runs in r.values() for x in runs)
        top = 20 * slo  # no answer in time (p99 = inf) is drawn here
        for k, runs in r.items():
            color = None
            for n, run in enumerate(runs):
                ps = sorted(run.probes, key=lambda p: p.rate)
                xs, ys = [p.rate for p in ps], [min(p.p99, top) for p in ps]
                (line,) = ax.plot(
                    xs, ys, "-", lw=1, color=color, alpha=0.8, label=k if n == 0 else None
                )
                color = line.get_color()
                ax.scatter(
                    [p.rate for p in ps if p.ok],
                    [min(p.p99, top) for p in ps if p.ok],
                    color=color,
                    s=18,
                    zorder=3,
                )
                ax.scatter(
                    [p.rate for p in ps if not p.ok],
                    [min(p.p99, top) for p in ps if not p.ok],
                    color=color,
                    s=22,
                    marker="x",
                    zorder=3,
                )
                if run.capacity:
                    ax.axvline(run.capacity, ls="--", lw=0.8, color=color)
        ax.axhline(slo, ls=":", color="k", lw=1, label=f"SLO {slo:.2f} ms")
        ax.set_yscale("log")
        ax.set_xscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_ylim(top=top * 1.3)
        ax.set_xlabel("offered load, req/s (Poisson; dashed = capacity at SLO)")
        ax.set_ylabel(f"p99 latency ms (x = fail; {top:.0f} = off scale)")
        ax.set_title(f"{target.label}: p99 vs offered load, open loop")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nplot: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="resnet,transformer,vgg-head,vgg-wide")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--png", type=Path, default=ROOT / "out" / "benchmarks" / "cloud.png")
    ap.add_argument(
        "--unloaded", type=int, default=200, help="sequential requests for unloaded latency"
    )
    ap.add_argument(
        "--overhead-blocks",
        type=int,
        default=30,
        help="alternating blocks of the side-by-side overhead phase (0 = skip)",
    )
    ap.add_argument(
        "--overhead-only", action="store_true", help="run only the side-by-side overhead phase"
    )
    ap.add_argument(
        "--slo-only", action="store_true", help="run only the open-loop throughput-at-SLO phase"
    )
    ap.add_argument(
        "--slo-seconds",
        type=float,
        default=4.0,
        help="seconds of open-loop load per probe of the slo phase",
    )
    ap.add_argument(
        "--slo-rounds",
        type=int,
        default=1,
        help="rounds of the slo phase, median reported (0 = skip the phase)",
    )
    ap.add_argument(
        "--slo-steps", type=int, default=4, help="bisection steps of the slo search after doubling"
    )
    ap.add_argument(
        "--slo-factor",
        type=float,
        default=2.0,
        help="SLO: p99 <= this x the batch=1 server's unloaded p50",
    )
    ap.add_argument(
        "--slo-reference",
        choices=SLO_REFERENCES,
        default="sequential",
        help="unloaded latency the SLO is --slo-factor x of: back-to-back "
        "(sequential) or requests after idle gaps (idle)",
    )
    ap.add_argument(
        "--aio-baseline",
        action="store_true",
        help="also run a minimal grpc.aio server (ORT inline on the loop)",
    )
    ap.add_argument(
        "--minimal-server",
        nargs=4,
        metavar=("PORT", "BUNDLE", "SPLIT", "FLAVOUR"),
        help=argparse.SUPPRESS,
    )
    args = ap.parse_args()
    if args.minimal_server:
        port, bundle, split, flavour = args.minimal_server
        minimal_server(int(port), bundle, split, flavour)
        return 0
    base, minimal = "collab cloud, batch=1", "minimal grpc+ORT"
    specs = [
        ServerSpec("collab cloud, batch<=16", ("--max-batch-size", "16", "--max-wait-ms", "2")),
        ServerSpec(
            "collab cloud, batch<=16 wait0", ("--max-batch-size", "16", "--max-wait-ms", "0")
        ),
        ServerSpec(
            "collab cloud, batch<=16 wait5", ("--max-batch-size", "16", "--max-wait-ms", "5")
        ),
        ServerSpec(
            "collab cloud, batch<=16 workers=1",
            ("--max-batch-size", "16", "--max-wait-ms", "2", "--workers", "1"),
        ),
        ServerSpec(base, ("--max-batch-size", "1", "--max-wait-ms", "0")),
        ServerSpec(minimal, ("sync",)),
    ]
    if args.aio_baseline:
        specs.append(ServerSpec("minimal grpc.aio+ORT inline", ("aio",)))
    print(f"load average before: {loadavg()} ({os.cpu_count()} cores)", flush=True)
    with tempfile.TemporaryDirectory(prefix="collab-bench-cloud-") as tmp:
        targets = [
            make_target(bundle_for(name, Path(tmp)), BUILT[name][1] if name in BUILT else None)
            for name in args.models.split(",")
        ]
        side = [s for s in specs if s.name in (specs[0].name, base, minimal)]
        ovh = (
            overhead(targets, side, blocks=args.overhead_blocks, block=50)
            if args.overhead_blocks and not args.slo_only
            else []
        )
        out = (
            []
            if args.overhead_only or args.slo_only
            else bench(
                targets,
                specs,
                clients=args.clients,
                seconds=args.seconds,
                rounds=args.rounds,
                unloaded_n=args.unloaded,
            )
        )
        base_spec = next(s for s in specs if s.name == base)
        slo = (
            []
            if args.overhead_only or args.slo_rounds < 1
            else slo_bench(
                targets,
                base_spec,
                specs[0],
                streams=args.clients,
                seconds=args.slo_seconds,
                rounds=args.slo_rounds,
                unloaded_n=args.unloaded,
                steps=args.slo_steps,
                reference=args.slo_reference,
                factor=args.slo_factor,
            )
        )
    print(f"\nload average after: {loadavg()}")
    if ovh:
        print_overhead(targets, ovh, minimal, args.overhead_blocks, 50)
    for target, res, per in out:
        print_table(target, res, per, args.clients, base, minimal)
    if out:
        plot(out, args.png, args.clients)
    if slo:
        print_slo(
            targets,
            slo,
            base,
            specs[0].name,
            args.clients,
            args.slo_seconds,
            args.slo_reference,
            args.slo_factor,
        )
        plot_slo(targets, slo, args.png.with_name(f"{args.png.stem}-slo.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
