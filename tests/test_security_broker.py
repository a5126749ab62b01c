"""Attacks on the control plane's broker and its cloud list, against a real Mosquitto and
real coordinator/agent processes: an anonymous client on the coordinator's own broker,
an edge credential posing as a cloud, a flood of endpoints, a failed cloud-list apply,
ids that announce once and vanish, and passwords on mosquitto_passwd's command line."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from test_control_support import agent_config, coordinator_config, wait_until

from collab.cli import main as collab_main
from collab.control import messages as msg
from collab.control import topics
from collab.control.agent import NodeAgent
from collab.control.mqtt import MqttClient, MqttConfig
from collab.errors import AuthError, ConfigError
from collab.procs import Broker, collab_process, free_port, mosquitto, mosquitto_binary
from collab.proto import control_pb2 as pb
from coordinator import cli_auth
from coordinator.cli_auth import write_fleet_auth
from coordinator.daemon import Coordinator

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

_ROOT = "user root\n" if os.geteuid() == 0 else ""


def _announce(node_id: str, role: str, endpoints: tuple[str, ...] = ()) -> bytes:
    a = msg.Announce(node_id=node_id, role=role, endpoints=endpoints, sent_at=time.time())
    return msg.announce_to_proto(a).SerializeToString()


class Clouds:
    """What an edge agent applied as its cloud list (the on_clouds callback)."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls: list[tuple[str, ...]] = []
        self.applied: list[tuple[str, ...]] = []

    def __call__(self, clouds: tuple[str, ...]) -> None:
        self.calls.append(clouds)
        if self.fail > 0:
            self.fail -= 1
            raise ConfigError("cannot resolve cloud host (simulated)")
        self.applied.append(clouds)


def test_anonymous_client_cannot_connect_to_the_coordinators_default_broker(
    tmp_path: Path,
) -> None:
    """The replayed-directive attack needs a connection: the default own broker refuses
    an anonymous one (and a wrong password), so nothing reaches a node's rollout topic."""
    mqtt_port, grpc_port = free_port(), free_port()
    log = tmp_path / "coord.log"
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
        with pytest.raises(AuthError, match="refused"):
            MqttClient(MqttConfig(url=url, client_id="replayer")).start(timeout=3)
        with pytest.raises(AuthError):
            MqttClient(MqttConfig(url=url, username="coordinator", password="guess")).start(3)
        creds = tmp_path / "mqtt-auth" / "credentials"
        for f in creds.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        op = MqttConfig(
            url=url, username="operator", password=(creds / "operator").read_text().strip()
        )
        seen: list[bytes] = []
        with MqttClient(op) as client:  # the coordinator itself logged in and publishes
            client.subscribe(topics.COORDINATOR_STATE, lambda t, p, r: seen.append(p), qos=1)
            wait_until(lambda: seen, 5, "coordinator state on its authenticated broker")
        assert pb.CoordinatorState.FromString(seen[0]).state == pb.STATE_ONLINE


def test_coordinator_refuses_an_anonymous_non_loopback_broker_without_the_flag(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="allow-anonymous-broker"):
        coordinator_config("mqtt://192.0.2.1:1883", tmp_path)
    assert coordinator_config(
        "mqtt://192.0.2.1:1883", tmp_path, allow_anonymous_broker=True
    ).allow_anonymous_broker
    rc = collab_main(
        ["coordinator", "--db", str(tmp_path / "r.db"), "--broker", "mqtt://192.0.2.1"]
    )
    assert rc == 1 and not (tmp_path / "r.db").exists()


def test_edge_credential_announcing_a_cloud_endpoint_reaches_no_edge(tmp_path: Path) -> None:
    pw = write_fleet_auth(tmp_path / "auth", ["e1", "e2"], clouds=["c1"], use_binary=False)
    conf = (tmp_path / "auth" / "mosquitto.conf").read_text() + _ROOT
    with mosquitto(conf) as b:

        def cfg(user: str, client_id: str = "") -> MqttConfig:
            return MqttConfig(url=b.url, username=user, password=pw[user], client_id=client_id)

        clouds = Clouds()
        with (
            Coordinator(coordinator_config(b.url, tmp_path, mqtt=cfg("coordinator"))) as c,
            NodeAgent(agent_config(b.url, tmp_path, "e2", mqtt=cfg("e2")), on_clouds=clouds),
            MqttClient(cfg("e1", "e1-attacker")) as e1,
        ):
            evil = ("evil.example:443",)
            # the role field of an announce on its own topic: refused by the coordinator
            e1.publish(
                topics.node_topic("e1", topics.ANNOUNCE), _announce("e1", "cloud", evil), qos=1
            )
            # the cloud-announce topic: dropped by the broker (ACL), as is the list itself
            e1.publish(
                topics.node_topic("e1", topics.CLOUD_ANNOUNCE),
                _announce("e1", "cloud", evil),
                qos=1,
            )
            e1.publish(topics.CLOUDS, msg.clouds_to_proto(evil, 1.0).SerializeToString(), qos=1)
            wait_until(lambda: c.rejections.counts.get("role_conflict"), 5, "role refused")
            # a real cloud credential is the only way into the list
            real = ("127.0.0.1:9000",)
            with NodeAgent(
                agent_config(b.url, tmp_path, "c1", role="cloud", mqtt=cfg("c1"), endpoints=real)
            ):
                wait_until(lambda: clouds.applied, 5, "the cloud's endpoint at the edge")
            assert "e1" not in c.registry.nodes or c.registry.nodes["e1"].role == "edge"
            assert c.registry.nodes["c1"].role == "cloud"
            assert all(e not in evil for lst in clouds.calls for e in lst)
            assert clouds.applied[0] == real


def test_300_cloud_endpoints_and_a_malformed_one_reach_edges_capped_and_filtered(
    broker: Broker, tmp_path: Path
) -> None:
    clouds, direct = Clouds(), Clouds()
    with (
        Coordinator(coordinator_config(broker.url, tmp_path)) as c,
        NodeAgent(agent_config(broker.url, tmp_path, "e1"), on_clouds=clouds),
        MqttClient(MqttConfig(url=broker.url, client_id="clouds")) as raw,
    ):
        raw.publish(  # rejected at the coordinator: counted, never listed
            topics.node_topic("bad", topics.CLOUD_ANNOUNCE),
            pb.NodeAnnounce(
                node_id="bad", role=pb.ROLE_CLOUD, state=pb.STATE_ONLINE, endpoints=["http://x:1"]
            ).SerializeToString(),
            qos=1,
        )
        for i in range(300):
            raw.publish(
                topics.node_topic(f"c{i:03d}", topics.CLOUD_ANNOUNCE),
                _announce(f"c{i:03d}", "cloud", (f"127.0.0.1:{20000 + i}",)),
                qos=1,
                wait=5 if i == 299 else None,
            )
        wait_until(lambda: len(c.registry.nodes) >= 301, 60, "300 clouds registered")
        wait_until(
            lambda: clouds.applied and "127.0.0.1:20299" in clouds.applied[-1], 60, "newest list"
        )
        assert c.rejections.counts.get("malformed") == 1 and "bad" not in c.registry.nodes
        newest = clouds.applied[-1]
        assert len(newest) == msg.MAX_CLOUDS and newest[0] == "127.0.0.1:20299"  # freshest first
        # a list from elsewhere (an old coordinator, a broker without ACL): 300 entries and
        # a malformed one are cut to the valid first 64, not refused whole
        with NodeAgent(agent_config(broker.url, tmp_path, "e2"), on_clouds=direct):
            listed = ["tcp://x y:1", *(f"10.0.{i // 250}.{i % 250}:50051" for i in range(300))]
            raw.publish(
                topics.CLOUDS,
                pb.CloudEndpoints(endpoints=listed, updated_at=1.0).SerializeToString(),
                qos=1,
                retain=True,
                wait=5,
            )
            wait_until(
                lambda: any(len(x) == 64 and x[0] == listed[1] for x in direct.applied), 5, "capped"
            )
        assert direct.applied[-1] == tuple(listed[1:65])


def test_failed_cloud_list_apply_is_retried(broker: Broker, tmp_path: Path) -> None:
    """The agent stored the list before applying it, so a resend was ignored: now the
    list counts only once applied and a failed apply is retried."""
    clouds = Clouds(fail=2)
    with (
        Coordinator(coordinator_config(broker.url, tmp_path)),
        NodeAgent(agent_config(broker.url, tmp_path, "e1"), on_clouds=clouds) as edge,
        NodeAgent(
            agent_config(broker.url, tmp_path, "c1", role="cloud", endpoints=("127.0.0.1:9000",))
        ),
    ):
        wait_until(lambda: clouds.applied, 5, "the list applied after two failures")
        assert len(clouds.calls) >= 3 and clouds.calls[0] == clouds.applied[0]
        assert edge.cloud_endpoints == ("127.0.0.1:9000",)


def test_registry_row_expires_after_its_ttl(broker: Broker, tmp_path: Path) -> None:
    retained: list[bytes] = []
    cfg = coordinator_config(broker.url, tmp_path, heartbeat_timeout=0.5, node_ttl=1.0)
    with Coordinator(cfg) as c:
        with NodeAgent(agent_config(broker.url, tmp_path, "gone")):
            wait_until(lambda: "gone" in c.registry.nodes, 5, "registered")
        wait_until(lambda: "gone" not in c.registry.nodes, 5, "row expired")
        assert c.db.call(lambda db: db.execute("SELECT count(*) FROM nodes").fetchone()[0]) == 0
    with MqttClient(MqttConfig(url=broker.url)) as sub:  # its retained announce is cleared
        sub.subscribe(
            topics.node_topic("gone", topics.ANNOUNCE), lambda t, p, r: retained.append(p)
        )
        time.sleep(0.5)
    assert not any(retained)
    with Coordinator(cfg) as c:  # and a restart does not bring it back
        time.sleep(0.3)
        assert "gone" not in c.registry.nodes


def test_400_node_ids_keep_the_retained_status_bounded(broker: Broker, tmp_path: Path) -> None:
    """Each id announces once with telemetry near the payload cap (~60 KB): the snapshot
    used to carry all 400 (~23 MiB, rebuilt every interval)."""
    mix = {f"{i:04d}" + "p" * 230: i for i in range(256)}
    published: list[bytes] = []
    budget = 256 * 1024
    cfg = coordinator_config(broker.url, tmp_path, heartbeat_timeout=60, status_max_bytes=budget)
    with (
        Coordinator(cfg),
        MqttClient(MqttConfig(url=broker.url, client_id="flood")) as raw,
        MqttClient(MqttConfig(url=broker.url, client_id="watch")) as watch,
    ):
        watch.subscribe(topics.FLEET_STATUS, lambda t, p, r: published.append(p), qos=0)
        for i in range(400):
            node = f"n{i:03d}"
            raw.publish(topics.node_topic(node, topics.ANNOUNCE), _announce(node, "edge"), qos=1)
            tel = msg.Telemetry(node_id=node, interval_s=1.0, path_mix=mix, sent_at=1.0)
            raw.publish(
                topics.node_topic(node, topics.TELEMETRY),
                msg.telemetry_to_proto(tel).SerializeToString(),
                qos=1,
                wait=5 if i == 399 else None,
            )

        def complete() -> bool:  # the newest snapshot shows all 400, each with telemetry
            if not published:
                return False
            fs = msg.fleet_status_from_bytes(published[-1])
            return len(fs.nodes) + fs.omitted == 400 and all(n.telemetry for n in fs.nodes)

        wait_until(complete, 15, "a snapshot of all 400 ids")
        fs = msg.fleet_status_from_bytes(published[-1])
        assert fs.omitted > 0 and max(map(len, published)) <= budget + 4096
        n = len(published)
        time.sleep(1.0)  # 5 status intervals: nothing changed, nothing rebuilt or sent
        assert len(published) == n


def test_mosquitto_passwd_never_sees_a_password_on_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argvs: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(argv: list[str], **kw: object) -> object:
        argvs.append(list(argv))
        return real_run(argv, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(cli_auth.subprocess, "run", recording_run)
    pw = write_fleet_auth(tmp_path / "auth", ["e1"], clouds=["c1"], use_binary=True)
    assert argvs and all(a[1] == "-U" for a in argvs)
    assert not any(p in arg for p in pw.values() for a in argvs for arg in a)
    assert not list((tmp_path / "auth").glob(".passwd-plain*"))  # the plaintext is gone
    # the hashes it wrote are the ones Mosquitto checks
    conf = (tmp_path / "auth" / "mosquitto.conf").read_text() + _ROOT
    with mosquitto(conf) as b, MqttClient(MqttConfig(url=b.url, username="c1", password=pw["c1"])):
        pass
    # re-running adds a node, keeps the others' passwords, and follows no planted symlink
    again = write_fleet_auth(tmp_path / "auth", ["e2"], use_binary=False)
    assert again["c1"] == pw["c1"] and "e2" in again
    (tmp_path / "auth" / "credentials" / "e3").symlink_to(tmp_path / "stolen")
    with pytest.raises(ConfigError):
        write_fleet_auth(tmp_path / "auth", ["e3"], use_binary=False)
    assert not (tmp_path / "stolen").exists()
    with pytest.raises(ConfigError, match="one role"):
        write_fleet_auth(tmp_path / "auth", [], clouds=["e1"], use_binary=False)


def test_a_malformed_cloud_entry_costs_the_real_edge_nothing(
    broker: Broker, digits_bundle: Path
) -> None:
    """One bad entry used to make ``set_cloud`` raise after the agent had stored the list:
    the edge stayed edge-only and ignored every resend. Now it skips the entry and serves
    split from the valid one."""
    import grpc
    from test_client import sample_inputs

    from collab import codec as codecs
    from collab.bundle import load_bundle
    from collab.edge.config import ClientConfig
    from collab.proto import collab_pb2, collab_pb2_grpc
    from edge_node.config import EdgeConfig
    from edge_node.server import serve

    cport = free_port()
    cloud = f"127.0.0.1:{cport}"
    sp = load_bundle(digits_bundle).manifest.split_points[0].name
    cfg = EdgeConfig(
        bundle=digits_bundle,
        listen="127.0.0.1:0",
        mqtt=MqttConfig(url=broker.url),
        node_id="edge-sec-1",
        heartbeat_interval_s=0.2,
        client=ClientConfig(probe_interval_s=0.2, accuracy_budget=0.0),
    )
    listed = ["tcp://evil:1", "no port", "x" * 300 + ":1", cloud]
    with (
        MqttClient(MqttConfig(url=broker.url, client_id="publisher")) as pub,
        collab_process(["cloud", "--bundle", str(digits_bundle), "--listen", cloud], port=cport),
        serve(cfg) as (server, port),
        grpc.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        pub.publish(
            topics.CLOUDS,
            pb.CloudEndpoints(endpoints=listed, updated_at=1.0).SerializeToString(),
            qos=1,
            retain=True,
            wait=5.0,
        )
        wait_until(lambda: server.client.cloud == (cloud,), 10, "the valid entry applied")
        req = collab_pb2.EdgeInferRequest(
            frame=codecs.encode(sample_inputs(digits_bundle, 1), "f32"), policy=f"split:{sp}"
        )
        r = collab_pb2_grpc.EdgeServiceStub(ch).Infer(req, timeout=10)
        assert r.path == "split" and not r.fell_back
        pub.publish(topics.CLOUDS, b"", qos=1, retain=True, wait=5.0)


@pytest.mark.parametrize(
    "endpoint, ok",
    [
        ("cloud-1:50051", True),
        ("10.0.0.1:50051", True),
        ("[::1]:9000", True),
        ("a_b.example.org:65535", True),
        ("http://x:1", False),
        ("x:0", False),
        ("x:65536", False),
        ("x", False),
        (":1", False),
        ("a b:1", False),
        ("x:1/path", False),
        ("user@x:1", False),
        ("-x:1", False),
        ("[zz]:1", False),
        ("x:\uff11", False),  # a full-width digit
        ("a" * 64 + ".b:1", False),  # a label longer than 63
        (".".join(["a" * 63] * 4) + ":1", False),  # a name longer than 253
    ],
)
def test_announced_endpoints_are_host_port(endpoint: str, ok: bool) -> None:
    if ok:
        assert msg.valid_endpoint(endpoint) == endpoint
        assert msg.announce_from_bytes(_announce("c1", "cloud", (endpoint,))).endpoints == (
            endpoint,
        )
    else:
        with pytest.raises(msg.MalformedMessage):
            msg.announce_from_bytes(_announce("c1", "cloud", (endpoint,)))
