"""The FL aggregator role as a daemon: gRPC FlAggregator + MQTT round control.

Thin: everything it does lives in :mod:`collab.fl.aggregator`; this wires the config,
the public context, the broker and the server together and runs until SIGTERM/SIGINT."""

from __future__ import annotations

from pathlib import Path

from collab.control.mqtt import MqttClient, MqttConfig
from collab.files import read_bytes
from collab.fl.aggregator import Aggregator, serve
from collab.fl.config import FLConfig
from collab.fl.endpoint import AggregatorEndpoint
from collab.log import logger
from collab.signals import stop_on_signals


def run_aggregator(
    cfg: FLConfig,
    *,
    mqtt: MqttConfig,
    endpoint: AggregatorEndpoint,
    public_context: Path | None = None,
    wait_clients_s: float = 60.0,
    exit_when_done: bool = False,
) -> int:
    pub = None if public_context is None else read_bytes(public_context, "public context")
    agg = Aggregator(cfg, pub)
    stop = stop_on_signals()
    with serve(agg, endpoint) as (_, port), MqttClient(mqtt) as client:
        agg.attach(client)
        logger.info(
            "FL aggregator for %s on port %d (advertised %s)", cfg.federation, port, agg.advertise
        )
        agg.run(stop, wait_clients_s=wait_clients_s)
        if not exit_when_done:  # keep serving aggregates to late followers
            stop.wait()
    return 0
