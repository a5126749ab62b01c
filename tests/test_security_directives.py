"""Attacks on rollouts, against a real Mosquitto, a real coordinator and real node
processes: replayed, expired and misdirected directives, drift, and hostile fetch
endpoints (issue 17, items 3 and 7)."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_control_support import (
    SimFleet,
    StatusWatcher,
    Swapper,
    agent_config,
    coordinator_config,
    revised,
    tiny_bundle,
    wait_until,
)

from collab.bundle import MANIFEST, load_bundle, update_bundle
from collab.control import messages as msg
from collab.control import topics
from collab.control.agent import NodeAgent
from collab.control.mqtt import MqttClient, MqttConfig
from collab.control.replay import mark_file
from collab.control.signing import load_or_create_signing_key, load_public_key, sign_directive
from collab.control.transfer import CHUNK, checked_chunks, receive_bundle
from collab.errors import BundleError
from collab.procs import Broker
from collab.proto import control_pb2 as pb
from collab.proto import control_pb2_grpc as pb_grpc
from coordinator.cli_status import format_table
from coordinator.daemon import Coordinator


class Attacker:
    """An anonymous client of the coordinator's broker: records every directive and ack
    and republishes whatever it likes on a node's rollout topic."""

    def __init__(self, url: str) -> None:
        self.directives: list[tuple[str, bytes]] = []  # (topic, payload)
        self.acks: list[msg.RolloutAck] = []
        self._lock = threading.Lock()
        self.client = MqttClient(MqttConfig(url=url))
        self.client.subscribe(f"{topics.PREFIX}/node/+/{topics.ROLLOUT}", self._on_directive)
        self.client.subscribe(f"{topics.PREFIX}/node/+/{topics.ACK}", self._on_ack)

    def _on_directive(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload:
            with self._lock:
                self.directives.append((topic, payload))

    def _on_ack(self, topic: str, payload: bytes, retained: bool) -> None:
        with self._lock:
            self.acks.append(msg.ack_from_bytes(payload))

    def captured(self, node_id: str, version: str) -> bytes:
        def find() -> bytes | None:
            with self._lock:
                for _, p in self.directives:
                    sd = msg.directive_from_bytes(p)
                    if sd.directive.target == node_id and sd.directive.version == version:
                        return p
            return None

        found: bytes = wait_until(find, 10, f"directive for {node_id} {version[:8]}")
        return found

    def replay(self, node_id: str, payload: bytes) -> None:
        self.client.publish(
            topics.node_topic(node_id, topics.ROLLOUT), payload, qos=1, retain=True, wait=5
        )

    def refusal(self, node_id: str, rollout_id: str) -> msg.RolloutAck:
        def find() -> msg.RolloutAck | None:
            with self._lock:
                return next(
                    (
                        a
                        for a in self.acks
                        if a.node_id == node_id and a.rollout_id == rollout_id and not a.ok
                    ),
                    None,
                )

        ack: msg.RolloutAck = wait_until(find, 10, f"refusal of {rollout_id} by {node_id}")
        return ack

    def __enter__(self) -> Attacker:
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()


def _settled(c: Coordinator, version: str) -> msg.RolloutStatus:
    return wait_until(
        lambda: (lambda r: r if r and r.version == version and r.state != "active" else None)(
            c.rollout_status()
        ),
        15,
        "rollout to settle",
    )


def _served(fleet: SimFleet, node_id: str, version: str) -> None:
    wait_until(lambda: fleet.state(node_id).get("version") == version, 15, f"{node_id} on v")


def _online(c: Coordinator, node_id: str) -> None:
    wait_until(
        lambda: any(n.node_id == node_id and n.online for n in c.fleet_status().nodes),
        15,
        f"{node_id} online",
    )


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Path, Path]:
    v1 = tiny_bundle(tmp_path / "v1", rev=1)
    return v1, revised(v1, tmp_path / "v2", rev=2)


def test_replayed_old_directive_cannot_downgrade_even_after_a_restart(
    broker: Broker, tmp_path: Path, two_versions: tuple[Path, Path]
) -> None:
    with (
        Coordinator(coordinator_config(broker.url, tmp_path, heartbeat_timeout=3.0)) as c,
        SimFleet(tmp_path / "fleet", broker.url, c.public_key_path) as fleet,
        Attacker(broker.url) as attacker,
    ):
        old, new = (c.upload(v) for v in two_versions)
        fleet.spawn("e1")
        _online(c, "e1")
        r_old = c.start_rollout(old)
        _settled(c, old)
        captured = attacker.captured("e1", old)
        r_new = c.start_rollout(new)
        assert _settled(c, new).state == "completed"
        _served(fleet, "e1", new)

        attacker.replay("e1", captured)
        ack = attacker.refusal("e1", r_old.rollout_id)
        assert "replayed or downgrading" in ack.error
        assert fleet.state("e1")["version"] == new
        assert c.rollout_status().state == "completed" and not c.drift()  # type: ignore[union-attr]

        mark = fleet.root / "e1" / mark_file(load_public_key(c.public_key_path))
        assert stat.S_IMODE(mark.stat().st_mode) == 0o600
        assert json.loads(mark.read_text())["version"] == new

        # the mark survives a restart: the replayed directive is still retained on e1's topic
        fleet.procs["e1"].kill()
        fleet.procs["e1"].wait(10)
        attacker.acks.clear()
        fleet.spawn("e1", "edge", "--bundle", str(two_versions[1]))
        assert "replayed or downgrading" in attacker.refusal("e1", r_old.rollout_id).error
        time.sleep(0.5)
        assert fleet.state("e1")["version"] == new
        assert r_new.rollout_id != r_old.rollout_id


def _forged(c: Coordinator, node_id: str, version: str, **kw: Any) -> bytes:
    """A directive signed with the coordinator's own key (what a captured one for
    another node, or an old one, looks like to the attacker)."""
    ro = c.rollouts.current
    assert ro is not None
    d = msg.RolloutDirective(
        rollout_id=kw.pop("rollout_id", "forged"),
        version=version,
        sequence=kw.pop("sequence", ro.sequence + 10),
        target=kw.pop("target", node_id),
        fetch_endpoint=c.fetch_endpoint,
        expires_at=kw.pop("expires_at", time.time() + 60),
        model_name="tiny",
        issued_at=time.time(),
        file_sizes=c.store.sizes(version),
    )
    key = load_or_create_signing_key(c.key_path)
    return msg.directive_to_proto(sign_directive(key, d)).SerializeToString()


def test_expired_and_misdirected_directives_are_refused(
    broker: Broker, tmp_path: Path, two_versions: tuple[Path, Path]
) -> None:
    with (
        Coordinator(coordinator_config(broker.url, tmp_path)) as c,
        SimFleet(tmp_path / "fleet", broker.url, c.public_key_path) as fleet,
        Attacker(broker.url) as attacker,
    ):
        old, new = (c.upload(v) for v in two_versions)
        fleet.spawn("e1")
        _online(c, "e1")
        c.start_rollout(old)
        _settled(c, old)
        _served(fleet, "e1", old)

        attacker.replay("e1", _forged(c, "e1", new, rollout_id="late", expires_at=time.time() - 5))
        assert "expired" in attacker.refusal("e1", "late").error
        attacker.replay("e1", _forged(c, "e1", new, rollout_id="other", target="e2"))
        assert "is for node 'e2'" in attacker.refusal("e1", "other").error
        assert fleet.state("e1")["version"] == old


def test_drift_is_reported_when_a_node_is_forced_onto_another_version(
    broker: Broker, tmp_path: Path, two_versions: tuple[Path, Path]
) -> None:
    with (
        Coordinator(coordinator_config(broker.url, tmp_path)) as c,
        SimFleet(tmp_path / "fleet", broker.url, c.public_key_path) as fleet,
        StatusWatcher(broker.url) as watcher,
    ):
        old, new = (c.upload(v) for v in two_versions)
        fleet.spawn("e1")
        _online(c, "e1")
        c.start_rollout(new)
        assert _settled(c, new).state == "completed"
        assert c.drift() == {}
        # forced back onto the old bundle, by something that is not the coordinator (here:
        # restarted on it without the trusted key, so it cannot follow the directive)
        fleet.procs["e1"].kill()
        fleet.procs["e1"].wait(10)
        with SimFleet(tmp_path / "fleet", broker.url, None) as keyless:
            keyless.spawn("e1", "edge", "--bundle", str(two_versions[0]))
            wait_until(lambda: c.drift() == {"e1": old}, 15, "drift")
            m = c.metrics.get_sample_value("collab_coordinator_drifted_nodes")
            assert m == 1
            fs = wait_until(
                lambda: watcher.latest if watcher.latest and watcher.latest.drift else None,
                10,
                "drift in the status snapshot",
            )
            assert fs.drift == {"e1": old}
            assert f"drift: e1 serves {old[:12]}" in format_table(fs)


def test_a_pending_directive_is_resigned_so_a_returning_node_can_still_apply_it(
    broker: Broker, tmp_path: Path, two_versions: tuple[Path, Path]
) -> None:
    cfg = coordinator_config(broker.url, tmp_path, directive_ttl=1.0)
    with (
        Coordinator(cfg) as c,
        SimFleet(tmp_path / "fleet", broker.url, c.public_key_path) as fleet,
        Attacker(broker.url) as bus,
    ):
        version = c.upload(two_versions[0])
        fleet.spawn("e1", "edge", "--swap-delay", "30")
        _online(c, "e1")
        ro = c.start_rollout(version)
        first = msg.directive_from_bytes(bus.captured("e1", version)).directive
        fleet.procs["e1"].kill()  # down mid-swap: still pending, for longer than the ttl
        fleet.procs["e1"].wait(10)
        time.sleep(1.5)
        assert first.expires_at < time.time()
        fleet.spawn("e1")
        assert _settled(c, version).state == "completed"
        _served(fleet, "e1", version)
        assert not any(a.rollout_id == ro.rollout_id and not a.ok for a in bus.acks)


def _padded(out: Path, rev: int) -> Path:
    """A tiny bundle plus 1 MiB of listed data (a 1 MB model)."""
    tiny_bundle(out, rev=rev)

    def add_pad(root: Path, m: Any) -> Any:
        (root / "pad.bin").write_bytes(bytes(range(256)) * 4096)
        return replace(m, files={**m.files, "pad.bin": ""})

    update_bundle(out, add_pad)
    return out


class HostileBundles(pb_grpc.BundleServiceServicer):
    """Serves the genuine manifest and small files, then 50 MB of garbage for pad.bin."""

    def __init__(self, store_root: Path) -> None:
        self.store_root = store_root
        self.sent = 0
        self.fetches = 0

    def Fetch(self, request: pb.FetchRequest, context: grpc.ServicerContext) -> Iterator[Any]:
        self.fetches += 1
        root = self.store_root / request.version
        for rel in (MANIFEST, "head.onnx"):
            data = (root / rel).read_bytes()
            yield pb.BundleChunk(path=rel, offset=0, data=data, file_size=len(data))
        total = 50 * 1024 * 1024
        for off in range(0, total, CHUNK):
            self.sent += CHUNK
            yield pb.BundleChunk(path="pad.bin", offset=off, data=b"\xee" * CHUNK, file_size=total)


@contextmanager
def _hostile_server(store_root: Path) -> Iterator[tuple[HostileBundles, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    hostile = HostileBundles(store_root)
    pb_grpc.add_BundleServiceServicer_to_server(hostile, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield hostile, port
    finally:
        server.stop(0)


def test_hostile_fetch_endpoint_is_cut_at_the_declared_size(broker: Broker, tmp_path: Path) -> None:
    bundle = _padded(tmp_path / "b", rev=1)
    store = tmp_path / "coord" / "bundles"
    with _hostile_server(store) as (hostile, port):
        # the coordinator (honestly) names an endpoint the attacker answers (DNS, routing)
        cfg = coordinator_config(broker.url, tmp_path, advertise=f"127.0.0.1:{port}")
        with (
            Coordinator(cfg) as c,
            SimFleet(tmp_path / "fleet", broker.url, c.public_key_path) as fleet,
            Attacker(broker.url) as attacker,
        ):
            version = c.upload(bundle)
            fleet.spawn("e1")
            _online(c, "e1")
            ro = c.start_rollout(version)
            ack = attacker.refusal("e1", ro.rollout_id)
            assert f"pad.bin was modified: it exceeds its declared {1024 * 1024} bytes" in ack.error
            assert fleet.state("e1")["version"] == ""
            assert hostile.sent < 20 * 1024 * 1024  # the stream was cut, not drained
            bundles = fleet.root / "e1" / "bundles"
            assert not list(bundles.glob(".fetch-*")) and not list(bundles.iterdir())

    # the write bound itself: nothing past the declared size reaches the disk
    sizes = {rel: (bundle / rel).stat().st_size for rel in (MANIFEST, "head.onnx", "pad.bin")}
    sizes["tail.onnx"] = (bundle / "tail.onnx").stat().st_size
    dest = tmp_path / "dest"
    dest.mkdir()
    written: list[int] = []

    def stream() -> Iterator[pb.BundleChunk]:
        hostile = HostileBundles(tmp_path)
        for ch in hostile.Fetch(pb.FetchRequest(version="b"), None):  # type: ignore[arg-type]
            if (dest / "pad.bin").exists():
                written.append((dest / "pad.bin").stat().st_size)
            yield ch

    with pytest.raises(BundleError, match="exceeds its declared"):
        receive_bundle(
            checked_chunks(stream(), version=load_bundle(bundle).version, sizes=sizes), dest
        )
    assert (dest / "pad.bin").stat().st_size <= sizes["pad.bin"]
    assert max(written) <= sizes["pad.bin"]


def test_forged_manifest_is_refused_before_any_file_is_written(tmp_path: Path) -> None:
    bundle = tiny_bundle(tmp_path / "b", rev=1)
    raw = (bundle / MANIFEST).read_bytes()
    evil = raw.replace(b'"tiny"', b'"evil"')
    dest = tmp_path / "dest"
    dest.mkdir()
    chunks = [
        pb.BundleChunk(path=MANIFEST, data=evil, file_size=len(evil)),
        pb.BundleChunk(path="head.onnx", data=b"x", file_size=1),
    ]
    with pytest.raises(BundleError, match="does not match the rollout version"):
        receive_bundle(checked_chunks(chunks, version=load_bundle(bundle).version), dest)
    assert list(dest.iterdir()) == []


def test_fetch_failing_with_a_non_bundle_error_leaves_no_staging(
    broker: Broker, tmp_path: Path
) -> None:
    v1 = tiny_bundle(tmp_path / "v1", rev=1)
    with Coordinator(coordinator_config(broker.url, tmp_path)) as c:
        cfg = agent_config(
            broker.url,
            tmp_path,
            "e1",
            trusted_key=c.public_key_path,
            fetch_ca=tmp_path / "missing-ca.pem",  # the fetch raises FileNotFoundError
        )
        with NodeAgent(cfg, on_swap=Swapper()) as agent:
            _online(c, "e1")
            ro = c.start_rollout(c.upload(v1))
            st = _settled(c, ro.version)
            assert st.nodes[0].state == "refused" and "FileNotFoundError" in st.nodes[0].error
            assert agent.bundle_version == ""
            assert not list((cfg.work_dir / "bundles").iterdir())
