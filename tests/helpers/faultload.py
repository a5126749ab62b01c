"""A harness that loads a real edge daemon and injects faults into it from outside
(tests/test_edge_watchdog.py, benchmarks/watchdog.py): request threads that record every
answer, the daemon's Prometheus samples, its RSS read from /proc, fault files written
atomically, a byte flipped on disk, a link the emulator can cut."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from collab import codec as codecs
from collab.emulator import DirectionTrace, EmulatorThread, LinkTrace
from collab.proto import collab_pb2, collab_pb2_grpc

DEADLINE_MS = 20.0


def until(pred: Callable[[], object], timeout: float, what: str) -> float:
    """Wait for ``pred`` (polled every 20 ms); returns when it held (monotonic)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metrics(port: int) -> dict[str, float]:
    """The daemon's Prometheus samples, ``name{label=value}`` -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def action(port: int, kind: str) -> float:
    return metrics(port).get(f"collab_edge_watchdog_actions_total{{kind={kind}}}", 0.0)


def inject(faults: Path, name: str, value: str | None) -> float:
    """Write (or with None remove) a fault file atomically; returns when it happened."""
    if value is None:
        (faults / name).unlink()
    else:
        tmp = faults / f".{name}"
        tmp.write_text(value)
        tmp.rename(faults / name)
    return time.monotonic()


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` (read from outside it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler:
    """Samples a process's RSS from outside every 5 ms (a short excursion is not missed)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            try:
                self.samples.append((time.monotonic(), rss(self.pid)))
            except (OSError, AssertionError):  # the process is gone
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def first_above(self, limit: float) -> float | None:
        return next((t for t, v in self.samples if v > limit), None)

    def peak(self) -> int:
        return max((v for _, v in self.samples), default=0)


@dataclass
class Answer:
    at: float  # monotonic, when it came back
    ok: bool
    error: str = ""
    output: np.ndarray | None = None
    path: str = ""
    edge_ms: float = 0.0
    latency_ms: float = 0.0  # as the caller saw it
    policy: str = ""  # what the request asked for ("": the daemon's)


@dataclass
class Load:
    """Client threads sending requests to the daemon back to back (a short pause each),
    one per entry of ``policies`` (the policy its requests ask for; "": the daemon's)."""

    port: int
    x: np.ndarray
    policies: tuple[str, ...] = ("", "")
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, policy: str) -> None:
        req = collab_pb2.EdgeInferRequest(
            frame=codecs.encode(self.x, "f32"), deadline_ms=DEADLINE_MS, policy=policy
        )
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            stub = collab_pb2_grpc.EdgeServiceStub(ch)
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    r = stub.Infer(req, timeout=30)
                    a = Answer(
                        time.monotonic(),
                        True,
                        output=codecs.decode(r.output),
                        path=r.path,
                        edge_ms=r.timings.get("edge_ms", 0.0),
                        latency_ms=(time.monotonic() - t0) * 1000.0,
                        policy=policy,
                    )
                except grpc.RpcError as e:
                    a = Answer(
                        time.monotonic(), False, error=f"{e.code()}: {e.details()}", policy=policy
                    )
                with self._lock:
                    self.answers.append(a)
                time.sleep(0.005)

    @contextmanager
    def running(self) -> Iterator[Load]:
        ts = [threading.Thread(target=self._run, args=(p,), daemon=True) for p in self.policies]
        for t in ts:
            t.start()
        try:
            yield self
        finally:
            self._stop.set()
            for t in ts:
                t.join(35)

    def between(self, t0: float, t1: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if t0 <= a.at <= t1]

    def check_none_lost(self) -> None:
        with self._lock:
            failed = [a.error for a in self.answers if not a.ok]
            n = len(self.answers)
        assert n > 0 and not failed, f"{len(failed)} of {n} requests failed: {failed[:3]}"


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def through_link(upstream: tuple[str, int]) -> EmulatorThread:
    """The link emulator as a plain proxy (no delay, no rate limit) that ``cut`` cuts."""
    direction = DirectionTrace.constant(bandwidth_bps=None, delay_ms=0.0)
    return EmulatorThread(upstream=upstream, link=LinkTrace(uplink=direction, downlink=direction))
