"""The FL client role on an edge node: train on local data when sampled.

Thin: the logic lives in :mod:`collab.fl.participant`; this builds the trainer from the
config (the local simulation gives each process its Dirichlet shard by index)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig, with_client_id
from collab.files import read_bytes
from collab.fl.config import FLConfig
from collab.fl.data import member_data
from collab.fl.endpoint import ParticipantTls
from collab.fl.member import ModelHolder, Trainer
from collab.fl.participant import FLClient
from collab.fl.train import warm_up
from collab.log import logger
from collab.signals import STOP_SIGNALS, stop_on_signals


def run_client(
    cfg: FLConfig,
    *,
    index: int,
    mqtt: MqttConfig,
    client_id: str = "",
    secret_context: Path | None = None,
    compression: str = "",
    tls: ParticipantTls | None = None,
) -> int:
    secret = None if secret_context is None else read_bytes(secret_context, "secret context")
    cid = client_id or f"c{index:03d}"
    warm_up()
    x, y = member_data(cfg, index)
    # seeds local training only; DP noise comes from the OS (collab.fl.randomness)
    trainer = Trainer(ModelHolder(cfg, secret_context=secret), x, y, seed=cfg.seed * 1000 + index)
    if cfg.privacy_note:
        logger.warning("FL client %s: %s", cid, cfg.privacy_note)
    presence = topics.fl_client_topic(cfg.federation, cid)
    will = (presence, b"", 1, True)
    stop = stop_on_signals()
    with MqttClient(with_client_id(mqtt, f"fl-{cfg.federation}-{cid}"), will=will) as client:
        fl = FLClient(
            trainer,
            cid,
            client,
            upload_delay_s=cfg.simulate.upload_delay_s,
            compression=compression,
            tls=None if tls is None else tls.for_client(cid),
        )
        fl.start()
        logger.info("FL client %s: %d examples, waiting for rounds", cid, len(y))
        fl.run(stop)
        client.publish(presence, b"", qos=1, retain=True, wait=5.0)
    return 0


def run_clients(
    cfg: FLConfig,
    *,
    indices: Sequence[int],
    mqtt: MqttConfig,
    secret_context: Path | None = None,
    compression: str = "",
    tls: ParticipantTls | None = None,
) -> int:
    """Several simulated clients as separate processes forked from one warm parent.

    Each child is a real process (its own pid, MQTT session and gRPC channel; a test may
    kill -9 it), but torch/sklearn are imported once, so a 10-client federation starts in
    seconds instead of paying ten interpreter start-ups on a 2-core machine."""
    if len(indices) == 1:
        return run_client(
            cfg,
            index=indices[0],
            mqtt=mqtt,
            secret_context=secret_context,
            compression=compression,
            tls=tls,
        )
    import torch

    torch.set_num_threads(1)
    warm_up()
    member_data(cfg, 0)  # warm the shared split cache
    children: list[int] = []
    for k in indices:
        pid = os.fork()
        if pid == 0:  # child: never return into the parent's stack
            code = 1
            try:
                code = run_client(
                    cfg,
                    index=k,
                    mqtt=mqtt,
                    secret_context=secret_context,
                    compression=compression,
                    tls=tls,
                )
            except BaseException:
                logger.exception("FL client %d crashed", k)
            finally:
                sys.stdout.flush()
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for c in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGTERM)

    for sig in STOP_SIGNALS:  # the children stop on SIGTERM; the parent waits for them
        signal.signal(sig, forward)
    worst = 0
    for c in children:
        while True:
            try:
                _, st = os.waitpid(c, 0)
                break
            except InterruptedError:
                continue
        worst = max(
            worst, os.waitstatus_to_exitcode(st) if os.waitstatus_to_exitcode(st) > 0 else 0
        )
    return worst
