"""Round-trip measurement through the emulator, shared by its tests and benchmark."""

from __future__ import annotations

import socket
import time


def tcp_rtt_ms(port: int, n: int = 20, host: str = "127.0.0.1") -> float:
    """RTT of 32-byte ping-pongs to an echo server behind ``port``.

    The first round trip (upstream connect) is dropped; scheduling noise on a shared machine
    only ever adds (a loaded box once moved the lower quartile of a 20 ms link to 23.9 ms),
    and an emulated delay never delivers early, so the minimum is reported, as ping's min."""
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(n + 1):
            t = time.monotonic()
            s.sendall(b"x" * 32)
            got = 0
            while got < 32:
                got += len(s.recv(64))
            samples.append(time.monotonic() - t)
    return min(samples[1:]) * 1000.0
