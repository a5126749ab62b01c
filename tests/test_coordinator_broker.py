"""The coordinator's own broker: Mosquitto when no --broker is given, and one clear error
saying how to get one when it is not installed."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_control_support import agent_config, wait_until

from collab import procs
from collab.cli import main as collab_main
from collab.control.agent import NodeAgent
from collab.control.mqtt import MqttConfig
from collab.procs import collab_process, free_port, mosquitto_binary


def test_coordinator_cli_starts_its_own_broker(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    mqtt_port, grpc_port = free_port(), free_port()
    log = tmp_path / "coord.log"
    # the own broker is not anonymous: a node logs in with a credential issued into
    # the coordinator's auth directory (<db dir>/mqtt-auth)
    assert collab_main(["mqtt-auth", "--out", str(tmp_path / "mqtt-auth"), "--node", "e1"]) == 0
    password = (tmp_path / "mqtt-auth" / "credentials" / "e1").read_text().strip()
    with collab_process(
        [
            "coordinator",
            "--db",
            str(tmp_path / "r.db"),
            "--listen",
            f"127.0.0.1:{grpc_port}",
            "--own-broker",
            f"127.0.0.1:{mqtt_port}",
        ],
        port=grpc_port,
        log=log,
    ):
        url = f"mqtt://127.0.0.1:{mqtt_port}"
        mqtt = MqttConfig(url=url, username="e1", password=password)
        with NodeAgent(agent_config(url, tmp_path, "e1", endpoints=(), mqtt=mqtt)) as a:
            a.set_endpoints(())
        text = log.read_text()
        assert "started own broker: mosquitto" in text
    wait_until(lambda: "node e1 (edge) online" in log.read_text(), 1, "coordinator saw the node")


def test_coordinator_without_mosquitto_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(procs, "mosquitto_binary", lambda: None)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = collab_main(
            [
                "coordinator",
                "--db",
                str(tmp_path / "r.db"),
                "--own-broker",
                f"127.0.0.1:{free_port()}",
            ]
        )
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    err = capsys.readouterr().err
    assert rc == 1
    assert (
        "mosquitto binary is not installed: apt-get install mosquitto" in err
        and "--broker URL" in err
    )
    assert not (tmp_path / "r.db").exists()  # refused before the coordinator started
