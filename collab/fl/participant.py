"""The participant (FL client) role: announce presence, and for every round it is sampled
in: catch the model up to the round's base version (fetch + decrypt aggregates), train
locally, and stream the (encrypted) update to the aggregator."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from collab.control import topics
from collab.control.messages import MalformedMessage
from collab.control.mqtt import MqttClient
from collab.errors import FLError, TransportError, UploadRefused
from collab.fl import messages as msg
from collab.fl.endpoint import CLIENT_MAX_MESSAGE_BYTES
from collab.fl.member import ModelHolder, Trainer
from collab.fl.round_sum import UpdateHeader, upload_chunk_sizes
from collab.fl.wire import aggregate_from_proto, update_to_proto
from collab.log import logger
from collab.proto import fl_pb2, fl_pb2_grpc
from collab.transport import TlsConfig, make_channel


class AggregatorStub:
    """gRPC calls to the aggregator (over TLS with ``tls``, presenting its client
    certificate if it has one); grpc errors become TransportError (or FLError on
    rejection)."""

    def __init__(self, address: str, tls: TlsConfig | None = None) -> None:
        self.address = address
        self.channel = make_channel(
            address,
            tls=tls,
            max_message_bytes=CLIENT_MAX_MESSAGE_BYTES,
            retries=False,
            health_check=False,
        )
        self.stub = fl_pb2_grpc.FlAggregatorStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def upload(self, header: UpdateHeader, chunks: Iterable[bytes], timeout: float = 120.0) -> int:
        """Stream the header, then each chunk as the iterable yields it (encryption of the
        later chunks overlaps the sending of the earlier ones)."""
        try:
            ack = self.stub.UploadUpdate(update_to_proto(header, chunks), timeout=timeout)
        except grpc.RpcError as e:
            code = e.code()  # type: ignore[attr-defined]
            detail = e.details()  # type: ignore[attr-defined]
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise TransportError(f"aggregator {self.address}: {code.name}: {detail}") from e
            raise UploadRefused(code.name, detail) from e
        return int(ack.reporters)

    def fetch(self, federation: str, base_version: str, timeout: float = 120.0):  # type: ignore[no-untyped-def]
        try:
            return aggregate_from_proto(
                self.stub.FetchAggregate(
                    fl_pb2.FlAggregateRequest(federation=federation, base_version=base_version),
                    timeout=timeout,
                )
            )
        except grpc.RpcError as e:
            raise TransportError(
                f"aggregator {self.address}: fetch from {base_version}: "
                f"{e.code().name}: {e.details()}"
            ) from e  # type: ignore[attr-defined]


def catch_up(
    holder: ModelHolder, stub: AggregatorStub, federation: str, target: str, max_steps: int = 10_000
) -> int:
    """Apply aggregates until the replica is at ``target``; returns how many were applied."""
    n = 0
    while holder.state.version != target:
        if n >= max_steps:
            raise FLError(f"could not reach version {target} from {holder.state.version}")
        holder.apply(stub.fetch(federation, holder.state.version))
        n += 1
    return n


@dataclass
class FLClient:
    trainer: Trainer
    client_id: str
    mqtt: MqttClient
    upload_delay_s: float = 0.0
    compression: str = ""
    tls: TlsConfig | None = None  # to the aggregator; None = plaintext
    rounds_done: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fed = self.trainer.holder.cfg.federation
        self._queue: queue.Queue[msg.RoundAnnouncement] = queue.Queue()
        self._last_round = 0

    def start(self) -> None:
        """Subscribe to rounds, then publish retained presence (cleared by the will)."""
        self.mqtt.subscribe(topics.fl_topic(self.fed, topics.FL_ROUND), self._on_round, qos=1)
        hello = msg.ClientHello(
            client_id=self.client_id, num_examples=len(self.trainer.y), pid=os.getpid()
        )
        self.mqtt.publish(
            topics.fl_client_topic(self.fed, self.client_id),
            msg.hello_to_proto(hello).SerializeToString(),
            qos=1,
            retain=True,
            wait=10.0,
        )

    def _on_round(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            ann = msg.announcement_from_bytes(payload)
        except MalformedMessage as e:
            logger.warning("ignoring round announcement on %s: %s", topic, e)
            return
        if (
            ann.federation == self.fed
            and self.client_id in ann.sampled
            and ann.round > self._last_round
        ):
            self._last_round = ann.round
            self._queue.put(ann)

    def handle(self, ann: msg.RoundAnnouncement) -> None:
        if time.time() > ann.deadline_unix:
            logger.info("round %d: deadline already passed, skipping", ann.round)
            return
        stub = AggregatorStub(ann.aggregator, self.tls)
        try:
            t0, cpu = time.perf_counter(), time.process_time()
            catch_up(self.trainer.holder, stub, self.fed, ann.base_version)
            t1 = time.perf_counter()
            holder = self.trainer.holder
            chunks = self.trainer.update(
                ann.round, compression=self.compression, packing=ann.packing
            )
            t2 = time.perf_counter()
            if self.upload_delay_s:
                chunks = iter(list(chunks))
                time.sleep(self.upload_delay_s)
            num_values = holder.dim + 1
            sizes = upload_chunk_sizes(
                ann.encoding, num_values, holder.cfg.he.params().slots, ann.packing
            )
            header = UpdateHeader(
                federation=self.fed,
                round=ann.round,
                client_id=self.client_id,
                base_version=ann.base_version,
                encoding=ann.encoding,
                context_id=ann.context_id,
                num_values=num_values,
                num_chunks=len(sizes),
                compression=self.compression,
                packing=ann.packing,
            )
            n = stub.upload(header, chunks)
            self.rounds_done.append(ann.round)
            logger.info(
                "round %d: update accepted (%d reporters so far; catch-up %.2fs, "
                "train %.2fs, encrypt + upload %.2fs; cpu %.3fs)",
                ann.round,
                n,
                t1 - t0,
                t2 - t1,
                time.perf_counter() - t2,
                time.process_time() - cpu,
            )
        finally:
            stub.close()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ann = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(ann)
            except (FLError, TransportError) as e:
                logger.warning("round %d failed on this client: %s", ann.round, e)
