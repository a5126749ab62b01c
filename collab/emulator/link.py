"""The per-direction bottleneck: when does a piece of data that arrived now leave the link?

All connections in one direction share one serialisation queue (a single bottleneck, like
a real access link). Pure arithmetic on trace time, so it is unit-testable without sockets.

Loss is modelled the way TCP experiences it: a lost packet is not a hole in the byte
stream but a *stall* of the direction. A loss inside a burst is repaired by fast
retransmit (one RTT); a loss of the burst's last packet has no duplicate ACKs behind it
and waits for the retransmission timeout (Linux's minimum RTO, 200 ms, or 2 RTT if longer).
"""

from __future__ import annotations

import math
import random

from collab.emulator.traces import Capacity, DirectionTrace

PACKET = 1448
"""TCP payload bytes per packet (1500-byte MTU minus IP/TCP headers with timestamps)."""
RTO_MIN_MS = 200.0


class DirectionLink:
    """Serialisation + propagation for one direction, following its trace from trace time 0."""

    def __init__(
        self, trace: DirectionTrace, *, seed: int = 0, reverse_delay_ms: float = 0.0
    ) -> None:
        self.trace = trace
        self.capacity: Capacity = trace.capacity()
        self.rng = random.Random(seed)
        self.busy_until = 0.0
        self.reverse_delay_ms = reverse_delay_ms
        self.bytes = 0
        self.losses = 0

    def set_trace(self, trace: DirectionTrace, *, reverse_delay_ms: float) -> None:
        self.trace = trace
        self.capacity = trace.capacity()
        self.reverse_delay_ms = reverse_delay_ms

    def reset(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.busy_until = 0.0
        self.bytes = 0
        self.losses = 0

    def schedule(self, now: float, nbytes: int, *, tail: bool = True) -> tuple[float, float]:
        """Trace times (departure, arrival) of ``nbytes`` handed to the link at ``now``.

        ``tail`` says this piece ends a burst (nothing queued behind it), which turns a
        loss of its last packet into an RTO stall.
        """
        start = max(now, self.busy_until)
        end = self.capacity.transmit_end(start, nbytes)
        seg = self.trace.segment_at(start)
        if seg.loss > 0 and nbytes > 0:
            rtt_ms = seg.delay_ms + self.reverse_delay_ms
            packets = max(1, math.ceil(nbytes / PACKET))
            for i in range(packets):
                if self.rng.random() < seg.loss:
                    self.losses += 1
                    last = tail and i == packets - 1
                    stall_ms = max(RTO_MIN_MS, 2 * rtt_ms) if last else max(rtt_ms, 1.0)
                    end += stall_ms / 1000.0
        self.busy_until = end
        self.bytes += nbytes
        delay_ms = seg.delay_ms
        if seg.jitter_ms > 0:
            delay_ms = max(0.0, self.rng.gauss(seg.delay_ms, seg.jitter_ms))
        return end, end + delay_ms / 1000.0
