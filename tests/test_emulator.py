"""The link emulator follows its trace: RTT, throughput, outages, loss stalls (real sockets)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from collab.emulator import (
    DirectionTrace,
    EmulatorProcess,
    EmulatorThread,
    LinkTrace,
    Segment,
    load_mahimahi,
)
from collab.emulator.link import DirectionLink
from collab.emulator.measure import tcp_rtt_ms
from collab.emulator.traces import MahimahiCapacity

SHARED_TRACES = Path(__file__).resolve().parents[2] / "shared" / "traces"
TOL = 0.15


@contextmanager
def tcp_server(mode: str) -> Iterator[tuple[int, list[tuple[float, int]]]]:
    """A loopback server: ``echo`` sends back what it reads; ``sink`` logs (time, bytes) arrivals."""
    srv = socket.create_server(("127.0.0.1", 0))
    arrivals: list[tuple[float, int]] = []
    stop = threading.Event()

    def serve_conn(c: socket.socket) -> None:
        with c:
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if mode == "echo":
                    c.sendall(data)
                else:
                    arrivals.append((time.monotonic(), len(data)))

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve_conn, args=(c,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], arrivals
    finally:
        stop.set()
        t.join(2)
        srv.close()


def blast(port: int, seconds: float, chunk: int = 16384) -> None:
    """Send as fast as the proxy accepts for ``seconds``."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        end = time.monotonic() + seconds
        buf = b"\0" * chunk
        s.settimeout(0.5)
        while time.monotonic() < end:
            try:
                s.send(buf)
            except TimeoutError:
                continue


def link(
    up_bps: float | None, down_bps: float | None = None, delay_ms: float = 0.0, **kw: float
) -> LinkTrace:
    return LinkTrace(
        uplink=DirectionTrace.constant(bandwidth_bps=up_bps, delay_ms=delay_ms, **kw),
        downlink=DirectionTrace.constant(bandwidth_bps=down_bps, delay_ms=delay_ms, **kw),
    )


@pytest.mark.parametrize("one_way_ms", [10.0, 40.0])
def test_rtt_follows_delay(one_way_ms: float) -> None:
    with (
        tcp_server("echo") as (port, _),
        EmulatorThread(upstream=("127.0.0.1", port), link=link(None, delay_ms=one_way_ms)) as emu,
    ):
        rtt = tcp_rtt_ms(emu.port)
    assert rtt == pytest.approx(2 * one_way_ms, rel=TOL), rtt


@pytest.mark.parametrize("mbps", [2.0, 8.0])
def test_throughput_follows_rate(mbps: float) -> None:
    with (
        tcp_server("sink") as (port, arrivals),
        EmulatorThread(
            upstream=("127.0.0.1", port), link=link(mbps * 1e6, None, delay_ms=5)
        ) as emu,
    ):
        blast(emu.port, 2.0)
        time.sleep(0.3)
    # steady state: from the first arrival over a window well inside the blast
    t_first = arrivals[0][0]
    window = [(t, n) for t, n in arrivals if t_first + 0.2 <= t <= t_first + 1.7]
    got = sum(n for _, n in window) * 8 / 1.5
    assert got == pytest.approx(mbps * 1e6, rel=TOL), got / 1e6


def test_rate_and_delay_follow_segments_over_time() -> None:
    """Two segments (8 Mbit/s 20 ms, then 2 Mbit/s 60 ms), repeating; measured per segment."""
    segs = (
        Segment(duration_s=1.5, bandwidth_bps=8e6, delay_ms=20),
        Segment(duration_s=1.5, bandwidth_bps=2e6, delay_ms=60),
    )
    tr = LinkTrace(uplink=DirectionTrace(segments=segs), downlink=DirectionTrace(segments=segs))
    with (
        tcp_server("sink") as (port, arrivals),
        EmulatorThread(upstream=("127.0.0.1", port), link=tr) as emu,
    ):
        t0 = emu.restart()
        blast(emu.port, 3.1)
        time.sleep(0.2)

    def rate(a: float, b: float) -> float:
        return sum(n for t, n in arrivals if t0 + a <= t < t0 + b) * 8 / (b - a)

    # skip the first 100 ms of each segment (delay shift + queued bytes from the previous rate)
    assert rate(0.1, 1.5) == pytest.approx(8e6, rel=TOL)
    assert rate(1.65, 3.0) == pytest.approx(2e6, rel=TOL)
    with (
        tcp_server("echo") as (port, _),
        EmulatorThread(upstream=("127.0.0.1", port), link=tr) as emu,
    ):
        emu.restart()
        time.sleep(0.2)
        first = tcp_rtt_ms(emu.port, 8)
        time.sleep(1.5 - 0.2 - first * 8 / 1000 + 0.2)
        second = tcp_rtt_ms(emu.port, 8)
    assert first == pytest.approx(40.0, rel=TOL) and second == pytest.approx(120.0, rel=TOL), (
        first,
        second,
    )


def test_outage_resets_and_recovers() -> None:
    with (
        tcp_server("echo") as (port, _),
        EmulatorThread(upstream=("127.0.0.1", port), link=link(None)) as emu,
    ):
        s = socket.create_connection(("127.0.0.1", emu.port))
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
        emu.cut()
        time.sleep(0.05)
        with pytest.raises(OSError):  # the open connection is reset
            s.sendall(b"again")
            if not s.recv(5):
                raise ConnectionResetError("closed")
        s.close()
        with socket.create_connection(("127.0.0.1", emu.port)) as s2, pytest.raises(OSError):
            s2.sendall(b"x")
            if not s2.recv(1):
                raise ConnectionResetError("closed")
        emu.cut(False)
        assert tcp_rtt_ms(emu.port, 3) < 50
        st = emu.stats()
    assert st["resets"] >= 1 and st["refused"] >= 1


def test_outage_from_trace_and_dead_upstream_refuse() -> None:
    segs = (Segment(duration_s=0.5, delay_ms=1), Segment(duration_s=0.5, outage=True))
    tr = LinkTrace(
        uplink=DirectionTrace(segments=segs, repeat=False),
        downlink=DirectionTrace(segments=segs, repeat=False),
    )
    dead = socket.create_server(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    with (
        tcp_server("echo") as (port, _),
        EmulatorThread(upstream=("127.0.0.1", port), link=tr) as emu,
    ):
        emu.restart()
        assert tcp_rtt_ms(emu.port, 3) < 50
        time.sleep(0.6)
        with pytest.raises(OSError):
            tcp_rtt_ms(emu.port, 1)
        emu.set_link(link(None))
        assert tcp_rtt_ms(emu.port, 2) < 50
        emu.set_upstream("127.0.0.1", dead_port)  # cloud node down: the link is up, the peer is not
        with pytest.raises(OSError):
            tcp_rtt_ms(emu.port, 1)


def test_loss_adds_tcp_like_stalls() -> None:
    """Deterministic for a seed: a lost tail packet costs an RTO, a lost inner packet one RTT."""
    tr = DirectionTrace.constant(bandwidth_bps=None, delay_ms=20, loss=0.5)
    a = DirectionLink(tr, seed=3, reverse_delay_ms=20)
    b = DirectionLink(tr, seed=3, reverse_delay_ms=20)
    xs = [a.schedule(i * 1.0, 1000)[1] - i * 1.0 for i in range(200)]
    assert xs == [b.schedule(i * 1.0, 1000)[1] - i * 1.0 for i in range(200)]
    stalled = sum(1 for x in xs if x > 0.1)
    assert 70 < stalled < 130  # about half of the one-packet messages lost -> RTO (200 ms)
    assert min(xs) == pytest.approx(0.020) and max(xs) == pytest.approx(0.220)
    inner = DirectionLink(tr, seed=3, reverse_delay_ms=20).schedule(0.0, 1448 * 10, tail=False)[1]
    assert 0.020 + 0.040 <= inner <= 0.020 + 0.040 * 10  # each inner loss: one RTT (40 ms)


def test_process_mode_control_api() -> None:
    with (
        tcp_server("echo") as (port, _),
        EmulatorProcess(upstream=("127.0.0.1", port), link=link(None, delay_ms=15)) as emu,
    ):
        assert tcp_rtt_ms(emu.port, 10) == pytest.approx(30.0, rel=TOL)
        emu.set_link(link(None, delay_ms=40))
        assert tcp_rtt_ms(emu.port, 10) == pytest.approx(80.0, rel=TOL)
        emu.cut()
        with pytest.raises(OSError):
            tcp_rtt_ms(emu.port, 1)
        emu.cut(False)
        assert emu.stats()["refused"] >= 1


def _follow_mahimahi(tr_path_or_trace: object, seconds: float, start_s: float) -> None:
    trace = (
        load_mahimahi(tr_path_or_trace) if isinstance(tr_path_or_trace, Path) else tr_path_or_trace
    )
    assert not isinstance(trace, Path)
    up = DirectionTrace(segments=(Segment(duration_s=3600, delay_ms=10),), mahimahi=trace)  # type: ignore[arg-type]
    tr = LinkTrace(uplink=up, downlink=DirectionTrace.constant(bandwidth_bps=None, delay_ms=10))
    cap = MahimahiCapacity(trace)  # type: ignore[arg-type]
    with (
        tcp_server("sink") as (port, arrivals),
        EmulatorThread(upstream=("127.0.0.1", port), link=tr) as emu,
    ):
        t0 = emu.restart(time_monotonic() - start_s)
        blast(emu.port, seconds)
        time.sleep(0.2)
    # compare delivered bytes with the trace's capacity over 1-second windows and overall
    a, b = start_s + 0.3, start_s + seconds - 0.2
    got_total = sum(n for t, n in arrivals if a <= t - t0 - 0.010 < b)
    want_total = cap.cum(b) - cap.cum(a)
    assert got_total == pytest.approx(want_total, rel=TOL), (got_total, want_total)
    w = a
    while w + 1.0 <= b:
        got = sum(n for t, n in arrivals if w <= t - t0 - 0.010 < w + 1.0)
        want = cap.cum(w + 1.0) - cap.cum(w)
        # skip near-empty seconds where one packet is a large relative error; a 1 s window
        # also moves by a host stall of ~100 ms (seen once on a loaded run: -21 % at 7.8 s),
        # so windows get twice the tolerance of the total
        if want > 50_000:
            assert got == pytest.approx(want, rel=2 * TOL), (w, got, want)
        w += 1.0


def time_monotonic() -> float:
    return time.monotonic()


def test_synthetic_mahimahi_trace_is_followed() -> None:
    """A generated trace: 4 Mbit/s for 1 s, 1 Mbit/s for 1 s, repeating (1500 B per line)."""
    from collab.emulator.traces import parse_mahimahi

    lines: list[int] = []
    for ms in range(2000):
        per_ms = 4e6 / 8 / 1500 / 1000 if ms < 1000 else 1e6 / 8 / 1500 / 1000
        k = int((ms + 1) * per_ms) - int(ms * per_ms)
        lines += [ms + 1] * k
    trace = parse_mahimahi("\n".join(map(str, lines)))
    _follow_mahimahi(trace, 3.5, 0.0)


@pytest.mark.skipif(
    not (SHARED_TRACES / "ATT-LTE-driving-2016.up").exists(),
    reason="real Mahimahi traces not present (../shared/traces)",
)
def test_real_cellular_trace_is_followed() -> None:
    # seconds 4.5-9 of the ATT LTE uplink: ~0, 4.0, 5.0, 4.3, 0.1 Mbit/s
    _follow_mahimahi(SHARED_TRACES / "ATT-LTE-driving-2016.up", 4.5, 4.5)


def _write_trace(path: Path, stretches: list[tuple[float, int]]) -> None:
    """A synthetic Mahimahi file of ``(Mbit/s, lines)`` stretches (1500 bytes per line)."""
    import numpy as np

    parts, t0 = [], 0.0
    for mbps, n in stretches:
        ts = t0 + np.arange(1, n + 1) * 1000.0 / (mbps * 1e6 / 8 / 1500)
        parts.append(np.floor(ts).astype(np.int64))
        t0 = float(ts[-1])
    path.write_text("\n".join(map(str, np.concatenate(parts).tolist())) + "\n")


def test_a_500k_line_trace_per_direction_crosses_the_control_channel(tmp_path: Path) -> None:
    """A scenario on 500k-line traces both ways (longer than asyncio's 64 KiB control line
    as JSON, the old crash in profile_paths): set_link to the emulator process works and
    the proxy follows the trace from network.start_s on (8 Mbit/s there, 2 before it)."""
    from collab.scenario.schema import parse_scenario

    _write_trace(tmp_path / "big.up", [(2.0, 250_000), (8.0, 250_000)])
    _write_trace(tmp_path / "big.down", [(20.0, 500_000)])
    sc = parse_scenario(
        "model: {example: digits}\n"
        "network:\n"
        "  mahimahi: {up: big.up, down: big.down}\n"
        "  start_s: 1600\n"
        "  segments: [{duration_s: 3600, rtt_ms: 10}]\n",
        source="big.yaml",
        base=tmp_path,
    )
    assert (
        sc.link.uplink.mahimahi is not None
        and len(sc.link.uplink.mahimahi.timestamps_ms) == 500_000
    )
    with (
        tcp_server("sink") as (port, arrivals),
        EmulatorProcess(upstream=("127.0.0.1", port), link=link(None)) as emu,
    ):
        emu.set_link(sc.link)
        t0 = emu.restart()
        blast(emu.port, 2.5)
        time.sleep(0.3)
        assert emu.stats()["bytes_up"] > 0
    got = sum(n for t, n in arrivals if 0.5 <= t - t0 - 0.005 < 2.3)
    want = sc.link.uplink.capacity().cum(2.3) - sc.link.uplink.capacity().cum(0.5)
    assert want == pytest.approx(8e6 / 8 * 1.8, rel=0.02)  # the trace from 1600 s on
    assert got == pytest.approx(want, rel=TOL), (got, want)


@pytest.mark.skipif(
    not SHARED_TRACES.is_dir(), reason="real Mahimahi traces not present (../shared/traces)"
)
def test_real_drive_traces_load_into_the_emulator_process_at_an_offset(tmp_path: Path) -> None:
    """The public Mahimahi drives (tens of thousands of lines) as a scenario's uplink and
    downlink, started 60 s in: the control channel takes them (it crashed on them)."""
    from collab.scenario.schema import parse_scenario

    for f in sorted(SHARED_TRACES.glob("*.up")):
        sc = parse_scenario(
            f"model: {{example: digits}}\n"
            f"network:\n"
            f"  mahimahi: {{up: {f}, down: {f}}}\n"
            f"  start_s: 60\n"
            f"  segments: [{{duration_s: 30, rtt_ms: 40}}]\n",
            source="real.yaml",
            base=tmp_path,
        )
        full = load_mahimahi(f)
        cap = sc.link.uplink.capacity()
        assert cap.cum(10.0) == MahimahiCapacity(full).cum(70.0) - MahimahiCapacity(full).cum(60.0)
        with (
            tcp_server("sink") as (port, _),
            EmulatorProcess(upstream=("127.0.0.1", port), link=link(None)) as emu,
        ):
            emu.set_link(sc.link)
            assert emu.stats()["outage"] is False
