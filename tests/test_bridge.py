"""Bridged brokers: an edge on a regional Mosquitto (A) joins a coordinator on the central
one (B) through a bridge configured by collab.deploy.bridge; two real Mosquitto processes
on loopback. A rollout reaches the edge; while the bridge is down the edge keeps serving
(its version, its last cloud list) and when it returns the edge is online again, still
registered, and the next rollout reaches it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_control_support import SimFleet, StatusWatcher, base_bundle, revised, wait_until

from collab.bundle import load_bundle
from collab.deploy.bridge import bridge_config
from collab.procs import Broker, collab_process, free_port, mosquitto
from coordinator.operator_client import CoordinatorClient

HB_TIMEOUT = 1.5


def _rolled_out(c: CoordinatorClient, version: str) -> bool:
    ro = c.status()
    return ro.version == version and ro.state == "completed"


def test_edge_behind_a_bridge(broker: Broker, tmp_path: Path) -> None:
    central = broker  # B: the coordinator's
    port, oport, regional_port = free_port(), free_port(), free_port()
    bridge = bridge_config(
        name="region-a", address=f"127.0.0.1:{central.port}", restart_timeout_s=1
    )
    v0_dir = base_bundle(tmp_path)
    v1_dir = revised(v0_dir, tmp_path / "v1", rev=201)
    v0 = load_bundle(v0_dir).version
    key = tmp_path / "coord" / "coordinator.ed25519.pub"
    coordinator = collab_process(
        [
            "coordinator",
            "--broker", central.url,
            "--db", str(tmp_path / "coord" / "registry.db"),
            "--listen", f"127.0.0.1:{port}",
            "--operator-listen", f"127.0.0.1:{oport}",
            "--heartbeat-timeout", str(HB_TIMEOUT),
            "--status-interval", "0.3",
        ],
        port=oport,  # the operator server starts last
        log=tmp_path / "coordinator.log",
    )  # fmt: skip
    regional = mosquitto(bridge, port=regional_port)
    a = regional.__enter__()
    try:
        with (
            coordinator,
            SimFleet(tmp_path / "nodes", a.url, key) as edges,
            SimFleet(tmp_path / "clouds", central.url, key) as clouds,
            StatusWatcher(central.url) as watch,
            CoordinatorClient(f"127.0.0.1:{oport}") as op,
        ):
            clouds.spawn("c1", "cloud", "--endpoint", "127.0.0.1:5555", "--bundle", str(v0_dir))
            edges.spawn("e1", "edge", "--bundle", str(v0_dir))
            # registered through the bridge; the cloud list crossed it the other way
            wait_until(lambda: (n := watch.node("e1")) and n.online, 20, "e1 online via the bridge")
            wait_until(lambda: edges.state("e1").get("clouds") == ["127.0.0.1:5555"], 10, "clouds")
            op.upload(v0_dir)
            v1 = op.upload(v1_dir).version
            op.start(v1, percent=100)
            wait_until(lambda: edges.state("e1").get("version") == v1, 20, "rollout to e1")
            wait_until(lambda: _rolled_out(op, v1), 10, "rollout completed")

            # --- the bridge drops (the regional broker with it): e1 keeps serving
            regional.__exit__(None, None, None)
            wait_until(
                lambda: (n := watch.node("e1")) and not n.online, HB_TIMEOUT + 3, "e1 offline"
            )
            assert edges.procs["e1"].poll() is None
            state = edges.state("e1")
            assert state["version"] == v1 and state["clouds"] == ["127.0.0.1:5555"]

            # --- it returns: e1 re-registers, nothing lost, the next rollout reaches it
            regional = mosquitto(bridge, port=regional_port)
            a = regional.__enter__()
            t0 = time.monotonic()
            wait_until(lambda: (n := watch.node("e1")) and n.online, 20, "e1 back online")
            back_s = time.monotonic() - t0
            n = watch.node("e1")
            assert n is not None and n.bundle_version == v1 and n.role == "edge"
            op.rollback()
            wait_until(lambda: edges.state("e1").get("version") == v0, 20, "rollback to e1")
            wait_until(lambda: _rolled_out(op, v0), 10, "rollback completed")
            assert back_s < 15, back_s
    finally:
        regional.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("kw", "line"),
    [
        ({"username": "bridge-a", "password": "pw"}, "remote_username bridge-a"),
        ({"cafile": Path("/etc/ca.crt")}, "bridge_cafile /etc/ca.crt"),
    ],
)
def test_bridge_config_lines(kw: dict[str, object], line: str) -> None:
    text = bridge_config(name="region-a", address="central:8883", **kw)  # type: ignore[arg-type]
    assert line in text and "topic collab/v1/# both 1" in text and "cleansession false" in text


def test_bridge_cli_prints_the_stanza(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from collab.cli import main
    from collab.files import write_private

    write_private(tmp_path / "pw", b"s3cret\n")
    argv = ["deploy", "bridge", "--name", "region-b", "--central", "central:1883"]
    assert main([*argv, "--username", "bridge-b", "--password-file", str(tmp_path / "pw")]) == 0
    out = capsys.readouterr().out
    assert out == bridge_config(
        name="region-b", address="central:1883", username="bridge-b", password="s3cret"
    )
    assert main([*argv[:-1], "central"]) == 1  # no port: one clear error
