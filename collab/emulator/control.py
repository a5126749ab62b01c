"""Handles that run a :class:`LinkEmulator` and change it while it runs.

:class:`EmulatorThread` runs it in a background thread of this process (cheap, good for
tests); :class:`EmulatorProcess` runs it in its own process (``python -m collab.emulator``)
so the proxy's timers do not compete for the GIL with ONNX Runtime and gRPC in the
runner, controlled over a JSON-lines socket. Both expose the same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from collab.emulator.proxy import LinkEmulator
from collab.emulator.traces import LinkTrace
from collab.errors import CollabError, TransportError

CONTROL_OPS = ("restart", "cut", "set_upstream", "set_link", "stats")
CONTROL_LINE_LIMIT = 256 * 1024 * 1024
"""Longest control line: a ``set_link`` carries both directions' Mahimahi traces (compact,
but a 10^6-line drive is still far beyond asyncio's default 64 KiB line)."""


class _Handle:
    port: int

    def _call(self, op: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def restart(self, t0: float | None = None, seed: int | None = None) -> float:
        """Start the trace over: trace time 0 = ``t0`` on the ``time.monotonic()`` clock."""
        return float(self._call("restart", t0=t0, seed=seed))

    def cut(self, on: bool = True) -> None:
        """Manual outage (refuse/reset everything) until ``cut(False)``."""
        self._call("cut", on=on)

    def set_upstream(self, host: str, port: int) -> None:
        self._call("set_upstream", host=host, port=port)

    def set_link(self, link: LinkTrace) -> None:
        self._call("set_link", link=link.to_dict())

    def stats(self) -> dict[str, Any]:
        return dict(self._call("stats"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class EmulatorThread(_Handle):
    """The emulator in a daemon thread with its own event loop (context manager)."""

    def __init__(
        self,
        *,
        upstream: tuple[str, int],
        link: LinkTrace,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._emu = LinkEmulator(upstream=upstream, link=link, seed=seed, host=host, port=port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="link-emulator", daemon=True
        )
        self.port = 0

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._emu.start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._emu.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, op: str, **kwargs: Any) -> Any:
        fn: Callable[..., Any] = getattr(self._emu, op)

        async def run() -> Any:
            return fn(**kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)


async def serve_control(emu: LinkEmulator, host: str = "127.0.0.1") -> asyncio.AbstractServer:
    """JSON-lines control socket: ``{"op": ..., "args": {...}}`` -> ``{"ok": .., "result": ..}``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await _serve_lines(reader, writer)

    async def _serve_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            try:
                msg = json.loads(line)
                op = msg["op"]
                if op not in CONTROL_OPS:
                    raise ValueError(f"unknown op {op!r}")
                reply = {"ok": True, "result": getattr(emu, op)(**msg.get("args", {}))}
            except Exception as e:  # report, never crash the emulator on a bad command
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, 0, limit=CONTROL_LINE_LIMIT)


class EmulatorProcess(_Handle):
    """The emulator in its own process, driven over its control socket (context manager)."""

    def __init__(
        self,
        *,
        upstream: tuple[str, int],
        link: LinkTrace,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._cfg = {
            "upstream": list(upstream),
            "link": link.to_dict(),
            "seed": seed,
            "host": host,
            "port": port,
        }
        self._proc: subprocess.Popen[str] | None = None
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._lock = threading.Lock()
        self.port = 0

    def __enter__(self) -> EmulatorProcess:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(self._cfg, f)
            cfg_path = f.name
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "collab.emulator", cfg_path], stdout=subprocess.PIPE, text=True
        )
        try:
            assert self._proc.stdout is not None
            line = self._proc.stdout.readline()
            if not line.startswith("LISTEN"):
                raise TransportError(f"link emulator failed to start: {line!r}")
            _, port, ctl = line.split()
            self.port = int(port)
            self._sock = socket.create_connection(("127.0.0.1", int(ctl)), timeout=10)
            self._file = self._sock.makefile("rwb")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        finally:
            Path(cfg_path).unlink(missing_ok=True)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    def _call(self, op: str, **kwargs: Any) -> Any:
        with self._lock:
            if self._file is None:
                raise TransportError("link emulator is not running")
            self._file.write(json.dumps({"op": op, "args": kwargs}).encode() + b"\n")
            self._file.flush()
            line = self._file.readline()
        if not line:
            raise TransportError("link emulator process died")
        reply = json.loads(line)
        if not reply["ok"]:
            raise CollabError(f"link emulator: {reply['error']}")
        return reply["result"]
