"""What a cloud call puts on the wire beyond its frame, measured once at startup.

The model oracle prices the uplink and downlink of every cloud request. The frame's bytes
are known (the codec calibration); what HTTP/2, gRPC and protobuf add around it, and how
big the answer comes back, are measured here from real calls through the emulator over a
perfect link, before any judged run: the emulator counts every payload byte it carries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from collab.edge.client import Client
from collab.emulator import EmulatorProcess
from collab.errors import TransportError
from collab.scenario.measured import Framing
from collab.scenario.prepare import serve
from collab.scenario.schema import Scenario

QUIET_PROBE_S = 3600.0
"""Probe interval of the measuring client: no probe may land between two readings."""
SETTLE_S = 0.05
"""Pause after a call before the counters are read (late WINDOW_UPDATEs belong to it)."""


def framing_paths(paths: Sequence[str]) -> list[str]:
    """One path per RPC: cloud-only (Infer) and the first split point (Decode)."""
    return [p for p in paths if p == "cloud_only"] + [p for p in paths if p.startswith("split:")][
        :1
    ]


def measure_framing(
    bundle: Path,
    emu: EmulatorProcess,
    sc: Scenario,
    x: np.ndarray,
    paths: Sequence[str],
    calls: int = 4,
) -> Framing:
    """Least per-call overhead over ``calls`` calls of each cloud path in ``paths``, after
    one warm-up call each (connection setup and the first, uncompressed headers are not
    what a steady stream of requests pays). ``emu`` must carry a perfect link."""
    client = Client(
        bundle,
        config=replace(
            sc.edge.client,
            cloud=(emu.address,),
            policy="cloud_only",
            deadline_ms=None,
            warm=False,
            probe_interval_s=QUIET_PROBE_S,
            bandwidth_probe_interval_s=QUIET_PROBE_S,
        ),
    )
    up: list[float] = []
    down: list[float] = []
    try:
        for path in paths:
            for i in range(calls + 1):
                time.sleep(SETTLE_S)
                before = emu.stats()
                r = serve(client, x[i % len(x)], policy=path, deadline_ms=None)
                time.sleep(SETTLE_S)
                after = emu.stats()
                if i == 0 or r.fell_back:
                    continue
                up.append(after["bytes_up"] - before["bytes_up"] - r.bytes_sent)
                down.append(after["bytes_down"] - before["bytes_down"])
    finally:
        client.close()
    if not up:
        raise TransportError("could not measure the RPC framing: no cloud call succeeded")
    # the minimum, not the median: whatever else crosses the link during a call (a
    # confirming bandwidth probe of up to max_probe_bytes, which a passive sample of these
    # very calls can trigger) only adds bytes; the median once read 33 KB of framing
    return Framing(
        request_bytes=max(0.0, float(np.min(up))),
        answer_bytes=float(np.min(down)),
        calls=len(up),
    )
