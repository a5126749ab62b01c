"""NodeAgent against an in-process coordinator and a real Mosquitto: refusals keep the
old bundle, staged rollouts, late joiners, telemetry, heartbeat-timeout liveness."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_control_support import Swapper, agent_config, coordinator_config, tiny_bundle, wait_until

from collab.bundle import load_bundle
from collab.control import messages as msg
from collab.control.agent import NodeAgent
from collab.control.signing import public_pem
from collab.procs import Broker
from coordinator.daemon import Coordinator
from coordinator.rollout import selected


def _settled(c: Coordinator, timeout: float = 15.0) -> msg.RolloutStatus:
    return wait_until(
        lambda: (lambda r: r if r and r.state != "active" else None)(c.rollout_status()),
        timeout,
        "rollout to settle",
    )


def test_refusals_keep_the_old_bundle(broker: Broker, tmp_path: Path) -> None:
    v1 = tiny_bundle(tmp_path / "v1", rev=1)
    other = tmp_path / "other.pub"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    with Coordinator(coordinator_config(broker.url, tmp_path)) as c:
        good, bad_swap = Swapper(), Swapper(fail=True)
        agents = [
            NodeAgent(
                agent_config(
                    broker.url,
                    tmp_path,
                    "ok",
                    trusted_key=c.public_key_path,
                    fetch_token=c.fetch_key.token_for("ok"),
                ),
                on_swap=good,
            ),
            NodeAgent(
                agent_config(
                    broker.url,
                    tmp_path,
                    "wrongkey",
                    trusted_key=other,
                    fetch_token=c.fetch_key.token_for("wrongkey"),
                ),
                on_swap=Swapper(),
            ),
            NodeAgent(agent_config(broker.url, tmp_path, "nokey"), on_swap=Swapper()),
            NodeAgent(
                agent_config(
                    broker.url,
                    tmp_path,
                    "swapfail",
                    trusted_key=c.public_key_path,
                    fetch_token=c.fetch_key.token_for("swapfail"),
                ),
                on_swap=bad_swap,
            ),
        ]
        for a in agents:
            a.start()
        try:
            wait_until(
                lambda: len([n for n in c.fleet_status().nodes if n.online]) == 4, 10, "4 nodes"
            )
            ro = c.start_rollout(c.upload(v1))
            ro = _settled(c)
            states = {n.node_id: (n.state, n.error) for n in ro.nodes}
            assert states["ok"][0] == "acked"
            assert states["wrongkey"] == (
                "refused",
                "bundle signature does not verify against the trusted key",
            )
            assert (
                states["nokey"][0] == "refused"
                and "no trusted coordinator key" in states["nokey"][1]
            )
            assert (
                states["swapfail"][0] == "refused"
                and "runtime cannot load" in states["swapfail"][1]
            )
            assert ro.state == "failed"
            assert good.loaded == [ro.version] and agents[0].bundle_version == ro.version
            assert all(a.bundle_version == "" for a in agents[1:])  # nobody switched
            assert (
                agents[0].bundle_dir is not None
                and load_bundle(agents[0].bundle_dir).version == ro.version
            )
            m = c.metrics.get_sample_value
            assert m("collab_coordinator_nodes", {"role": "edge", "state": "online"}) == 4
            assert m("collab_coordinator_rollout_nodes", {"state": "refused"}) == 3
            assert m("collab_coordinator_messages") > 0
        finally:
            for a in agents:
                a.stop()


def test_staged_rollout_and_late_joiner(broker: Broker, tmp_path: Path) -> None:
    v1 = tiny_bundle(tmp_path / "v1", rev=1)
    ids = [f"n{i}" for i in range(6)]
    with Coordinator(coordinator_config(broker.url, tmp_path)) as c:
        version = c.upload(v1)
        expected = {i for i in ids if selected(version, i, 50)}
        assert 0 < len(expected) < len(ids), "pick ids that split at 50%"
        swappers = {i: Swapper() for i in ids}
        agents = [
            NodeAgent(
                agent_config(
                    broker.url,
                    tmp_path,
                    i,
                    trusted_key=c.public_key_path,
                    fetch_token=c.fetch_key.token_for(i),
                ),
                on_swap=swappers[i],
            )
            for i in ids[:-1]
        ]
        for a in agents:
            a.start()
        try:
            wait_until(
                lambda: len([n for n in c.fleet_status().nodes if n.online]) == 5, 10, "5 nodes"
            )
            c.start_rollout(version, percent=50)
            # n5 joins mid-rollout; if it falls in the staged set it is added and updated
            late = NodeAgent(
                agent_config(
                    broker.url,
                    tmp_path,
                    ids[-1],
                    trusted_key=c.public_key_path,
                    fetch_token=c.fetch_key.token_for(ids[-1]),
                ),
                on_swap=swappers[ids[-1]],
            ).start()
            agents.append(late)
            wait_until(
                lambda: ids[-1] in {n.node_id for n in c.fleet_status().nodes}, 10, "late joiner"
            )
            ro = _settled(c)
            assert ro.state == "completed" and ro.percent == 50
            assert {n.node_id for n in ro.nodes} == expected
            assert {i for i in ids if swappers[i].loaded} == expected
            # raising the percentage only adds nodes
            c.start_rollout(version, percent=100)
            ro = _settled(c)
            assert ro.state == "completed" and {n.node_id for n in ro.nodes} == set(ids)
            assert all(a.bundle_version == version for a in agents)
            assert all(len(s.loaded) == 1 for s in swappers.values())  # nobody swapped twice
        finally:
            for a in agents:
                a.stop()


def test_telemetry_heartbeat_timeout_and_cloud_list(broker: Broker, tmp_path: Path) -> None:
    tel = msg.Telemetry(
        node_id="",
        interval_s=0.3,
        requests=30,
        path_mix={"split": 20, "edge_only": 10},
        p50_ms=4.0,
        p95_ms=float("nan"),
        p99_ms=9.5,
        fallbacks=1,
        bytes_sent=4096,
    )
    with Coordinator(coordinator_config(broker.url, tmp_path, heartbeat_timeout=1.0)) as c:
        clouds: list[tuple[str, ...]] = []
        edge = NodeAgent(
            agent_config(broker.url, tmp_path, "e1"), telemetry=lambda: tel, on_clouds=clouds.append
        ).start()
        cloud = NodeAgent(
            agent_config(broker.url, tmp_path, "c1", role="cloud", endpoints=("10.0.0.1:9000",))
        )
        cloud.start()
        try:
            assert edge.wait_for_clouds(10) == ("10.0.0.1:9000",)
            got = wait_until(
                lambda: c.registry.nodes.get("e1") and c.registry.nodes["e1"].telemetry,
                10,
                "telemetry",
            )
            assert (
                got.path_mix == {"split": 20, "edge_only": 10}
                and got.p99_ms == 9.5
                and got.node_id == "e1"
            )
            assert (
                got.p95_ms == 0.0 and not c.rejections.counts
            )  # NaN (idle) sent as 0, not rejected
            cloud.set_endpoints(("10.0.0.2:9000",))
            wait_until(lambda: edge.cloud_endpoints == ("10.0.0.2:9000",), 10, "endpoint change")
            # a hung cloud node (connected, silent): offline after the heartbeat timeout, edges told
            cloud._stop.set()  # stops heartbeats only; the MQTT connection (no will) stays up
            t0 = time.monotonic()
            wait_until(lambda: not c.registry.nodes["c1"].online, 5, "c1 offline")
            assert (
                0.5 <= time.monotonic() - t0 <= 1.0 + 1.5
            )  # by the timeout (no will), not at once
            wait_until(lambda: edge.cloud_endpoints == (), 5, "empty cloud list")
            assert clouds[-1] == ()
        finally:
            edge.stop()
            cloud.stop()
