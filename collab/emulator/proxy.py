"""User-space link emulator: an asyncio TCP proxy between edge and cloud.

This kernel has no ``netem`` (and ``tbf`` cannot delay), so the link lives here: every
byte from the edge is read by the proxy, scheduled through the uplink's
:class:`~collab.emulator.link.DirectionLink` (shared bottleneck, trace-driven rate,
one-way delay with jitter, loss as TCP stalls) and written to the cloud at its arrival
time; the same for the reverse direction. During an outage (from the trace, or
:meth:`LinkEmulator.cut`) new connections are reset on accept and open ones are reset,
which is what a client sees of a dead link or a dead peer: refused/reset connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from collab.emulator.link import DirectionLink
from collab.emulator.traces import LinkTrace
from collab.log import logger

PIECE = 16 * 1024
"""Largest piece scheduled at once: finer pieces pipeline better, coarser ones cost less CPU."""
QUEUE_PIECES = 128
"""Pieces buffered per direction per connection before the proxy stops reading (backpressure)."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), like a refused/reset connection."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)
        for t in self.tasks:
            t.cancel()


class LinkEmulator:
    """The proxy. Runs in one event loop; see :mod:`collab.emulator.control` for handles."""

    def __init__(
        self,
        *,
        upstream: tuple[str, int],
        link: LinkTrace,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.seed = seed
        self.t0 = time.monotonic()
        self.manual_cut = False
        self._conns: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task[None] | None = None
        self.accepted = 0
        self.refused = 0
        self.resets = 0
        self.link = link
        self.up = DirectionLink(link.uplink, seed=seed * 2 + 1)
        self.down = DirectionLink(link.downlink, seed=seed * 2 + 2)
        self._set_link(link)

    # -- control (call from the loop's thread) ----------------------------------------------
    def _set_link(self, link: LinkTrace) -> None:
        self.link = link
        up_d = link.uplink.segments[0].delay_ms
        down_d = link.downlink.segments[0].delay_ms
        self.up.set_trace(link.uplink, reverse_delay_ms=down_d)
        self.down.set_trace(link.downlink, reverse_delay_ms=up_d)

    def set_link(self, link: dict[str, Any] | LinkTrace) -> None:
        self._set_link(link if isinstance(link, LinkTrace) else LinkTrace.from_dict(link))

    def restart(self, t0: float | None = None, seed: int | None = None) -> float:
        """Trace time 0 := ``t0`` (``time.monotonic()`` clock; now by default). Resets RNG and queues."""
        if seed is not None:
            self.seed = seed
        self.t0 = time.monotonic() if t0 is None else float(t0)
        self.up.reset(self.seed * 2 + 1)
        self.down.reset(self.seed * 2 + 2)
        return self.t0

    def set_upstream(self, host: str, port: int) -> None:
        self.upstream = (host, int(port))

    def cut(self, on: bool = True) -> None:
        """Manual outage on top of the trace (``cut(False)`` restores)."""
        self.manual_cut = bool(on)
        if on:
            self._reset_all()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def down_now(self) -> bool:
        return self.manual_cut or self.link.outage_at(self.now())

    def stats(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "trace_time": self.now(),
            "open": len(self._conns),
            "accepted": self.accepted,
            "refused": self.refused,
            "resets": self.resets,
            "bytes_up": self.up.bytes,
            "bytes_down": self.down.bytes,
            "losses_up": self.up.losses,
            "losses_down": self.down.losses,
            "outage": self.down_now(),
        }

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._watch = asyncio.get_running_loop().create_task(self._watch_outages())
        logger.debug("link emulator on %s:%d -> %s:%d", self.host, self.port, *self.upstream)
        return self.port

    async def close(self) -> None:
        if self._watch:
            self._watch.cancel()
        if self._server:
            self._server.close()
        self._reset_all(count=False)
        if self._server:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def _reset_all(self, count: bool = True) -> None:
        for c in list(self._conns):
            c.reset()
            if count:
                self.resets += 1
        self._conns.clear()

    async def _watch_outages(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            if self._conns and self.down_now():
                self._reset_all()

    # -- data path --------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down_now():
            self.refused += 1
            _reset(writer)
            return
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.refused += 1
            _reset(writer)
            return
        if self.down_now():
            self.refused += 1
            _reset(writer)
            _reset(uwriter)
            return
        for w in (writer, uwriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted += 1
        conn = _Conn(writer, uwriter)
        self._conns.add(conn)
        loop = asyncio.get_running_loop()
        up = loop.create_task(self._pump(reader, uwriter, self.up))
        down = loop.create_task(self._pump(ureader, writer, self.down))
        conn.tasks = [up, down]
        try:
            await asyncio.gather(up, down)
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            if conn in self._conns:
                self._conns.discard(conn)
                for w in (writer, uwriter):
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: DirectionLink
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_PIECES)
        sender = asyncio.get_running_loop().create_task(self._deliver(queue, writer))
        last_arrival = 0.0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                n = len(data)
                for off in range(0, n, PIECE):
                    piece = data[off : off + PIECE]
                    # absolute (monotonic) arrival: a restart of the trace clock must not
                    # move bytes already in flight
                    t0 = self.t0
                    _, arrival = link.schedule(
                        time.monotonic() - t0, len(piece), tail=off + PIECE >= n
                    )
                    last_arrival = max(last_arrival, t0 + arrival)
                    await queue.put((last_arrival, piece))
        except (ConnectionError, OSError):
            sender.cancel()
            raise
        except asyncio.CancelledError:
            sender.cancel()
            raise
        await queue.put(None)
        await sender

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            arrival, piece = item
            wait = arrival - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(piece)
            await writer.drain()
