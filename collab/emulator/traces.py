"""Link traces: what one direction of the emulated link offers at every instant.

Two sources, one model. A *capacity curve* ``cum(t)`` gives the bytes the link could
have delivered between trace time 0 and ``t`` (seconds); its inverse ``inv(c)`` gives the
earliest time the link has delivered ``c`` bytes. Serialising a message is then
``end = inv(cum(start) + n)``, which is exact for piecewise-constant rates (segment
lists) and for Mahimahi's delivery opportunities (one 1500-byte packet per line,
repeating). Delay, jitter, loss and outages follow the segment list over time.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collab.errors import ConfigError
from collab.files import read_text

MTU = 1500
"""Bytes per Mahimahi delivery opportunity."""


@dataclass(frozen=True, kw_only=True)
class Segment:
    """A stretch of constant link conditions for one direction.

    ``bandwidth_bps=None`` means unlimited (or: taken from a Mahimahi trace);
    ``outage=True`` means no connectivity at all (connections are refused/reset).
    """

    duration_s: float
    bandwidth_bps: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    outage: bool = False

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ConfigError(f"segment duration_s must be > 0, got {self.duration_s}")
        if self.bandwidth_bps is not None and not self.bandwidth_bps >= 0:
            raise ConfigError(f"segment bandwidth must be >= 0, got {self.bandwidth_bps}")
        if not self.delay_ms >= 0 or not self.jitter_ms >= 0:
            raise ConfigError("segment delay_ms and jitter_ms must be >= 0")
        if not 0.0 <= self.loss < 1.0:
            raise ConfigError(f"segment loss must be in [0, 1), got {self.loss}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s,
            "bandwidth_bps": self.bandwidth_bps,
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "loss": self.loss,
            "outage": self.outage,
        }


class Capacity:
    """Cumulative deliverable bytes over trace time (seconds)."""

    unlimited = False

    def cum(self, t: float) -> float:
        raise NotImplementedError

    def inv(self, c: float) -> float:
        raise NotImplementedError

    def transmit_end(self, start: float, nbytes: float) -> float:
        """When ``nbytes`` handed to an idle link at ``start`` have fully crossed it."""
        if self.unlimited or nbytes <= 0:
            return start
        return max(start, self.inv(self.cum(start) + nbytes))

    def rate_bps(self, t: float, window_s: float = 1.0) -> float:
        """Average capacity around ``t`` (bit/s), for plots and the oracle."""
        if self.unlimited:
            return math.inf
        lo = max(0.0, t - window_s / 2)
        return (self.cum(lo + window_s) - self.cum(lo)) * 8.0 / window_s


class UnlimitedCapacity(Capacity):
    unlimited = True

    def cum(self, t: float) -> float:
        return math.inf

    def inv(self, c: float) -> float:
        return 0.0


class SegmentCapacity(Capacity):
    """Piecewise-constant rate; repeats with the segment list's period or holds the last rate."""

    def __init__(self, durations: list[float], rates_bps: list[float], *, repeat: bool) -> None:
        if not durations or len(durations) != len(rates_bps):
            raise ConfigError("a capacity needs at least one segment")
        self.repeat = repeat
        self.starts = [0.0]
        self.rates = [r / 8.0 for r in rates_bps]  # bytes/s
        self.cumb = [0.0]
        for d, r in zip(durations, self.rates, strict=True):
            self.starts.append(self.starts[-1] + d)
            self.cumb.append(self.cumb[-1] + d * r)
        self.period = self.starts[-1]
        self.per_period = self.cumb[-1]

    def _within(self, r: float) -> float:
        i = max(0, bisect.bisect_right(self.starts, r) - 1)
        if i >= len(self.rates):
            return self.per_period
        return self.cumb[i] + (r - self.starts[i]) * self.rates[i]

    def cum(self, t: float) -> float:
        t = max(0.0, t)
        if self.repeat:
            k = math.floor(t / self.period)
            return k * self.per_period + self._within(t - k * self.period)
        if t >= self.period:
            return self.per_period + (t - self.period) * self.rates[-1]
        return self._within(t)

    def _inv_within(self, rem: float) -> float:
        j = bisect.bisect_left(self.cumb, rem)  # cumb[j-1] < rem <= cumb[j]
        i = max(0, j - 1)
        return self.starts[i] + (rem - self.cumb[i]) / self.rates[i]

    def inv(self, c: float) -> float:
        if c <= 0:
            return 0.0
        if self.repeat:
            if self.per_period <= 0:
                return math.inf
            k = math.floor(c / self.per_period)
            rem = c - k * self.per_period
            if rem <= 0:
                k, rem = k - 1, self.per_period
            return k * self.period + self._inv_within(rem)
        if c <= self.per_period:
            return self._inv_within(c)
        if self.rates[-1] <= 0:
            return math.inf
        return self.period + (c - self.per_period) / self.rates[-1]


@dataclass(frozen=True, eq=False)
class MahimahiTrace:
    """Delivery opportunities (ms timestamps, non-decreasing), repeating with period = last one.

    ``start_s`` is where in the trace trace time 0 falls (``network.start_s``), so a scenario
    can start in the middle of a long drive."""

    timestamps_ms: np.ndarray  # int64, read-only
    source: str = "<memory>"
    start_s: float = 0.0

    def __post_init__(self) -> None:
        ts = np.array(self.timestamps_ms, dtype=np.int64)  # a copy: frozen means frozen
        if ts.ndim != 1 or not ts.size or ts[0] < 0 or bool(np.any(np.diff(ts) < 0)):
            raise ConfigError(f"{self.source}: timestamps must be >= 0 and non-decreasing")
        if ts[-1] <= 0:
            raise ConfigError(f"{self.source}: the last timestamp (the period) must be > 0")
        ts.flags.writeable = False
        object.__setattr__(self, "timestamps_ms", ts)
        if not (self.start_s >= 0 and math.isfinite(self.start_s)):
            raise ConfigError(f"{self.source}: start_s must be >= 0, got {self.start_s}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MahimahiTrace):
            return NotImplemented
        return (
            self.source == other.source
            and self.start_s == other.start_s
            and np.array_equal(self.timestamps_ms, other.timestamps_ms)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def period_ms(self) -> int:
        return int(self.timestamps_ms[-1])

    @property
    def mean_bps(self) -> float:
        return len(self.timestamps_ms) * MTU * 8 / (self.period_ms / 1000.0)

    def to_dict(self) -> dict[str, Any]:
        """Compact form (zlib of the deltas): a 10^6-line trace is a few hundred KB, not MB."""
        deltas = np.diff(self.timestamps_ms, prepend=0).astype(np.uint32)
        return {
            "deltas_z": base64.b64encode(zlib.compress(deltas.tobytes(), 6)).decode(),
            "source": self.source,
            "start_s": self.start_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MahimahiTrace:
        deltas = np.frombuffer(zlib.decompress(base64.b64decode(d["deltas_z"])), dtype=np.uint32)
        return cls(
            np.cumsum(deltas, dtype=np.int64),
            source=str(d.get("source") or "<memory>"),
            start_s=float(d.get("start_s", 0.0)),
        )


_NOT_A_TIMESTAMP = re.compile(r"[^0-9\s]|\d[ \t\f\v]+\d")
"""A character no timestamp line has, or two numbers on one line."""


def _line_of(text: str, pos: int) -> tuple[int, str]:
    """(1-based line number, line text) of character ``pos``."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text.count("\n", 0, pos) + 1, text[start : end if end >= 0 else len(text)]


def parse_mahimahi(text: str, source: str = "<memory>") -> MahimahiTrace:
    """Parse a Mahimahi trace; every problem names the file and line.

    Vectorised (a regular expression for the characters, numpy for the numbers): a
    10^6-line trace parses in well under a second; the line of a problem is only looked
    up when there is one."""
    bad = _NOT_A_TIMESTAMP.search(text)
    if bad:
        lineno, raw = _line_of(text, bad.start())
        raise ConfigError(
            f"{source}:{lineno}: malformed Mahimahi line {raw!r} "
            "(expected a non-negative integer timestamp in ms)"
        )
    ts = np.array(text.split(), dtype=np.int64)
    if not ts.size:
        raise ConfigError(f"{source}: empty Mahimahi trace (no delivery opportunities)")
    back = np.flatnonzero(np.diff(ts) < 0)
    if back.size:
        i = int(back[0]) + 1  # the i-th timestamp (0-based) is smaller than the one before
        lineno = _token_line(text, i)
        raise ConfigError(
            f"{source}:{lineno}: timestamp {ts[i]} goes backwards (previous {ts[i - 1]})"
        )
    if ts[-1] <= 0:
        raise ConfigError(
            f"{source}:{_token_line(text, ts.size - 1)}: Mahimahi trace must end after 0 ms "
            "(its last timestamp is the repeat period)"
        )
    return MahimahiTrace(ts, source)


def _token_line(text: str, i: int) -> int:
    """Line number of the ``i``-th (0-based) number of ``text`` (error path only)."""
    m = next(itertools.islice(re.finditer(r"\d+", text), i, None))
    return text.count("\n", 0, m.start()) + 1


def load_mahimahi(path: str | Path) -> MahimahiTrace:
    return parse_mahimahi(read_text(path, "trace file"), str(path))


class MahimahiCapacity(Capacity):
    """Capacity of a repeating Mahimahi trace: 1500 bytes per opportunity, from its
    ``start_s`` on. Every query is a binary search (O(log n)), never a scan."""

    def __init__(self, trace: MahimahiTrace) -> None:
        self.ts = trace.timestamps_ms.astype(np.float64) / 1000.0
        self.n = len(self.ts)
        self.period = trace.period_ms / 1000.0
        self.start = trace.start_s
        self._c0 = MTU * self._count_before(self.start)  # delivered before trace time 0

    def _cum(self, t: float) -> float:
        """Bytes deliverable over trace positions [0, t] (t >= 0)."""
        k = math.floor(t / self.period)
        r = t - k * self.period
        return MTU * (k * self.n + int(np.searchsorted(self.ts, r, side="right")))

    def _inv(self, c: float) -> float:
        m = math.ceil(c / MTU)  # the m-th opportunity (1-based) carries byte c
        k, idx = divmod(m - 1, self.n)
        return k * self.period + float(self.ts[idx])

    def cum(self, t: float) -> float:
        if t < 0:
            return 0.0
        return self._cum(t + self.start) - self._c0

    def inv(self, c: float) -> float:
        if c <= 0:
            return 0.0
        return max(0.0, self._inv(c + self._c0) - self.start)

    def _count_before(self, p: float) -> int:
        """Opportunities at trace positions strictly before ``p``: p lies in period k's
        (k*P, (k+1)*P] (a timestamp equal to the period is its period's last, at the next
        one's start)."""
        if p <= 0:
            return 0
        k = math.ceil(p / self.period) - 1
        return k * self.n + int(np.searchsorted(self.ts, p - k * self.period, side="left"))

    def first_at_or_after(self, t: float) -> float:
        """The first delivery opportunity at or after trace time ``t``."""
        k, idx = divmod(self._count_before(max(t, 0.0) + self.start), self.n)
        return k * self.period + float(self.ts[idx]) - self.start


@dataclass(frozen=True, kw_only=True)
class DirectionTrace:
    """One direction of the link over time: segments (delay/jitter/loss/outage/bandwidth),
    optionally with bandwidth taken from a Mahimahi trace instead."""

    segments: tuple[Segment, ...]
    repeat: bool = True
    mahimahi: MahimahiTrace | None = None
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.segments:
            raise ConfigError("a link direction needs at least one segment")
        starts = [0.0]
        for s in self.segments:
            starts.append(starts[-1] + s.duration_s)
        object.__setattr__(self, "_starts", tuple(starts))

    @classmethod
    def constant(
        cls,
        *,
        bandwidth_bps: float | None,
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        loss: float = 0.0,
    ) -> DirectionTrace:
        return cls(
            segments=(
                Segment(
                    duration_s=3600.0,
                    bandwidth_bps=bandwidth_bps,
                    delay_ms=delay_ms,
                    jitter_ms=jitter_ms,
                    loss=loss,
                ),
            )
        )

    @property
    def period_s(self) -> float:
        return self._starts[-1]

    def segment_at(self, t: float) -> Segment:
        t = max(0.0, t)
        if t >= self.period_s:
            if not self.repeat:
                return self.segments[-1]
            t = math.fmod(t, self.period_s)
        i = bisect.bisect_right(self._starts, t) - 1
        return self.segments[min(i, len(self.segments) - 1)]

    def outage_at(self, t: float) -> bool:
        return self.segment_at(t).outage

    def segment_end(self, t: float) -> float:
        """Trace time at which the segment in force at ``t`` ends (inf: the held last one)."""
        t = max(0.0, t)
        k = math.floor(t / self.period_s)
        if k and not self.repeat:
            return math.inf
        i = bisect.bisect_right(self._starts, t - k * self.period_s) - 1
        return k * self.period_s + self._starts[min(i, len(self.segments) - 1) + 1]

    def capacity(self) -> Capacity:
        if self.mahimahi is not None:
            return (
                _MaskedCapacity(MahimahiCapacity(self.mahimahi), self)
                if any(s.outage for s in self.segments)
                else MahimahiCapacity(self.mahimahi)
            )
        rates = [
            0.0 if s.outage else (math.inf if s.bandwidth_bps is None else s.bandwidth_bps)
            for s in self.segments
        ]
        if all(math.isinf(r) for r in rates):
            return UnlimitedCapacity()
        # "unlimited" inside a finite trace: a very fast link (10 Gbit/s) keeps the maths finite
        rates = [1e10 if math.isinf(r) else r for r in rates]
        return SegmentCapacity([s.duration_s for s in self.segments], rates, repeat=self.repeat)

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments": [s.to_dict() for s in self.segments],
            "repeat": self.repeat,
            "mahimahi": self.mahimahi.to_dict() if self.mahimahi else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DirectionTrace:
        mm = d.get("mahimahi")
        return cls(
            segments=tuple(Segment(**s) for s in d["segments"]),
            repeat=bool(d["repeat"]),
            mahimahi=MahimahiTrace.from_dict(mm) if mm else None,
        )


class _MaskedCapacity(Capacity):
    """A Mahimahi capacity with outage segments removed (nothing crosses during an outage)."""

    def __init__(self, inner: MahimahiCapacity, trace: DirectionTrace) -> None:
        self.inner = inner
        self.trace = trace
        self.dead = all(s.outage for s in trace.segments)

    def cum(self, t: float) -> float:
        return self.inner.cum(t)

    def inv(self, c: float) -> float:
        if self.dead:
            return math.inf
        t = self.inner.inv(c)
        # push past outages: their opportunities are lost, the first one after carries the
        # bytes (one jump per outage segment, not one step per opportunity)
        for _ in range(len(self.trace.segments) + 1):
            if not self.trace.outage_at(t):
                return t
            end = self.trace.segment_end(t)
            if math.isinf(end):
                return math.inf
            t = self.inner.first_at_or_after(end)
        return t


@dataclass(frozen=True, kw_only=True)
class LinkTrace:
    """Both directions of the emulated link."""

    uplink: DirectionTrace  # edge -> cloud
    downlink: DirectionTrace  # cloud -> edge

    def outage_at(self, t: float) -> bool:
        return self.uplink.outage_at(t) or self.downlink.outage_at(t)

    def rtt_ms(self, t: float) -> float:
        return self.uplink.segment_at(t).delay_ms + self.downlink.segment_at(t).delay_ms

    def to_dict(self) -> dict[str, Any]:
        return {"uplink": self.uplink.to_dict(), "downlink": self.downlink.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LinkTrace:
        return cls(
            uplink=DirectionTrace.from_dict(d["uplink"]),
            downlink=DirectionTrace.from_dict(d["downlink"]),
        )
