"""Bounded exploration (collab.edge.explore) on synthetic profiles: the engine and the
explorer in a loop against a 'true world' whose costs differ from the profile."""

from __future__ import annotations

import itertools

from collab.decision import CloudState, Decision, EdgeState, PathSpec, Policy, Profile, decide
from collab.edge.explore import Explorer
from collab.net.estimator import NetState
from tests.test_decision import _lossless

NET = NetState(rtt_ms=10.0, bandwidth_bps=8e6)


def profile() -> Profile:
    """edge-only 100 ms; a split whose profiled tail (60 ms, profiled on a slow machine)
    makes it look 1.2x worse than edge-only; cloud-only far worse (a 400 KB upload)."""
    return Profile(
        model_name="synthetic",
        paths=(
            PathSpec(path="edge_only", edge_ms=100.0),
            PathSpec(
                path="cloud_only",
                cloud_ms=60.0,
                local_finish_ms=100.0,
                raw_bytes=400_000,
                codec_stats=_lossless(400_000),
            ),
            PathSpec(
                path="split",
                split_point="s",
                edge_ms=40.0,
                cloud_ms=60.0,
                local_finish_ms=60.0,
                raw_bytes=8_000,
                codec_stats=_lossless(8_000),
            ),
        ),
    )


TRUE_CLOUD_MS = {"split:s": 5.0, "cloud_only": 5.0}  # the real cloud is fast


def _run(explorer: Explorer, seconds: float = 60.0, rate_hz: float = 4.0) -> list[Decision]:
    """Requests at ``rate_hz``: each decision on the current estimates, then the cloud
    compute of the path taken is learnt (what a ServerTiming reply tells the client)."""
    prof = profile()
    observed: dict[str, float] = {}
    previous: str | None = None
    out = []
    for i in range(int(seconds * rate_hz)):
        now = i / rate_hz
        d = decide(
            prof,
            policy=Policy(mode="auto"),
            net=NET,
            cloud=CloudState(compute_ms=dict(observed)),
            edge=EdgeState(),
            accuracy_budget=0.0,
            previous=previous,
        )
        previous = d.chosen.key
        d = explorer.maybe(d, now)
        explorer.note(d.chosen.key, now)
        if d.chosen.key in TRUE_CLOUD_MS:
            observed[d.chosen.key] = TRUE_CLOUD_MS[d.chosen.key]
        out.append(d)
    return out


def test_greedy_never_corrects_a_pessimistic_estimate() -> None:
    ds = _run(Explorer(interval_s=0.0, max_ratio=1.3, stale_s=10.0))
    assert {d.chosen.key for d in ds} == {"edge_only"}


def test_exploration_finds_the_faster_path_and_stays_on_it() -> None:
    ex = Explorer(interval_s=3.0, max_ratio=1.3, stale_s=10.0)
    ds = _run(ex)
    keys = [d.chosen.key for d in ds]
    first = keys.index("split:s")
    assert ds[first].reason.startswith("exploring split:s (never tried")
    assert ds[first].explored and not any(d.explored for d in ds[first + 1 :])
    assert 3.0 <= first / 4.0 <= 3.5  # the first interval starts at the first decision
    # once measured, the split is the greedy choice: every later request takes it
    assert set(keys[first:]) == {"split:s"}
    # cloud-only (predicted > 1.3x) is never explored
    assert "cloud_only" not in keys


def test_exploration_is_bounded() -> None:
    """At most one exploring request per interval, only candidates within max_ratio,
    and a path tried lately is not explored again before stale_s."""
    ex = Explorer(interval_s=3.0, max_ratio=1.3, stale_s=10.0)
    prof = profile()
    d = decide(
        prof, policy=Policy(mode="auto"), net=NET, cloud=CloudState(), edge=EdgeState()
    )  # the split looks worse forever: every exploration is of it
    times = []
    for i in range(400):  # 100 s at 4 Hz
        now = i / 4.0
        got = ex.maybe(d, now)
        ex.note(got.chosen.key, now)
        if got.chosen.key != d.chosen.key:
            times.append(now)
            assert got.chosen.total_ms <= 1.3 * d.chosen.total_ms
    assert ex.explored == len(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and min(gaps) >= 10.0  # stale_s bounds re-exploring one path
    assert len(times) <= 100 / 10.0 + 1
    state = ex.state(d, 100.0)
    assert state["explored"] == len(times)
    assert set(state["last_used_s_ago"]) == {"edge_only", "split:s"}


def test_forced_policies_never_explore() -> None:
    ex = Explorer(interval_s=0.5, max_ratio=10.0, stale_s=0.1)
    d = decide(
        profile(),
        policy=Policy(mode="edge_only"),
        net=NET,
        cloud=CloudState(),
        edge=EdgeState(),
    )
    assert all(ex.maybe(d, t).chosen.key == "edge_only" for t in range(10))
    assert ex.explored == 0
