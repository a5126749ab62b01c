"""A minimal embedded MQTT 3.1.1 broker for demos on machines without Mosquitto.

Supported: CONNECT (anonymous; user/password ignored), PUBLISH QoS 0/1 (QoS 2 is
accepted and downgraded), retained messages, last-will, SUBSCRIBE/UNSUBSCRIBE with
``+``/``#`` wildcards, PINGREQ, DISCONNECT, keep-alive timeouts, client-id takeover.
Not supported: persistent sessions (every session is clean), TLS, authentication and
ACLs. Production fleets use Mosquitto; this exists so ``collab coordinator`` works
anywhere, bound to loopback.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from collab.control.mqtt import topic_matches as topic_matches_sub
from collab.errors import ControlPlaneError, MalformedMessage
from collab.log import logger

MAX_PACKET = 1 << 20


class _ProtocolError(MalformedMessage):
    """A packet the broker cannot parse; the connection is dropped."""


def _str(buf: bytes, i: int) -> tuple[str, int]:
    if i + 2 > len(buf):
        raise _ProtocolError("truncated string")
    n = struct.unpack_from("!H", buf, i)[0]
    if i + 2 + n > len(buf):
        raise _ProtocolError("truncated string")
    try:
        return buf[i + 2:i + 2 + n].decode(), i + 2 + n
    except UnicodeDecodeError as e:
        raise _ProtocolError("bad utf-8") from e


def _bin(buf: bytes, i: int) -> tuple[bytes, int]:
    n = struct.unpack_from("!H", buf, i)[0]
    return buf[i + 2:i + 2 + n], i + 2 + n


def _enc_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray([first])
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


@dataclass(eq=False)
class _Session:
    client_id: str
    writer: asyncio.StreamWriter
    subs: dict[str, int] = field(default_factory=dict)
    will: tuple[str, bytes, int, bool] | None = None
    next_id: int = 0

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        header = 0x30 | (qos << 1) | int(retain)
        body = _enc_str(topic)
        if qos:
            self.next_id = self.next_id % 65535 + 1
            body += struct.pack("!H", self.next_id)
        self.send(_packet(header, body + payload))


class MiniBroker:
    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.retained: dict[str, tuple[bytes, int]] = {}

    def route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = (payload, qos)
            else:
                self.retained.pop(topic, None)
        for s in list(self.sessions.values()):
            granted = max((q for f, q in s.subs.items() if topic_matches_sub(f, topic)), default=-1)
            if granted >= 0:
                s.publish(topic, payload, min(qos, granted), False)

    async def _read(self, reader: asyncio.StreamReader, timeout: float | None) -> tuple[int, bytes]:
        first = (await asyncio.wait_for(reader.readexactly(1), timeout))[0]
        n, mult = 0, 1
        for _ in range(4):
            b = (await reader.readexactly(1))[0]
            n += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        else:
            raise _ProtocolError("bad remaining length")
        if n > MAX_PACKET:
            raise _ProtocolError("packet too large")
        return first, await reader.readexactly(n)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s: _Session | None = None
        clean = False
        try:
            first, body = await self._read(reader, 10.0)
            if first >> 4 != 1:
                raise _ProtocolError("expected CONNECT")
            s, keepalive = self._connect(body, writer)
            timeout = keepalive * 1.5 if keepalive else None
            while True:
                first, body = await self._read(reader, timeout)
                kind = first >> 4
                if kind == 3:
                    self._publish(s, first, body)
                elif kind == 8:
                    self._subscribe(s, body)
                elif kind == 10:
                    pid, i = struct.unpack_from("!H", body, 0)[0], 2
                    while i < len(body):
                        f, i = _str(body, i)
                        s.subs.pop(f, None)
                    s.send(_packet(0xB0, struct.pack("!H", pid)))
                elif kind == 12:
                    s.send(b"\xd0\x00")
                elif kind == 14:
                    clean = True
                    return
                elif kind == 6:  # PUBREL (QoS 2 flow) -> PUBCOMP
                    s.send(_packet(0x70, body[:2]))
                # PUBACK/PUBREC/PUBCOMP from clients: nothing tracked
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, _ProtocolError,
                struct.error, IndexError) as e:
            logger.debug("minibroker: client %s: %s", s.client_id if s else "?", e)
        finally:
            if s is not None and self.sessions.get(s.client_id) is s:
                del self.sessions[s.client_id]
                if not clean and s.will is not None:
                    self.route(*s.will)
            writer.close()

    def _connect(self, body: bytes, writer: asyncio.StreamWriter) -> tuple[_Session, int]:
        proto, i = _str(body, 0)
        level, flags = body[i], body[i + 1]
        keepalive = struct.unpack_from("!H", body, i + 2)[0]
        i += 4
        if proto not in ("MQTT", "MQIsdp") or level not in (3, 4):
            writer.write(b"\x20\x02\x00\x01")
            raise _ProtocolError("unsupported protocol level")
        client_id, i = _str(body, i)
        if not client_id:
            client_id = f"anon-{id(writer):x}"
        will = None
        if flags & 0x04:
            wt, i = _str(body, i)
            wm, i = _bin(body, i)
            will = (wt, wm, min((flags >> 3) & 3, 1), bool(flags & 0x20))
        old = self.sessions.get(client_id)
        if old is not None:  # takeover
            old.writer.close()
        s = _Session(client_id=client_id, writer=writer, will=will)
        self.sessions[client_id] = s
        writer.write(b"\x20\x02\x00\x00")
        return s, keepalive

    def _publish(self, s: _Session, first: int, body: bytes) -> None:
        qos, retain = (first >> 1) & 3, bool(first & 1)
        topic, i = _str(body, 0)
        if "+" in topic or "#" in topic:
            raise _ProtocolError("wildcard in PUBLISH topic")
        if qos:
            pid = body[i:i + 2]
            i += 2
            s.send(_packet(0x40 if qos == 1 else 0x50, pid))
        self.route(topic, body[i:], min(qos, 1), retain)

    def _subscribe(self, s: _Session, body: bytes) -> None:
        pid, i = body[:2], 2
        granted = bytearray()
        new: list[tuple[str, int]] = []
        while i < len(body):
            f, i = _str(body, i)
            q = min(body[i], 1)
            i += 1
            s.subs[f] = q
            granted.append(q)
            new.append((f, q))
        s.send(_packet(0x90, pid + bytes(granted)))
        for topic, (payload, rq) in list(self.retained.items()):
            qs = [q for f, q in new if topic_matches_sub(f, topic)]
            if qs:
                s.publish(topic, payload, min(rq, max(qs)), True)


@contextmanager
def embedded_broker(host: str = "127.0.0.1", port: int = 1883) -> Iterator[str]:
    """Run :class:`MiniBroker` on a background event loop; yields its mqtt:// URL."""
    loop = asyncio.new_event_loop()
    broker = MiniBroker()
    ready = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        try:
            server = await asyncio.start_server(broker.handle, host, port)
        except OSError as e:
            box["error"] = e
            ready.set()
            return
        stop = loop.create_future()
        box["port"] = server.sockets[0].getsockname()[1]
        box["stop"] = stop
        ready.set()
        await stop
        server.close()
        for sess in list(broker.sessions.values()):
            sess.writer.close()
        await server.wait_closed()

    t = threading.Thread(target=lambda: loop.run_until_complete(main()), name="minibroker", daemon=True)
    t.start()
    ready.wait(10)
    if "error" in box:
        t.join(5)
        loop.close()
        raise ControlPlaneError(f"embedded broker cannot listen on {host}:{port}: {box['error']}")
    url = f"mqtt://{host}:{box['port']}"
    logger.info("started own broker: embedded Python MQTT 3.1.1 broker on %s (no persistence/TLS/ACLs)", url)
    try:
        yield url
    finally:
        stop_fut: asyncio.Future[None] = box["stop"]  # type: ignore[assignment]

        def _stop() -> None:
            if not stop_fut.done():
                stop_fut.set_result(None)

        loop.call_soon_threadsafe(_stop)
        t.join(5)
        if not t.is_alive():
            loop.close()
