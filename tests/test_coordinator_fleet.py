"""Acceptance: a coordinator process, 3 edge + 1 cloud node processes, a real Mosquitto.

Registration, cloud discovery, liveness on kill -9, signed rollout, tampered-bundle
refusal, rollback, and coordinator kill -9 mid-rollout followed by a restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_control_support import SimFleet, StatusWatcher, base_bundle, revised, wait_until

from collab.bundle import load_bundle
from collab.cli import main as collab_main
from collab.procs import Broker, collab_process, free_port
from coordinator.operator_client import CoordinatorClient

HB_TIMEOUT = 2.0
EDGES = ("e1", "e2", "e3")


def _coordinator(broker: Broker, tmp: Path, port: int, oport: int, hb: float = HB_TIMEOUT):  # type: ignore[no-untyped-def]
    return collab_process(
        [
            "coordinator",
            "--broker",
            broker.url,
            "--db",
            str(tmp / "coord" / "registry.db"),
            "--listen",
            f"127.0.0.1:{port}",
            "--operator-listen",
            f"127.0.0.1:{oport}",
            "--heartbeat-timeout",
            str(hb),
            "--status-interval",
            "0.3",
        ],
        port=oport,  # the operator server starts last
        log=tmp / f"coordinator-{time.monotonic_ns()}.log",
    )


def _settle(c: CoordinatorClient, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    return wait_until(
        lambda: (lambda r: r if r.state != "active" else None)(c.status()),
        timeout,
        "rollout to settle",
    )


@pytest.mark.slow
def test_fleet_end_to_end(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, oport = free_port(), free_port()
    ep, op = f"127.0.0.1:{port}", f"127.0.0.1:{oport}"
    v0_dir = base_bundle(tmp_path)
    v0 = load_bundle(v0_dir).version
    v1_dir = revised(v0_dir, tmp_path / "v1", rev=101)
    v2_dir = revised(v0_dir, tmp_path / "v2", rev=102)
    key = tmp_path / "coord" / "coordinator.ed25519.pub"
    with SimFleet(tmp_path / "nodes", broker.url, key) as fleet, StatusWatcher(broker.url) as watch:
        proc = _coordinator(broker, tmp_path, port, oport)
        coord = proc.__enter__()
        try:
            assert key.exists()
            for e in EDGES:
                fleet.spawn(e, "edge", "--bundle", str(v0_dir), "--swap-delay", "0.5")
            fleet.spawn("c1", "cloud", "--endpoint", "127.0.0.1:5555", "--bundle", str(v0_dir))

            # --- registration and discovery
            wait_until(
                lambda: all((n := watch.node(x)) and n.online for x in (*EDGES, "c1")),
                30,
                "4 nodes online",
            )
            for e in EDGES:
                wait_until(
                    lambda e=e: fleet.state(e).get("clouds") == ["127.0.0.1:5555"],
                    10,
                    f"{e} cloud list",
                )
                assert fleet.state(e)["version"] == v0
            wait_until(
                lambda: all((n := watch.node(x)) and n.telemetry for x in EDGES), 10, "telemetry"
            )
            capsys.readouterr()
            assert collab_main(["status", "--broker", broker.url]) == 0
            table = capsys.readouterr().out
            assert (
                "4/4 nodes online" in table and f"coordinator: online (bundle fetch {ep})" in table
            )
            assert all(f"{x} " in table for x in (*EDGES, "c1")), table

            # --- kill -9 an edge: offline within the heartbeat timeout
            t0 = time.monotonic()
            fleet.procs["e3"].kill()
            wait_until(
                lambda: (n := watch.node("e3")) and not n.online, HB_TIMEOUT + 1.0, "e3 offline"
            )
            assert time.monotonic() - t0 <= HB_TIMEOUT + 1.0
            live = ("e1", "e2")

            with CoordinatorClient(op) as c:
                # --- rollout reaches every live edge, each acks and serves the new version
                assert c.upload(v0_dir).version == v0  # so a rollback has somewhere to go
                assert (
                    collab_main(
                        ["rollout", "--coordinator", op, "publish", str(v1_dir), "--wait", "30"]
                    )
                    == 0
                )
                ro = _settle(c)
                v1 = ro.version
                assert ro.state == "completed", ro
                assert {n.node_id for n in ro.nodes} == {*live, "c1"}
                assert ro.previous_version == v0
                for e in live:
                    st = fleet.state(e)
                    assert st["version"] == v1 and st["output"] is not None
                    assert watch.node(e) is not None
                wait_until(
                    lambda: all(watch.node(e).bundle_version == v1 for e in live),
                    10,
                    "registry versions",
                )

                # --- rollback is one command and really swaps back
                assert (
                    collab_main(["rollout", "--coordinator", op, "rollback", "--wait", "30"]) == 0
                )
                ro = _settle(c)
                assert ro.version == v0 and ro.state == "completed"
                assert all(fleet.state(e)["version"] == v0 for e in live)

                # --- a bundle tampered with after signing is refused by every edge and reported
                v2 = c.upload(v2_dir).version
                stored = tmp_path / "coord" / "bundles" / v2
                with open(stored / load_bundle(v2_dir).manifest.segments[-1].path, "ab") as f:
                    f.write(b"\0evil")
                c.start(v2)
                ro = _settle(c)
                assert ro.state == "failed"
                assert {n.node_id for n in ro.nodes if n.state == "refused"} == {*live, "c1"}
                assert all("modified" in n.error for n in ro.nodes), ro.nodes
                assert all(
                    fleet.state(e)["version"] == v0 for e in live
                )  # still serving the old one

                # --- coordinator kill -9 mid-rollout, restart: state intact, rollout completes
                ro = c.start(v1)
                assert ro.state == "active"
                coord.kill()
                coord.wait(10)
        finally:
            proc.__exit__(None, None, None)
        with _coordinator(broker, tmp_path, port, oport), CoordinatorClient(op) as c:
            ro2 = c.status()
            assert (
                ro2.rollout_id == ro.rollout_id and ro2.version == v1
            )  # persisted before the kill
            ro2 = _settle(c)
            assert ro2.state == "completed", ro2
            assert all(fleet.state(e)["version"] == v1 for e in live)
            wait_until(
                lambda: all(
                    (n := watch.node(x)) and n.online and n.bundle_version == v1
                    for x in (*live, "c1")
                ),
                10,
                "registry after restart",
            )
            n3 = watch.node("e3")
            assert n3 is not None and not n3.online and n3.bundle_version == v0
