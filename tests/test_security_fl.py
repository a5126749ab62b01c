"""Attacks on the FL aggregator's transport, each against a real server (the aggregator's
gRPC server on a free loopback port, `collab fl ...` processes, Mosquitto): a stolen
client slot, connections without a certificate, plaintext off loopback, oversized and
endless upload streams, idle streams, an upload flood, and a forged presence message."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from test_control_support import wait_until

from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig
from collab.errors import ConfigError, FLError, TransportError
from collab.fl import messages as msg
from collab.fl.aggregator import Aggregator, serve
from collab.fl.config import FLConfig, config_from_dict, config_to_dict
from collab.fl.endpoint import AggregatorEndpoint, ParticipantTls
from collab.fl.participant import AggregatorStub, UploadRefused
from collab.fl.round_sum import UpdateHeader, encode_update
from collab.fl.wire import header_to_proto
from collab.procs import Broker, collab_process, free_port
from collab.proto import fl_pb2, fl_pb2_grpc
from collab.transport import TlsConfig
from tests.helpers.certs import CertAuthority, make_ca

FED = "sec"


def _cfg(**kw: object) -> FLConfig:
    return config_from_dict(
        {
            "federation": FED,
            "clients": 2,
            "rounds": 1,
            "modes": ["plain"],
            "model": {"federated": ["fc2"]},
            "round": {"min_clients": 1, "deadline_s": 30},
            **kw,
        }
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    ca = make_ca(tmp_path_factory.mktemp("pki"))
    ca.issue("aggregator", hosts=("localhost", "127.0.0.1"))
    for name in ("c000", "c001", "mallory", "keyholder"):
        ca.issue(name, hosts=())
    return ca


def _pem(ca: CertAuthority, name: str, ext: str) -> Path:
    return ca.cert.parent / f"{name}.{ext}"


def _mtls(ca: CertAuthority, **kw: object) -> AggregatorEndpoint:
    return AggregatorEndpoint(
        listen="127.0.0.1:0",
        tls_cert=_pem(ca, "aggregator", "crt"),
        tls_key=_pem(ca, "aggregator", "key"),
        tls_client_ca=ca.cert,
        **kw,  # type: ignore[arg-type]
    )


def _as(ca: CertAuthority, name: str | None) -> TlsConfig:
    if name is None:
        return TlsConfig(ca_cert=ca.cert)
    return TlsConfig(
        ca_cert=ca.cert, client_cert=_pem(ca, name, "crt"), client_key=_pem(ca, name, "key")
    )


def _open(agg: Aggregator) -> None:
    for c in ("c000", "c001"):
        agg.roster[c] = msg.ClientHello(client_id=c, num_examples=10)
    agg.open_round()


def _header(agg: Aggregator, cid: str, **kw: object) -> UpdateHeader:
    st = agg.current
    assert st is not None
    base: dict[str, object] = dict(
        federation=FED,
        round=st.spec.round,
        client_id=cid,
        base_version=st.spec.base_version,
        encoding="f32",
        num_values=st.spec.num_values,
        num_chunks=1,
    )
    base.update(kw)
    return UpdateHeader(**base)  # type: ignore[arg-type]


def _update(agg: Aggregator, value: float) -> list[bytes]:
    assert agg.current is not None
    return encode_update(np.full(agg.current.spec.num_values, value), ctx=None)


def _refused(stub: AggregatorStub, h: UpdateHeader, chunks: list[bytes]) -> UploadRefused:
    with pytest.raises(UploadRefused) as ei:
        stub.upload(h, chunks, timeout=10)
    return ei.value


# --------------------------------------------------------------------------- identity


def test_attacker_with_a_valid_certificate_cannot_take_a_sampled_clients_slot(
    pki: CertAuthority,
) -> None:
    agg = Aggregator(_cfg(), None)
    with serve(agg, _mtls(pki)) as (_, port):
        _open(agg)
        addr = f"127.0.0.1:{port}"
        mallory = AggregatorStub(addr, _as(pki, "mallory"))
        e = _refused(mallory, _header(agg, "c001"), _update(agg, 1e6))
        assert e.status == "UNAUTHENTICATED" and "'mallory'" in e.detail
        e = _refused(mallory, _header(agg, "mallory"), _update(agg, 1e6))  # as itself
        assert e.status == "PERMISSION_DENIED"
        mallory.close()
        assert agg.current is not None and agg.current.reporters == []

        real = AggregatorStub(addr, _as(pki, "c001"))  # the slot is still c001's
        assert real.upload(_header(agg, "c001"), _update(agg, 0.5)) == 1
        real.close()
        assert agg.current.reporters == ["c001"]


def test_client_without_a_valid_certificate_cannot_connect(
    pki: CertAuthority, tmp_path: Path
) -> None:
    rogue_ca = make_ca(tmp_path / "rogue", name="rogue-ca")
    rogue_ca.issue("c000", hosts=())
    rogue = TlsConfig(
        ca_cert=pki.cert,  # trusts the real aggregator, presents a cert of its own CA
        client_cert=_pem(rogue_ca, "c000", "crt"),
        client_key=_pem(rogue_ca, "c000", "key"),
    )
    agg = Aggregator(_cfg(), None)
    with serve(agg, _mtls(pki)) as (_, port):
        _open(agg)
        addr = f"127.0.0.1:{port}"
        for tls in (None, _as(pki, None), rogue):  # plaintext, no certificate, foreign CA
            stub = AggregatorStub(addr, tls)
            with pytest.raises(TransportError, match="UNAVAILABLE"):
                stub.upload(_header(agg, "c000"), _update(agg, 1.0), timeout=10)
            with pytest.raises(TransportError):
                stub.fetch(FED, "v0", timeout=10)
            stub.close()
        assert agg.current is not None and agg.current.reporters == []


def test_plaintext_aggregator_refuses_a_non_loopback_listen_at_start(tmp_path: Path) -> None:
    cfg_path = tmp_path / "fl.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(_cfg())))
    port = free_port()
    cmd = [sys.executable, "-m", "collab.cli", "fl", "aggregator", "--config", str(cfg_path)]
    cmd += ["--broker", "mqtt://127.0.0.1:1", "--listen", f"0.0.0.0:{port}"]
    for extra in ([], ["--tls-cert", "x.crt", "--tls-key", "x.key"]):  # TLS alone: no client auth
        out = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1, out.stderr
        assert "refusing to listen on 0.0.0.0" in out.stderr and "--insecure" in out.stderr
    # loopback, mTLS or an explicit --insecure are accepted
    AggregatorEndpoint(listen="[::1]:0")
    AggregatorEndpoint(listen="0.0.0.0:0", insecure=True)
    AggregatorEndpoint(
        listen="0.0.0.0:0", tls_cert=Path("a"), tls_key=Path("b"), tls_client_ca=Path("c")
    )
    with pytest.raises(ConfigError, match="refusing"):
        AggregatorEndpoint(listen="10.1.2.3:50070")
    assert AggregatorEndpoint().listen.startswith("127.0.0.1:")


# --------------------------------------------------------------------------- stream limits


class Flood:
    """An upload request stream: a header, then ``data`` chunks without end (or an idle
    wait); counts what it produced, an upper bound of what the server consumed."""

    def __init__(self, header: UpdateHeader, data: bytes | None, idle_s: float = 0.0) -> None:
        self.header, self.data, self.idle_s = header, data, idle_s
        self.sent = 0
        self.stop = threading.Event()

    def __iter__(self) -> Iterator[fl_pb2.FlUpdateChunk]:
        yield fl_pb2.FlUpdateChunk(header=header_to_proto(self.header))
        if self.data is None:
            self.stop.wait(self.idle_s)
            return
        while not self.stop.is_set():
            self.sent += 1
            yield fl_pb2.FlUpdateChunk(data=self.data)


def _raw(port: int) -> tuple[grpc.Channel, fl_pb2_grpc.FlAggregatorStub]:
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    return ch, fl_pb2_grpc.FlAggregatorStub(ch)


def _status(call: Future, timeout: float = 10) -> tuple[grpc.StatusCode, str]:  # type: ignore[type-arg]
    with pytest.raises(grpc.RpcError) as ei:
        call.result(timeout=timeout)
    return ei.value.code(), ei.value.details() or ""  # type: ignore[attr-defined]


def test_upload_declaring_a_million_chunks_is_refused_before_its_payload() -> None:
    agg = Aggregator(_cfg(), None)
    with serve(agg) as (_, port):
        _open(agg)
        ch, stub = _raw(port)
        chunk = _update(agg, 1.0)[0]
        flood = Flood(_header(agg, "c000", num_chunks=1_000_000), chunk)
        t0 = time.monotonic()
        code, detail = _status(stub.UploadUpdate.future(iter(flood)))
        flood.stop.set()
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "expects 1" in detail
        # refused at the header: what is in flight then is the transport's window, not 336 MiB
        assert time.monotonic() - t0 < 5 and flood.sent * len(chunk) < 4 << 20
        ch.close()


def test_upload_is_cut_at_the_first_chunk_beyond_the_round_and_at_an_oversized_chunk() -> None:
    agg = Aggregator(_cfg(), None)
    with serve(agg) as (_, port):
        _open(agg)
        ch, stub = _raw(port)
        chunk = _update(agg, 1.0)[0]
        flood = Flood(_header(agg, "c000"), chunk)  # honest header, endless chunks
        code, detail = _status(stub.UploadUpdate.future(iter(flood)))
        flood.stop.set()
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "more than the round's 1" in detail
        assert flood.sent * len(chunk) < 4 << 20
        for size in (len(chunk) * 4, 8 << 20):  # over the chunk cap, over the message limit
            big = Flood(_header(agg, "c000"), b"\0" * size)
            code, _ = _status(stub.UploadUpdate.future(iter(big)))
            big.stop.set()
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert agg.current is not None and agg.current.reporters == []
        ch.close()
        stub2 = AggregatorStub(f"127.0.0.1:{port}")  # the round is unharmed
        assert stub2.upload(_header(agg, "c000"), [chunk]) == 1
        stub2.close()


def test_idle_upload_stream_is_cancelled_at_the_stream_deadline() -> None:
    agg = Aggregator(_cfg(), None)
    with serve(agg, AggregatorEndpoint(listen="127.0.0.1:0", stream_timeout_s=1.0)) as (_, port):
        _open(agg)
        ch, stub = _raw(port)
        idle = Flood(_header(agg, "c000"), None, idle_s=30)  # header, then nothing
        t0 = time.monotonic()
        code, _ = _status(stub.UploadUpdate.future(iter(idle)), timeout=10)
        idle.stop.set()
        assert code == grpc.StatusCode.CANCELLED and 0.9 < time.monotonic() - t0 < 5
        quiet = threading.Event()

        def nothing() -> Iterator[fl_pb2.FlUpdateChunk]:  # not even a header
            quiet.wait(30)
            yield from ()

        silent = stub.UploadUpdate.future(nothing())
        assert _status(silent, timeout=10)[0] == grpc.StatusCode.CANCELLED
        quiet.set()
        ch.close()


def test_upload_flood_is_refused_while_aggregate_downloads_are_still_served() -> None:
    agg = Aggregator(_cfg(), None)
    ep = AggregatorEndpoint(listen="127.0.0.1:0", max_uploads=2, max_fetches=2)
    with serve(agg, ep) as (_, port):
        _open(agg)
        ch, stub = _raw(port)
        idle = [Flood(_header(agg, c), None, idle_s=60) for c in ("c000", "c001")]
        held = [stub.UploadUpdate.future(iter(f)) for f in idle]

        def third_refused() -> bool:
            for i, h in enumerate(held):  # a holder the loaded machine lost: hold its slot again
                if h.done():
                    idle[i] = Flood(_header(agg, ("c000", "c001")[i]), None, idle_s=60)
                    held[i] = stub.UploadUpdate.future(iter(idle[i]))
            extra = Flood(_header(agg, "c000"), None, idle_s=0.2)
            try:
                stub.UploadUpdate(iter(extra), timeout=5)
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            return False

        wait_until(third_refused, 30, "an upload beyond max_uploads refused")  # loaded CI
        with pytest.raises(grpc.RpcError) as ei:  # a download has workers of its own
            list(
                stub.FetchAggregate(
                    fl_pb2.FlAggregateRequest(federation=FED, base_version="x"), timeout=5
                )
            )
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        for f in idle:
            f.stop.set()
        for h in held:
            with pytest.raises(grpc.RpcError):
                h.result(timeout=10)  # an empty upload: rejected, its slot freed
        ch.close()


class EndlessAggregate(fl_pb2_grpc.FlAggregatorServicer):
    """A rogue aggregator: announces one chunk, then streams chunks without end."""

    def __init__(self) -> None:
        self.sent = 0

    def FetchAggregate(
        self, request: fl_pb2.FlAggregateRequest, context: grpc.ServicerContext
    ) -> Iterator[fl_pb2.FlAggregateChunk]:
        yield fl_pb2.FlAggregateChunk(
            header=fl_pb2.FlAggregateHeader(federation=FED, num_chunks=1, num_values=1)
        )
        while context.is_active():
            self.sent += 1
            yield fl_pb2.FlAggregateChunk(data=b"\0" * 65536)


def test_client_stops_reading_an_aggregate_at_the_first_chunk_it_did_not_announce() -> None:
    rogue = EndlessAggregate()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    fl_pb2_grpc.add_FlAggregatorServicer_to_server(rogue, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        stub = AggregatorStub(f"127.0.0.1:{port}")
        with pytest.raises(FLError, match="more than the 1 chunks"):
            stub.fetch(FED, "v0", timeout=10)
        stub.close()
        wait_until(lambda: rogue.sent < 1000, 1, "the rogue stream stopped")  # 64 MiB at most
    finally:
        server.stop(0)


# --------------------------------------------------------------------------- MQTT presence


def test_forged_presence_on_another_clients_topic_is_ignored(broker: Broker) -> None:
    agg = Aggregator(_cfg(clients=3), None)
    with (
        MqttClient(MqttConfig(url=broker.url, client_id="agg")) as agg_mq,
        MqttClient(MqttConfig(url=broker.url, client_id="forger")) as forger,
    ):
        agg.attach(agg_mq)

        def hello(topic_id: str, claimed: str) -> None:
            payload = msg.hello_to_proto(msg.ClientHello(client_id=claimed, num_examples=10**6))
            forger.publish(
                topics.fl_client_topic(FED, topic_id),
                payload.SerializeToString(),
                qos=1,
                retain=True,
                wait=5,
            )

        hello("c001", "c002")  # c001's topic, c002's id
        hello("c003", "c003")  # processed after the forged one
        wait_until(lambda: "c003" in agg.roster, 10, "the genuine presence")
        assert "c001" not in agg.roster and set(agg.roster) == {"c003"}


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_federation_round_completes_over_mutual_tls(
    broker: Broker, pki: CertAuthority, tmp_path: Path
) -> None:
    cfg = _cfg(round={"min_clients": 2, "deadline_s": 30})
    cfg_path = tmp_path / "fl.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    port = free_port()
    published: list[msg.ModelPublished] = []
    got = threading.Event()

    def on_model(topic: str, payload: bytes, retained: bool) -> None:
        published.append(msg.model_from_bytes(payload))
        got.set()

    d = pki.cert.parent
    common = ["--config", str(cfg_path), "--broker", broker.url]
    agg_tls = ["--tls-cert", str(d / "aggregator.crt"), "--tls-key", str(d / "aggregator.key")]
    agg_tls += ["--tls-client-ca", str(pki.cert)]
    client_tls = ["--tls-ca", str(pki.cert), "--tls-cert", str(d / "{client_id}.crt")]
    client_tls += ["--tls-key", str(d / "{client_id}.key"), "--tls-server-name", "localhost"]
    with MqttClient(MqttConfig(url=broker.url, client_id="observer")) as mq:
        mq.subscribe(topics.fl_topic(FED, topics.FL_MODEL), on_model)
        with (
            collab_process(
                ["fl", "aggregator", *common, "--listen", f"127.0.0.1:{port}", *agg_tls],
                port=port,
                log=tmp_path / "agg.log",
            ),
            collab_process(
                ["fl", "client", *common, "--index", "0-1", *client_tls],
                log=tmp_path / "clients.log",
            ),
        ):
            assert got.wait(60), (tmp_path / "clients.log").read_text()[-3000:]
            assert (published[0].reporters, published[0].sampled) == (2, 2)
            keyholder = ParticipantTls(
                tls_ca=pki.cert, tls_cert=d / "keyholder.crt", tls_key=d / "keyholder.key"
            ).for_client("keyholder")
            stub = AggregatorStub(f"127.0.0.1:{port}", keyholder)
            assert stub.fetch(FED, published[0].base_version).version == published[0].version
            stub.close()


def test_a_client_refused_in_a_loop_fills_no_log(
    pki: CertAuthority, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 refused uploads from one attacker (a valid certificate, a slot it was not given)
    are each answered, and logged once, not 200 times."""
    from collab.fl import aggregator
    from collab.log import RateLimited

    monkeypatch.setattr(aggregator, "_ignored", RateLimited())
    agg = Aggregator(_cfg(), None)
    with serve(agg, _mtls(pki)) as (_, port), caplog.at_level("WARNING", logger="collab"):
        _open(agg)
        mallory = AggregatorStub(f"127.0.0.1:{port}", _as(pki, "mallory"))
        for _ in range(200):
            assert _refused(mallory, _header(agg, "mallory"), [b"x"]).status == "PERMISSION_DENIED"
        mallory.close()
    refused = [r for r in caplog.records if "upload rejected" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused[:3]]


def test_a_zstd_bomb_chunk_is_refused_at_the_rounds_chunk_bound(pki: CertAuthority) -> None:
    """A 16 MiB chunk of zeros compressed to a few KB: the aggregator decompresses at most
    one honest chunk's worth (the round's bound, here far below 16 MiB) and refuses it."""
    import zstandard

    agg = Aggregator(_cfg(), None)
    with serve(agg, _mtls(pki)) as (_, port):
        _open(agg)
        assert agg.limits().chunk_bytes < 1 << 20
        bomb = zstandard.ZstdCompressor().compress(bytes(16 << 20))
        assert len(bomb) < agg.limits().chunk_bytes  # passes the wire bound
        stub = AggregatorStub(f"127.0.0.1:{port}", _as(pki, "c000"))
        e = _refused(stub, _header(agg, "c000", compression="zstd"), [bomb])
        stub.close()
        assert e.status == "INVALID_ARGUMENT" and "zstd" in e.detail, e
        assert agg.current is not None and agg.current.reporters == []
