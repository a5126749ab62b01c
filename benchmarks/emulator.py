"""Link emulator accuracy: RTT and throughput measured through the proxy versus the trace.

Run: ``.venv/bin/python benchmarks/emulator.py``. Prints measured / target ratios side by
side (the machine is shared and noisy; RTT uses the 25th percentile of round trips, like
ping's min/avg, because scheduling noise only ever adds). Uses the real Mahimahi traces in
``../shared/traces`` when present.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from collab.emulator import DirectionTrace, EmulatorProcess, LinkTrace, Segment, load_mahimahi
from collab.emulator.measure import tcp_rtt_ms
from collab.emulator.traces import MahimahiCapacity

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"


class Server:
    """Loopback echo (RTT) or sink (throughput, logs arrival times)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.arrivals: list[tuple[float, int]] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c, contextlib.suppress(OSError):  # the proxy resets connections when it stops
            while data := c.recv(65536):
                if self.mode == "echo":
                    c.sendall(data)
                else:
                    self.arrivals.append((time.monotonic(), len(data)))

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def blast(port: int, seconds: float) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(0.5)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                s.send(b"\0" * 16384)
            except TimeoutError:
                continue


def link(bw: float | None, delay: float) -> LinkTrace:
    d = DirectionTrace.constant(bandwidth_bps=bw, delay_ms=delay)
    return LinkTrace(uplink=d, downlink=d)


def main() -> None:
    rows: list[tuple[str, float, float]] = []
    for one_way in (5.0, 20.0, 50.0):
        srv = Server("echo")
        with EmulatorProcess(upstream=("127.0.0.1", srv.port), link=link(None, one_way)) as emu:
            rows.append((f"RTT, {2 * one_way:.0f} ms link", 2 * one_way, tcp_rtt_ms(emu.port, 30)))
        srv.close()
    for mbps in (0.5, 2.0, 10.0, 40.0):
        srv = Server("sink")
        with EmulatorProcess(upstream=("127.0.0.1", srv.port), link=link(mbps * 1e6, 5.0)) as emu:
            blast(emu.port, 2.5)
            time.sleep(0.3)
        srv.close()
        t0 = srv.arrivals[0][0]
        got = sum(n for t, n in srv.arrivals if t0 + 0.3 <= t < t0 + 2.3) * 8 / 2.0 / 1e6
        rows.append((f"throughput, {mbps} Mbit/s", mbps, got))
    trace_file = SHARED / "ATT-LTE-driving-2016.up"
    if trace_file.exists():
        tr = load_mahimahi(trace_file)
        cap = MahimahiCapacity(tr)
        up = DirectionTrace(segments=(Segment(duration_s=3600, delay_ms=10),), mahimahi=tr)
        srv = Server("sink")
        with EmulatorProcess(
            upstream=("127.0.0.1", srv.port),
            link=LinkTrace(uplink=up, downlink=DirectionTrace.constant(bandwidth_bps=None)),
        ) as emu:
            start = 25.0  # a steady stretch of the trace, ~1.3-1.7 Mbit/s
            t0 = emu.restart(time.monotonic() - start)
            blast(emu.port, 10.0)
            time.sleep(0.3)
        srv.close()
        for a in range(1, 9, 2):
            lo, hi = start + a, start + a + 2
            got = sum(n for t, n in srv.arrivals if lo <= t - t0 - 0.01 < hi) * 8 / 2 / 1e6
            want = (cap.cum(hi) - cap.cum(lo)) * 8 / 2 / 1e6
            rows.append((f"ATT LTE trace, {lo:.0f}-{hi:.0f} s", want, got))
    print(f"{'measurement':<30} {'target':>10} {'measured':>10} {'ratio':>7}")
    for name, want, got in rows:
        print(f"{name:<30} {want:>10.2f} {got:>10.2f} {got / want:>7.3f}")


if __name__ == "__main__":
    main()
