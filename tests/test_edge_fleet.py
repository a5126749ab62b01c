"""The edge daemon in a fleet: follows the coordinator's cloud list, publishes telemetry
(real Mosquitto broker, real cloud node process)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
from test_client import sample_inputs

from collab import codec as codecs
from collab.bundle import load_bundle
from collab.control import messages as msg
from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig
from collab.edge.config import ClientConfig
from collab.procs import Broker, collab_process, free_port
from collab.proto import collab_pb2, collab_pb2_grpc
from edge_node.config import EdgeConfig
from edge_node.server import serve


def _wait(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_edge_follows_cloud_list_and_publishes_telemetry(
    broker: Broker, digits_bundle: Path
) -> None:
    cport = free_port()
    node = "edge-fleet-t1"
    sp = load_bundle(digits_bundle).manifest.split_points[0].name
    x = sample_inputs(digits_bundle, 1)
    got: dict[str, list[bytes]] = {}
    lock = threading.Lock()

    def on_msg(topic: str, payload: bytes, retained: bool) -> None:
        with lock:
            got.setdefault(topic.rsplit("/", 1)[1], []).append(payload)

    cfg = EdgeConfig(
        bundle=digits_bundle,
        listen="127.0.0.1:0",
        mqtt=MqttConfig(url=broker.url),
        node_id=node,
        heartbeat_interval_s=0.2,
        telemetry_interval_s=0.3,
        client=ClientConfig(probe_interval_s=0.2, accuracy_budget=0.0),
    )
    with (
        MqttClient(MqttConfig(url=broker.url, client_id="test-observer")) as obs,
        collab_process(
            ["cloud", "--bundle", str(digits_bundle), "--listen", f"127.0.0.1:{cport}"], port=cport
        ),
    ):
        obs.subscribe(f"{topics.PREFIX}/node/{node}/+", on_msg)
        with serve(cfg) as (server, port), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = collab_pb2_grpc.EdgeServiceStub(ch)
            req = collab_pb2.EdgeInferRequest(frame=codecs.encode(x, "f32"), policy=f"split:{sp}")
            assert stub.Infer(req, timeout=10).fell_back  # no cloud known yet: finished locally
            obs.publish(
                topics.CLOUDS,
                msg.clouds_to_proto((f"127.0.0.1:{cport}",), time.time()).SerializeToString(),
                qos=1,
                retain=True,
                wait=5.0,
            )
            assert _wait(lambda: server.client.cloud == (f"127.0.0.1:{cport}",))
            r = stub.Infer(req, timeout=10)
            assert r.path == "split" and not r.fell_back and r.bytes_sent > 0

            def telemetry_with_split() -> bool:
                with lock:
                    tms = [msg.telemetry_from_bytes(p) for p in got.get(topics.TELEMETRY, [])]
                return any(t.path_mix.get("split", 0) >= 1 and t.bytes_sent > 0 for t in tms)

            assert _wait(telemetry_with_split)
            with lock:
                ann = [msg.announce_from_bytes(p) for p in got.get(topics.ANNOUNCE, [])]
                hb = got.get(topics.HEARTBEAT, [])
            assert ann and ann[0].role == "edge" and ann[0].online
            assert ann[0].endpoints == (f"127.0.0.1:{port}",)
            assert ann[0].bundle_version == load_bundle(digits_bundle).version
            assert hb
        obs.publish(topics.CLOUDS, b"", qos=1, retain=True, wait=5.0)  # clear the retained list
