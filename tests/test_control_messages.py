"""Control-plane codecs and the topic scheme: round trips and rejection of bad input."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.control import messages as msg
from collab.control import topics
from collab.control.transfer import receive_bundle
from collab.errors import BundleError, ConfigError
from collab.proto import control_pb2 as pb


def test_topic_scheme_round_trip_and_rejects() -> None:
    t = topics.node_topic("edge-1", topics.HEARTBEAT)
    assert t == "collab/v1/node/edge-1/heartbeat"
    assert topics.parse_node_topic(t) == ("edge-1", "heartbeat")
    for bad in (
        "collab/v2/node/a/heartbeat",
        "collab/v1/node/a/b/heartbeat",
        "collab/v1/node/a/nope",
        "collab/v1/node/a b/ack",
        "collab/v1/fleet/clouds",
    ):
        assert topics.parse_node_topic(bad) is None
    with pytest.raises(ConfigError):
        topics.node_topic("a/b", topics.ACK)
    with pytest.raises(ConfigError):
        topics.check_node_id("+")


def test_codecs_round_trip() -> None:
    a = msg.Announce(
        node_id="c1",
        role="cloud",
        online=True,
        capabilities={"rollout": "1"},
        bundle_version="ab" * 32,
        endpoints=("h:1", "h:2"),
        model_name="m",
        sent_at=1.5,
    )
    assert msg.announce_from_bytes(msg.announce_to_proto(a).SerializeToString()) == a
    t = msg.Telemetry(
        node_id="e1",
        interval_s=2,
        requests=10,
        path_mix={"split": 7, "edge_only": 3},
        p50_ms=1,
        p95_ms=2,
        p99_ms=3,
        fallbacks=1,
        bytes_sent=99,
        sent_at=5,
    )
    assert msg.telemetry_from_bytes(msg.telemetry_to_proto(t).SerializeToString()) == t
    d = msg.RolloutDirective(
        rollout_id="r",
        version="0" * 64,
        sequence=3,
        target="e1",
        fetch_endpoint="h:1",
        expires_at=9.0,
        file_sizes={"manifest.json": 10},
    )
    sd = msg.SignedDirective(statement=msg.directive_statement(d), signature=b"s", directive=d)
    assert msg.directive_from_bytes(msg.directive_to_proto(sd).SerializeToString()) == sd
    ack = msg.RolloutAck(node_id="e1", rollout_id="r", version="v", ok=False, error="bad")
    assert msg.ack_from_bytes(msg.ack_to_proto(ack).SerializeToString()) == ack
    ro = msg.RolloutStatus(
        rollout_id="r",
        version="v",
        previous_version="p",
        percent=50,
        state="active",
        created_at=1.0,
        nodes=(msg.NodeRolloutState(node_id="e1", state="pending"),),
    )
    fs = msg.FleetStatus(
        nodes=(
            msg.NodeStatus(
                node_id="e1",
                role="edge",
                online=True,
                bundle_version="v",
                endpoints=(),
                last_seen=2.0,
                telemetry=t,
            ),
        ),
        rollout=ro,
        updated_at=3.0,
        rejected={"malformed": 2},
    )
    assert msg.fleet_status_from_bytes(msg.fleet_status_to_proto(fs).SerializeToString()) == fs


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff",  # not protobuf
        pb.NodeAnnounce(node_id="e1", role=7, state=1).SerializeToString(),  # unknown role
        pb.NodeAnnounce(node_id="e/1", role=1, state=1).SerializeToString(),  # bad id
        pb.NodeAnnounce(node_id="e1", role=1, state=1, sent_at=math.nan).SerializeToString(),
        pb.NodeAnnounce(node_id="e1", role=1, state=1, endpoints=["x"] * 1000).SerializeToString(),
    ],
)
def test_bad_announce_is_malformed(payload: bytes) -> None:
    with pytest.raises(msg.MalformedMessage):
        msg.announce_from_bytes(payload)


def test_directive_requires_fields() -> None:
    with pytest.raises(msg.MalformedMessage):
        msg.directive_from_bytes(
            pb.RolloutDirective(
                statement=pb.DirectiveStatement(version="short").SerializeToString()
            ).SerializeToString()
        )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_decoders_raise_only_malformed(data: bytes) -> None:
    for decode in (
        msg.announce_from_bytes,
        msg.heartbeat_from_bytes,
        msg.telemetry_from_bytes,
        msg.directive_from_bytes,
        msg.ack_from_bytes,
        msg.clouds_from_bytes,
        msg.fleet_status_from_bytes,
    ):
        with contextlib.suppress(msg.MalformedMessage):
            decode(data)


@pytest.mark.parametrize(
    "chunks, why",
    [
        ([pb.BundleChunk(path="../evil", data=b"x", file_size=1)], "unsafe"),
        ([pb.BundleChunk(path="/etc/passwd", data=b"x", file_size=1)], "unsafe"),
        ([pb.BundleChunk(path="a/../../b", data=b"x", file_size=1)], "unsafe"),
        ([pb.BundleChunk(path="manifest.json", offset=5, data=b"x", file_size=6)], "offset"),
        ([pb.BundleChunk(path="manifest.json", data=b"x", file_size=9)], "truncated"),
        ([pb.BundleChunk(path="a.onnx", data=b"x", file_size=1)], "no manifest"),
        (
            [
                pb.BundleChunk(path="manifest.json", data=b"x", file_size=1),
                pb.BundleChunk(path="b", data=b"y", file_size=1),
                pb.BundleChunk(path="manifest.json", offset=1, data=b"x", file_size=2),
            ],
            "repeats",
        ),
        ([pb.BundleChunk(path="manifest.json", data=b"x" * 64, file_size=64)], "exceeds"),
    ],
)
def test_receive_bundle_rejects_hostile_streams(
    tmp_path: Path, chunks: list[pb.BundleChunk], why: str
) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    with pytest.raises(BundleError, match=why):
        receive_bundle(chunks, dest, max_bytes=32)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    "flt, topic, want",
    [
        ("collab/v1/node/+/+", "collab/v1/node/e1/ack", True),
        ("collab/v1/node/+/+", "collab/v1/node/e1", False),
        ("collab/v1/node/+/+", "collab/v1/node/e1/ack/x", False),
        ("collab/v1/#", "collab/v1/fleet/clouds", True),
        ("collab/v1/#", "collab/v1", True),
        ("#", "$SYS/broker", False),
        ("collab/v1/fleet/clouds", "collab/v1/fleet/clouds", True),
        ("collab/v1/fleet/clouds", "collab/v1/fleet/status", False),
    ],
)
def test_topic_matches_agrees_with_paho(flt: str, topic: str, want: bool) -> None:
    from paho.mqtt.client import topic_matches_sub

    from collab.control.mqtt import topic_matches

    assert topic_matches(flt, topic) is want
    assert topic_matches_sub(flt, topic) is want
