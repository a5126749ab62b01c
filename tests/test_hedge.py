"""Hedged fallback (collab.edge.hedge): the local finish starts beside a call that overran
its prediction, the first answer wins, and the call still reports what it took."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from collab.edge.cloud import CallHandle, Remote
from collab.edge.hedge import HedgePolicy, hedged

CLOUD = np.ones((1, 3), np.float32)
LOCAL = np.zeros((1, 3), np.float32)


def _call(
    release: threading.Event, *, answer: bool = True, sent: int = 1234
) -> Callable[..., Remote]:
    def call(into: dict[str, float], handle: CallHandle) -> Remote:
        into["encode_ms"] = 1.0
        handle.sent = sent
        release.wait(10)
        into["cloud_call_ms"] = 99.0
        return Remote(CLOUD if answer else None, sent, None if answer else "DEADLINE_EXCEEDED")

    return call


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    with ThreadPoolExecutor(4) as p:
        yield p  # type: ignore[misc]


def test_a_call_on_time_is_not_hedged(pool: ThreadPoolExecutor) -> None:
    done = threading.Event()
    done.set()
    ran = []
    timings: dict[str, float] = {}
    remote, local = hedged(pool, _call(done), lambda: ran.append(1) or (LOCAL, 5.0), 1000, timings)
    assert local is None and remote.output is CLOUD and not ran
    assert timings["cloud_call_ms"] == 99.0 and "hedge_after_ms" not in timings


def test_the_local_finish_wins_over_a_call_still_out(pool: ThreadPoolExecutor) -> None:
    release = threading.Event()
    timings: dict[str, float] = {}
    handles: list[CallHandle] = []
    inner = _call(release)

    def call(into: dict[str, float], handle: CallHandle) -> Remote:
        handles.append(handle)
        return inner(into, handle)

    remote, local = hedged(pool, call, lambda: (LOCAL, 5.0), 10, timings)
    assert handles[0].cancelled  # the frame nobody waits for leaves the uplink
    assert local is not None and local[0] is LOCAL and remote.output is None
    assert remote.bytes_sent == 1234 and "hedged" in (remote.fallback_reason or "")
    assert timings["hedge_after_ms"] == 10 and "cloud_call_ms" not in timings
    release.set()  # the call goes on in its thread and ends on its own


def test_a_call_answering_during_the_local_finish_wins(pool: ThreadPoolExecutor) -> None:
    release, local_may_end = threading.Event(), threading.Event()

    def finish() -> tuple[np.ndarray, float]:
        release.set()  # the cloud answers while the device computes
        local_may_end.wait(10)
        return LOCAL, 50.0

    timings: dict[str, float] = {}
    remote, local = hedged(pool, _call(release), finish, 10, timings)
    local_may_end.set()
    assert local is None and remote.output is CLOUD and timings["cloud_call_ms"] == 99.0


def test_a_call_failing_after_the_hedge_keeps_the_local_answer(pool: ThreadPoolExecutor) -> None:
    release = threading.Event()

    def finish() -> tuple[np.ndarray, float]:
        release.set()
        return LOCAL, 5.0

    remote, local = hedged(pool, _call(release, answer=False), finish, 10, {})
    assert local is not None and local[0] is LOCAL and remote.output is None


def test_the_hedge_starts_at_factor_times_the_predicted_call() -> None:
    from collab.decision import Candidate

    c = Candidate(
        key="split:a",
        path="split",
        split_point="a",
        variant=None,
        codec="int8",
        bytes=1000.0,
        edge_ms=50.0,
        encode_ms=1.0,
        transfer_ms=20.0,
        rtt_ms=10.0,
        queue_ms=2.0,
        cloud_ms=6.0,
        decode_ms=1.0,
        total_ms=90.0,
        accuracy_loss=0.0,
        local_finish_ms=30.0,
        feasible=True,
        meets_deadline=True,
    )
    assert HedgePolicy(factor=2.0, slack_ms=20.0).after_ms(c) == pytest.approx(2 * 40 + 20)
    assert HedgePolicy(factor=0.0, slack_ms=20.0).after_ms(c) is None
    # at the latest where an unhedged call would be cut for the local finish: 200 ms
    # deadline, 50 ms gone, 1 ms to encode, 10 ms slack, 1.5 x 30 ms kept for the finish
    assert HedgePolicy(factor=2.0, slack_ms=20.0).after_ms(c, 200.0, 50.0) == pytest.approx(
        200 - 51 - 10 - 45 + 1
    )
    assert HedgePolicy(factor=2.0, slack_ms=20.0).after_ms(c, 1000.0, 50.0) == pytest.approx(100)
