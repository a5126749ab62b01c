"""Hedged fallback: when a cloud call runs well past its prediction, start the local
finish beside it and take whichever answer comes first (Dean & Barroso, "The Tail at
Scale", CACM 2013, hedged requests; here the second replica is the device itself).

Without it, a call that the link's collapse makes slow is abandoned only at its budget
(what the deadline leaves after 1.5x the local finish), and the local finish starts
then: on fleet-8-edges, where eight devices learn of an uplink collapse one slow call
each, such fallbacks took 330-540 ms against edge-only's 150. With it, the local finish
starts once the call has taken ``factor`` x its predicted time + ``slack_ms``, so a
fallback costs about the prediction's overrun plus the local finish, and a call that
answers during the local finish still wins.

The hedge replaces that cut: a hedged call's own timeout is what the deadline leaves
(no room kept for the local finish, which already runs by the time it is needed), so a
call that is a little late (a throttled device leaves it 40 ms where it needs 50) can
still answer while the device computes.

A call the local answer beat is cancelled: left to run to its timeout it kept a frame
nobody waited for on the shared uplink (fleet-8-edges' cloud-only run: 434 ms mean and
107 misses, against 385 and 70 cut at the budget). A cancelled call that was out longer
than predicted counts as the timeout it replaced (RTT suspicion, a breaker failure), so a
hung cloud still opens the breaker. The local finish is not cancelled when the call wins
(its result is dropped): the device spends that compute only on requests whose call
overran.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np

from collab.decision import Candidate, call_budget_ms
from collab.edge.cloud import CallHandle, Remote


@dataclass(frozen=True, kw_only=True)
class HedgePolicy:
    factor: float  # start the local finish after factor x the predicted call ... (0: never)
    slack_ms: float  # ... + this many ms

    def after_ms(
        self, c: Candidate, deadline_ms: float | None = None, elapsed_ms: float = 0.0
    ) -> float | None:
        """When to start the local finish of ``c``'s cloud call, ms after the call begins
        ``elapsed_ms`` into the request (None: never hedge; the call is cut at its budget
        and finished locally then). At the latest when an unhedged call would be cut for
        the local finish (:func:`~collab.decision.call_budget_ms`), so the deadline is
        kept as without hedging while the call keeps its chance to answer."""
        if self.factor <= 0:
            return None
        after = self.factor * (c.encode_ms + c.call_ms + c.decode_ms) + self.slack_ms
        if deadline_ms is not None:
            cut = call_budget_ms(deadline_ms, elapsed_ms + c.encode_ms, c.local_finish_ms, math.inf)
            after = min(after, 0.0 if cut is None else cut + c.encode_ms)
        return after


Local = tuple[np.ndarray, float]  # the local answer and its compute ms


def hedged(
    pool: Executor,
    call: Callable[[dict[str, float], CallHandle], Remote],
    finish: Callable[[], Local],
    after_ms: float,
    timings: dict[str, float],
) -> tuple[Remote, Local | None]:
    """Run ``call`` (it writes its stage times into the dict it is given and the frame's
    size into the handle) in ``pool``; if it has not returned after ``after_ms``, run
    ``finish`` too and return on the first answer; a call the local answer beat is
    cancelled. Returns the call's outcome (a stand-in while it is still ending: no
    output, ``bytes_sent`` as encoded) and the local answer when the local finish won
    (None when the call answered first or failed before the hedge started: the caller
    finishes locally as without hedging). The call's stage times go into ``timings``
    once it has returned."""
    ct: dict[str, float] = {}
    handle = CallHandle()
    rf = pool.submit(call, ct, handle)
    try:
        remote = rf.result(timeout=after_ms / 1000.0)
    except FutureTimeout:
        pass
    else:
        timings.update(ct)
        return remote, None
    lf = pool.submit(finish)
    both: list[Future[Any]] = [rf, lf]
    wait(both, return_when=FIRST_COMPLETED)
    if rf.done() and rf.result().output is not None:
        timings.update(ct)
        return rf.result(), None
    local = lf.result()
    timings["hedge_after_ms"] = after_ms
    if rf.done():
        timings.update(ct)
        return rf.result(), local
    handle.cancel()
    return Remote(None, handle.sent, f"hedged: the call ran past {after_ms:.0f} ms"), local
