"""Run a scenario: edge clients against the cloud node process behind the link emulator
(collab.scenario.env), once per policy.

Every policy replays the same thing: the same trace from trace time 0, the same request
schedule (seeded), the same inputs, the same events. A short *profile pass* first measures
what every path costs on this machine with a perfect link (through the same proxy), which
the oracle combines with the true link state (see :mod:`collab.scenario.oracle`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from collab.bundle import load_bundle
from collab.edge.client import Client
from collab.edge.profile import profile_from_bundle
from collab.edge.tiers import Device, host_lite0_ms
from collab.emulator import EmulatorProcess
from collab.errors import ConfigError, TransportError
from collab.scenario.env import CloudNode, Events, scenario_env, unlimited_link
from collab.scenario.framing import framing_paths, measure_framing
from collab.scenario.measured import Measured
from collab.scenario.prepare import prepare_bundle, reference_top1, scenario_requests, serve
from collab.scenario.requests import Arrival, Record, schedule
from collab.scenario.schema import Scenario, check_split_policies

LEAD_S = 0.3  # time between creating the clients and the first request


def scenario_device(sc: Scenario, bundle: Path, edge: int = 0) -> Device | None:
    """Edge ``edge``'s seeded device of the scenario's tier (the same device in every run
    and in the model oracle), or None without a tier."""
    if sc.device.tier is None:
        return None
    host_ms = host_lite0_ms(load_bundle(bundle).manifest)
    return Device.for_host(sc.device.tier, host_ms, seed=sc.seed * 1009 + edge)


def _client(
    bundle: Path,
    address: str,
    sc: Scenario,
    policy: str,
    device: Device | None = None,
) -> Client:
    """The scenario's edge client (its ``edges:`` ClientConfig) for one run on ``device``
    (:func:`scenario_device`; its steady twin for the profile pass); the fields in
    RUNNER_EDGE are the run's."""
    return Client(
        bundle,
        device=device,
        config=replace(
            sc.edge.client,
            cloud=(address,),
            policy=policy,
            deadline_ms=sc.workload.deadline_ms,
            warm=False,
            pinned_breaker=False,  # a static baseline measures the path it names
        ),
    )


Sample = tuple[float, float, float, float]  # base ms, encode ms, edge ms, bytes


def _profile_rounds(
    client: Client,
    paths: Sequence[str],
    x: np.ndarray,
    rounds: int,
    *,
    first: int = 0,
    gaps: Callable[[], float] | None = None,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, list[Sample]]:
    """``rounds`` rounds over ``paths`` (starting at path ``first``) with ``client``; each
    request starts ``gaps()`` s after the previous one started (back to back without)."""
    samples: dict[str, list[Sample]] = {p: [] for p in paths}
    order = list(paths[first:]) + list(paths[:first])
    due = time.monotonic()
    for i in range(rounds):
        for path in order:
            if gaps is not None:
                due += gaps()
                time.sleep(max(0.0, due - time.monotonic()))
            r = serve(client, x[i % len(x)], policy=path, deadline_ms=None)
            if i == 0:
                tick()
            if not r.fell_back:
                t = r.timings
                enc = t.get("encode_ms", 0.0)
                samples[path].append(
                    (t["total_ms"] - enc, enc, t.get("edge_ms", 0.0), float(r.bytes_sent))
                )
    return samples


def profile_paths(
    paths: Sequence[str],
    bundle: Path,
    emu: EmulatorProcess,
    sc: Scenario,
    x: np.ndarray,
    reps: int = 6,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, float]]:
    """Median cost of every path (fixed policy) over the link ``emu`` carries (a perfect
    one, see :func:`run_scenario`): everything but the network. A device tier runs at
    its mean speed here (:meth:`Device.steady`). The repetitions go round the paths (a
    warm-up round first), so a second of host noise costs one sample of several paths,
    not the median of one: back to back, one such second once priced cloud-only at 108 ms
    instead of 18, and the model oracle with it.

    With several edges every device profiles at once, each at the workload's request rate
    (:func:`profile_worker`): the prices then carry what N devices, the cloud node and the
    emulator sharing this machine's cores do to every path (on fleet-8-edges a lone
    profile priced edge-only at 145 ms against 157 measured, the split at 123 against
    162), measured before any judged run and never from one."""
    if sc.edge.count > 1:
        samples = _profile_in_processes(paths, bundle, emu, sc, x, reps)
        for _ in paths:
            tick()
    else:
        device = scenario_device(sc, bundle)
        client = _client(bundle, emu.address, sc, "auto", device and device.steady())
        try:
            _profile_rounds(client, paths, x, 1)  # warm-up (sessions, connection)
            samples = _profile_rounds(client, paths, x[1:], reps, tick=tick)
        finally:
            client.close()
    out: dict[str, dict[str, float]] = {}
    for path, rows in samples.items():
        if rows:
            base, enc, edge, nbytes = (float(np.median(c)) for c in zip(*rows, strict=True))
            out[path] = {"base_ms": base, "encode_ms": enc, "edge_ms": edge, "bytes": nbytes}
    return out


@contextmanager
def _device_processes(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], name: str
) -> Iterator[list[Any]]:
    """One spawned process per device (``target(conn, *args[e])``); yields the parent
    ends of their pipes and joins (or terminates) them on the way out."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for e, a in enumerate(args):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=target, args=(child, *a), name=f"{name}-{e}", daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    try:
        yield pipes
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)


def _expect(pipes: Sequence[Any], what: str, who: str, timeout_s: float) -> list[Any]:
    """Every device's next message, which must be ``what``; their payloads."""
    out = []
    for c in pipes:
        if not c.poll(timeout_s):
            raise TransportError(f"{who} did not report {what!r}")
        kind, payload = c.recv()
        if kind != what:
            raise TransportError(f"{who}: expected {what!r}, got {kind!r}")
        out.append(payload)
    return out


def profile_worker(
    conn: Any,
    bundle: Path,
    address: str,
    sc: Scenario,
    paths: list[str],
    edge: int,
    x: np.ndarray,
    rounds: int,
) -> None:
    """One device of a fleet's profile pass, in its own process (as in the runs): a
    warm-up round, then ``rounds`` rounds starting at its own path (the fleet spreads over
    the paths), each request a seeded exponential gap at the workload's rate after the
    previous one started, so the host carries about the load the runs will put on it."""
    from collab.log import setup_logging

    setup_logging("WARNING")
    device = scenario_device(sc, bundle, edge)
    client = _client(bundle, address, sc, "auto", device and device.steady())
    rng = np.random.default_rng([sc.seed, edge, 0x9F0])
    try:
        _profile_rounds(client, paths, x, 1)
        conn.send(("ready", None))
        conn.recv()

        def gap() -> float:
            return float(rng.exponential(1.0 / sc.workload.rate_hz))

        first = edge * len(paths) // sc.edge.count
        got = _profile_rounds(client, paths, x[1:], rounds, first=first, gaps=gap)
        conn.send(("samples", got))
    finally:
        client.close()


def _profile_in_processes(
    paths: Sequence[str],
    bundle: Path,
    emu: EmulatorProcess,
    sc: Scenario,
    x: np.ndarray,
    reps: int,
) -> dict[str, list[Sample]]:
    n = sc.edge.count
    rounds = max(2, math.ceil(reps / n))
    args = [
        (
            bundle,
            emu.address,
            sc,
            list(paths),
            e,
            x[[(e * sc.workload.requests + i) % len(x) for i in range(rounds + 1)]],
            rounds,
        )
        for e in range(n)
    ]
    samples: dict[str, list[Sample]] = {p: [] for p in paths}
    with _device_processes(profile_worker, args, "profile") as pipes:
        _expect(pipes, "ready", "profile worker", 300)
        for c in pipes:
            c.send(("go", None))
        for got in _expect(pipes, "samples", "profile worker", 300):
            for path, rows in got.items():
                samples[path] += rows
    return samples


def _one(client: Any, policy: str, a: Arrival, t0: float, x: np.ndarray, ref: np.ndarray) -> Record:
    start = time.monotonic() - t0
    try:
        r = serve(client, x[a.input_index])
        return Record(
            policy=policy,
            edge=a.edge,
            index=a.index,
            at_s=a.at_s,
            start_s=start,
            latency_ms=float(r.timings["total_ms"]),
            path=r.path,
            split_point=r.split_point,
            codec=r.codec,
            bytes_sent=int(r.bytes_sent),
            deadline_met=bool(r.deadline_met),
            agree=bool(int(np.argmax(r.output)) == int(ref[a.input_index])),
            fell_back=bool(r.fell_back),
            lost=False,
            fallback_reason=r.fallback_reason or "",
            explored=bool(r.explored),
            timings={k: round(float(v), 3) for k, v in r.timings.items()},
        )
    except Exception as e:  # a lost request: recorded, never hidden
        return Record(
            policy=policy,
            edge=a.edge,
            index=a.index,
            at_s=a.at_s,
            start_s=start,
            latency_ms=math.nan,
            path="lost",
            split_point=None,
            codec=None,
            bytes_sent=0,
            deadline_met=False,
            agree=False,
            fell_back=False,
            lost=True,
            error=f"{type(e).__name__}: {e}"[:300],
        )


def _record_one(
    client: Any,
    policy: str,
    a: Arrival,
    t0: float,
    x: np.ndarray,
    ref: np.ndarray,
    on_record: Callable[[Record], None],
) -> None:
    on_record(_one(client, policy, a, t0, x, ref))


def _replay(
    clients: dict[int, Any],
    policy: str,
    plan: list[Arrival],
    t0: float,
    x: np.ndarray,
    ref: np.ndarray,
    on_record: Callable[[Record], None],
) -> None:
    """Issue every arrival at its time (open loop: a slow answer does not delay the next)."""
    with ThreadPoolExecutor(
        max_workers=min(64, 6 * len(clients)), thread_name_prefix="edge-request"
    ) as pool:
        for a in plan:
            delay = t0 + a.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(_record_one, clients[a.edge], policy, a, t0, x, ref, on_record)


def _prime(clients: list[Any]) -> None:
    for _ in range(3):  # outweigh samples taken while the sessions were loading
        for c in clients:
            if c.monitor is not None:
                c.monitor.refresh(force=True)


def _warm(c: Client) -> Client:
    c.warm()  # (the SDK warms in the background; here it must be done before t0)
    return c


def edge_worker(
    conn: Any,
    bundle: Path,
    address: str,
    sc: Scenario,
    policy: str,
    edge: int,
    plan: list[Arrival],
    x: np.ndarray,
    ref: np.ndarray,
) -> None:
    """One emulated edge device in its own process (fleet scenarios): its own interpreter and
    GIL, as on a real device, so N devices do not slow each other's padded compute down."""
    from collab.log import setup_logging

    setup_logging("WARNING")
    lock = threading.Lock()
    device = scenario_device(sc, bundle, edge)
    client = _warm(_client(bundle, address, sc, policy, device))
    try:
        conn.send(("ready", None))
        conn.recv()  # the trace restarted: probe it
        _prime([client])
        conn.send(("primed", None))
        _, t0 = conn.recv()
        if device is not None:
            device.start_at(t0)  # its episodes follow trace time, as in every run

        def send(r: Record) -> None:
            with lock:
                conn.send(("rec", asdict(r)))

        _replay({edge: client}, policy, [a for a in plan if a.edge == edge], t0, x, ref, send)
    finally:
        client.close()
        conn.send(("done", None))


def _run_in_processes(
    policy: str,
    sc: Scenario,
    bundle: Path,
    emu: EmulatorProcess,
    cloud: CloudNode,
    x: np.ndarray,
    ref: np.ndarray,
    plan: list[Arrival],
    on_record: Callable[[Record], None],
) -> list[dict[str, Any]]:
    from multiprocessing.connection import wait

    args = []
    for e in range(sc.edge.count):
        # each device gets only its own requests (camera frames are 150 KB each)
        mine = [a for a in plan if a.edge == e]
        idx = [a.input_index for a in mine]
        local = [replace(a, input_index=j) for j, a in enumerate(mine)]
        args.append((bundle, emu.address, sc, policy, e, local, x[idx], ref[idx]))
    with _device_processes(edge_worker, args, "edge") as pipes:
        _expect(pipes, "ready", "edge worker", 180)
        emu.restart(seed=sc.seed)
        for c in pipes:
            c.send(("prime", None))
        _expect(pipes, "primed", "edge worker", 180)
        t0 = time.monotonic() + LEAD_S
        emu.restart(t0=t0, seed=sc.seed)
        for c in pipes:
            c.send(("go", t0))
        with Events(sc, t0, cloud, emu) as events:
            live: list[Any] = list(pipes)
            while live:
                ready: list[Any] = wait(live, timeout=sc.duration_s + 120)
                if not ready:
                    raise TransportError("edge workers stopped reporting")
                for c in ready:
                    try:
                        kind, payload = c.recv()
                    except EOFError:
                        live.remove(c)
                        continue
                    if kind == "rec":
                        on_record(Record(**payload))
                    elif kind == "done":
                        live.remove(c)
        return events.log


def run_policy(
    policy: str,
    *,
    sc: Scenario,
    bundle: Path,
    emu: EmulatorProcess,
    cloud: CloudNode,
    x: np.ndarray,
    ref: np.ndarray,
    plan: list[Arrival],
    tick: Callable[[], None] = lambda: None,
) -> tuple[list[Record], list[dict[str, Any]], dict[str, Any]]:
    """One policy over the whole trace; returns every request, the events as applied and
    the emulator's counters of the run (every byte the link carried: frames, framing,
    probes). One edge runs in this process; several run one process each (like real
    devices)."""
    if not cloud.alive:
        emu.set_upstream("127.0.0.1", cloud.start())
    emu.cut(False)
    emu.restart(seed=sc.seed)
    records: list[Record] = []
    lock = threading.Lock()

    def on_record(r: Record) -> None:
        with lock:
            records.append(r)
        tick()

    if sc.edge.count > 1:
        log = _run_in_processes(policy, sc, bundle, emu, cloud, x, ref, plan, on_record)
    else:
        device = scenario_device(sc, bundle)
        client = _warm(_client(bundle, emu.address, sc, policy, device))
        try:
            emu.restart(seed=sc.seed)  # the client's first estimates come from the trace's start
            _prime([client])
            t0 = time.monotonic() + LEAD_S
            if device is not None:
                device.start_at(t0)  # its episodes follow trace time, as in every run
            emu.restart(t0=t0, seed=sc.seed)
            with Events(sc, t0, cloud, emu) as events:
                _replay({0: client}, policy, plan, t0, x, ref, on_record)
            log = events.log
        finally:
            client.close()
    link = emu.stats()  # counters run from the last restart, the run's t0
    records.sort(key=lambda r: (r.at_s, r.edge))
    return records, log, link


def run_scenario(
    sc: Scenario, out: Path, *, policies: tuple[str, ...] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run every policy of ``sc`` and write records, report and plots into ``out``."""
    from tqdm import tqdm

    pols = policies or sc.policies
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    t_start = time.monotonic()
    bundle = prepare_bundle(sc, progress=progress)
    profile = profile_from_bundle(load_bundle(bundle))
    check_split_policies(
        sc, profile.split_names(), lambda m: ConfigError(f"{sc.path or sc.name}: policies: {m}")
    )
    plan = schedule(sc)
    x = scenario_requests(sc, sc.edge.count * sc.workload.requests)
    ref = reference_top1(bundle, x)
    paths = profile.path_keys()
    bar = tqdm(
        total=len(paths) + len(plan) * len(pols),
        desc=f"scenario {sc.name}",
        unit="req",
        disable=not progress,
        leave=True,
    )
    all_records: list[Record] = []
    events_log: dict[str, list[dict[str, Any]]] = {}
    link_stats: dict[str, dict[str, Any]] = {}
    with scenario_env(sc, bundle, logs) as (cloud, emu):
        bar.set_postfix_str("profiling paths")
        emu.set_link(unlimited_link())
        prof = profile_paths(paths, bundle, emu, sc, x, tick=lambda: bar.update(1))
        bar.set_postfix_str("measuring RPC framing")
        framing = measure_framing(bundle, emu, sc, x, framing_paths(paths))
        emu.set_link(sc.link)
        for pol in pols:
            bar.set_postfix_str(pol)
            recs, ev, link_stats[pol] = run_policy(
                pol,
                sc=sc,
                bundle=bundle,
                emu=emu,
                cloud=cloud,
                x=x,
                ref=ref,
                plan=plan,
                tick=lambda: bar.update(1),
            )
            all_records += recs
            events_log[pol] = ev
    bar.close()
    with open(out / "requests.jsonl", "w") as f:
        for r in all_records:
            f.write(json.dumps(asdict(r)) + "\n")
    return analyse(
        sc,
        out,
        all_records,
        Measured(profile=prof, framing=framing, events=events_log, link=link_stats),
        pols,
        bundle=bundle,
        wall_s=time.monotonic() - t_start,
    )


def analyse(
    sc: Scenario,
    out: Path,
    records: list[Record],
    measured: Measured,
    pols: tuple[str, ...],
    *,
    bundle: Path,
    wall_s: float,
) -> dict[str, Any]:
    """Oracles, report and plots from recorded requests (also used by ``collab scenario
    report``). The model oracle takes the profile pass, the calibration, the trace and
    the framing, never the judged runs."""
    from collab.scenario.oracle import compute_oracle, measured_oracle
    from collab.scenario.plots import write_plots
    from collab.scenario.report import build_report, write_report

    cal = load_bundle(bundle).calibration()
    plan = schedule(sc)
    devices = [scenario_device(sc, bundle, e) for e in range(sc.edge.count)]
    steady = [d.mean_factor() if d else 1.0 for d in devices]

    def edge_factor(edge: int, t: float) -> float:
        d = devices[edge]
        return d.expected_factor(t) / steady[edge] if d else 1.0

    oracle = compute_oracle(
        sc, plan, measured.profile, cal, measured.events, measured.framing, edge_factor
    )
    best = measured_oracle(records, [p for p in pols if p != "auto"])
    report = build_report(sc, records, oracle, best, measured, pols, wall_s=wall_s, bundle=bundle)
    report["scenario_file"] = str(sc.path) if sc.path else None
    write_report(report, out)
    write_plots(sc, records, oracle, best, report, out)
    return report


def reanalyse(sc: Scenario, out: Path) -> dict[str, Any]:
    """Recompute report and plots of a finished run in ``out`` (same scenario file)."""
    try:
        old = json.loads((out / "report.json").read_text())
        rows = [
            json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines() if line
        ]
        measured = Measured.from_report(old)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{out} is not a finished scenario run: {e}") from e
    return analyse(
        sc,
        out,
        [Record(**r) for r in rows],
        measured,
        tuple(old["policies"]),
        bundle=Path(old["bundle"]),
        wall_s=float(old.get("wall_s", 0.0)),
    )
