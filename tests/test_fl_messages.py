"""FL round-control messages: protobuf round trips, the decode boundary they share with
the control plane, their place in the one topic scheme, and garbage on a real broker."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import pytest
from test_control_support import wait_until

from collab.control import topics
from collab.control.messages import MalformedMessage
from collab.control.mqtt import MqttClient, MqttConfig, topic_matches
from collab.errors import ConfigError, ControlPlaneError
from collab.fl import messages as msg
from collab.fl.aggregator import Aggregator, serve
from collab.fl.config import config_from_dict
from collab.fl.data import member_data
from collab.fl.member import ModelHolder, Trainer
from collab.fl.participant import FLClient
from collab.procs import Broker
from collab.proto import fl_pb2
from coordinator.cli_auth import acl_text

HELLO = msg.ClientHello(client_id="c007", num_examples=123, pid=4242)
ANNOUNCEMENT = msg.RoundAnnouncement(
    federation="fed-a",
    round=3,
    base_version="b" * 64,
    sampled=("c000", "c007"),
    deadline_unix=1.7e9,
    aggregator="10.0.0.1:50070",
    encoding="ckks",
    context_id="f" * 32,
    num_values=651,
    min_clients=2,
    fixed_denominator=10.5,
)
MODELS = [
    msg.ModelPublished(
        federation="fed-a",
        round=3,
        base_version="b" * 64,
        version="v" * 64,
        reporters=7,
        sampled=10,
    ),
    msg.ModelPublished(
        federation="fed-a",
        round=4,
        base_version="v" * 64,
        version="w" * 64,
        reporters=9,
        sampled=10,
        epsilon=0.0,
        sigma_eff=0.8,
    ),
]
STATUSES = [
    msg.FederationStatus(
        federation="fed-a", state=s, round=r, version="v" * 64, detail=d, epsilon=e
    )
    for s, r, d, e in [
        ("running", 0, "", None),
        ("done", 5, "", 2.5),
        ("budget_exhausted", 4, "epsilon 8.1 > 8", 7.9),
        ("failed", 1, "boom", None),
    ]
]


def test_every_fl_message_round_trips_through_protobuf() -> None:
    assert msg.hello_from_bytes(msg.hello_to_proto(HELLO).SerializeToString()) == HELLO
    assert (
        msg.announcement_from_bytes(msg.announcement_to_proto(ANNOUNCEMENT).SerializeToString())
        == ANNOUNCEMENT
    )
    for m in MODELS:
        assert msg.model_from_bytes(msg.model_to_proto(m).SerializeToString()) == m
    for s in STATUSES:
        assert msg.status_from_bytes(msg.status_to_proto(s).SerializeToString()) == s
    # epsilon 0.0 is a value, not "no DP": presence survives the wire
    assert msg.model_to_proto(MODELS[1]).HasField("epsilon") and not msg.model_to_proto(
        MODELS[0]
    ).HasField("epsilon")


def _bad_announcement(**kw: object) -> bytes:
    m = msg.announcement_to_proto(ANNOUNCEMENT)
    for k, v in kw.items():
        if k == "sampled":
            m.sampled.append(str(v))
        else:
            setattr(m, k, v)
    return m.SerializeToString()


@pytest.mark.parametrize(
    ("decode", "payload", "why"),
    [
        (msg.hello_from_bytes, b"\xff\xfe\xfd", "FlClientHello"),
        (msg.hello_from_bytes, b"", "invalid node id"),
        (
            msg.hello_from_bytes,
            fl_pb2.FlClientHello(client_id="a/b").SerializeToString(),
            "invalid node id",
        ),
        (msg.announcement_from_bytes, b"", "encoding"),
        (msg.announcement_from_bytes, _bad_announcement(encoding="rot13"), "encoding"),
        (msg.announcement_from_bytes, _bad_announcement(aggregator=""), "aggregator"),
        (msg.announcement_from_bytes, _bad_announcement(round=0), "round"),
        (msg.announcement_from_bytes, _bad_announcement(deadline_unix=math.inf), "deadline_unix"),
        (
            msg.announcement_from_bytes,
            _bad_announcement(fixed_denominator=math.nan),
            "fixed_denominator",
        ),
        (msg.announcement_from_bytes, _bad_announcement(sampled="c 1"), "invalid node id"),
        (msg.model_from_bytes, b"", "version"),
        (
            msg.model_from_bytes,
            fl_pb2.FlModelPublished(round=1, version="v", epsilon=math.nan).SerializeToString(),
            "epsilon",
        ),
        (
            msg.model_from_bytes,
            fl_pb2.FlModelPublished(round=1, version="v", sigma_eff=-math.inf).SerializeToString(),
            "sigma_eff",
        ),
        (msg.status_from_bytes, b"", "state"),
        (msg.status_from_bytes, fl_pb2.FlFederationStatus(state=99).SerializeToString(), "state"),  # type: ignore[arg-type]
        (msg.status_from_bytes, b"\x0a\xff", "FlFederationStatus"),
    ],
)
def test_malformed_fl_payloads_raise_the_control_planes_error(
    decode, payload: bytes, why: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MalformedMessage, match=why) as ei:
        decode(payload)
    assert isinstance(ei.value, ControlPlaneError)


def test_fl_topics_are_in_the_one_scheme_and_acl() -> None:
    presence = topics.fl_client_topic("fed-a", "c007")
    assert presence == "collab/v1/fl/fed-a/clients/c007"
    assert topics.parse_fl_client_topic(presence) == ("fed-a", "c007")
    assert topic_matches(topics.fl_clients_filter("fed-a"), presence)
    kinds = [topics.fl_topic("fed-a", k) for k in topics.FL_KINDS]
    assert kinds == [
        "collab/v1/fl/fed-a/round",
        "collab/v1/fl/fed-a/model",
        "collab/v1/fl/fed-a/status",
    ]
    for t in [presence, *kinds]:  # the coordinator's and operator's one pattern covers FL too
        assert topic_matches(f"{topics.PREFIX}/#", t)
    acl = acl_text("coordinator", "operator", "fl-aggregator")
    assert f"pattern write {topics.FL_PREFIX}/+/{topics.FL_CLIENTS}/%u" in acl
    for bad in [
        "collab/v1/fl/fed-a/clients/c 1",
        "collab/v1/fl/fed-a/clients",
        "collab/v1/fl//clients/c1",
        "collab/v2/fl/fed-a/clients/c1",
        "collab/v1/fl/fed-a/round",
        "collab/v1/fl/a/clients/c1/x",
    ]:
        assert topics.parse_fl_client_topic(bad) is None
    with pytest.raises(ConfigError):
        topics.fl_client_topic("fed-a", "a/b")  # would not match clients/+, so never be seen
    with pytest.raises(ValueError):
        topics.fl_topic("fed-a", "clients")


def test_garbage_on_the_bus_is_dropped_and_the_round_still_runs(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real aggregator and a real client on a real Mosquitto: malformed presence and round
    payloads are logged and dropped at the decode boundary (never raised into the MQTT loop),
    and a full round afterwards aggregates the one good client."""
    caplog.set_level(logging.WARNING, logger="collab")
    fed = "garbage"
    cfg = config_from_dict(
        {
            "federation": fed,
            "clients": 2,
            "modes": ["plain"],
            "rounds": 1,
            "model": {"federated": ["fc2"]},
            "round": {"min_clients": 1, "deadline_s": 60},
        }
    )
    agg = Aggregator(cfg, None)
    x, y = member_data(cfg, 0)
    stop = threading.Event()
    with (
        serve(agg) as _,
        MqttClient(MqttConfig(url=broker.url, client_id="agg")) as agg_mq,
        MqttClient(MqttConfig(url=broker.url, client_id="c000")) as client_mq,
        MqttClient(MqttConfig(url=broker.url, client_id="raw")) as raw,
    ):
        agg.attach(agg_mq)
        fl = FLClient(Trainer(ModelHolder(cfg), x, y, seed=0), "c000", client_mq)
        fl.start()
        worker = threading.Thread(target=fl.run, args=(stop,), daemon=True)
        worker.start()
        round_topic = topics.fl_topic(fed, topics.FL_ROUND)
        wait_until(
            lambda: "c000" in agg.roster and client_mq.connected, 10, "the good client present"
        )

        def pub(topic: str, payload: bytes) -> None:
            raw.publish(topic, payload, qos=1, retain=True, wait=5)

        pub(topics.fl_client_topic(fed, "c001"), b"\xff\xfe\xfd")  # not protobuf
        pub(
            f"{topics.FL_PREFIX}/{fed}/{topics.FL_CLIENTS}/c 2",
            msg.hello_to_proto(
                msg.ClientHello(client_id="c 2", num_examples=1)
            ).SerializeToString(),
        )  # bad id in the topic
        pub(round_topic, b"\x0a\xff")  # truncated protobuf
        pub(round_topic, _bad_announcement(encoding="rot13"))
        warnings = ("ignoring client presence on", "ignoring round announcement on")
        wait_until(
            lambda: sum(any(w in r.getMessage() for w in warnings) for r in caplog.records) >= 4,
            10,
            "four malformed payloads logged",
        )
        assert set(agg.roster) == {"c000"}
        try:
            out = agg.run_round()
        finally:
            stop.set()
            worker.join(10)
        assert (out.aggregated, out.sampled, out.reporters) == (True, 1, 1)
        assert fl.rounds_done == [1]
    failed = [
        r for r in caplog.records if "handler for" in r.getMessage() and "failed" in r.getMessage()
    ]
    assert not failed  # rejected at the boundary, not by the MQTT loop's last-resort catch
