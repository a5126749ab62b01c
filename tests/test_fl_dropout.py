"""A real federation (aggregator + 10 client processes + Mosquitto) survives 3 of the
10 sampled clients being killed with SIGKILL in the middle of an HE round."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig
from collab.fl import he
from collab.fl import messages as msg
from collab.fl.config import config_from_dict, config_to_dict
from collab.fl.member import ModelHolder
from collab.fl.participant import AggregatorStub
from collab.fl.round_sum import decode_aggregate
from collab.procs import Broker, collab_process, free_port


@pytest.mark.slow
def test_round_completes_with_three_of_ten_clients_killed(broker: Broker, tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "federation": "kill",
            "rounds": 1,
            "clients": 10,
            "modes": ["he"],
            "train": {"local_epochs": 1, "lr": 0.05},
            "round": {"min_clients": 7, "deadline_s": 7},
            "simulate": {"upload_delay_s": 1.5},  # a slow uplink: clients are mid-round for 1.5 s
        }
    )
    cfg_path = tmp_path / "fl.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    keys = he.generate_keys(cfg.he.params())
    sec, pub = he.write_keys(keys, tmp_path / "keys")
    port = free_port()

    hellos: dict[str, msg.ClientHello] = {}
    killed: list[str] = []
    published: list[msg.ModelPublished] = []
    got_model = threading.Event()

    def on_client(topic: str, payload: bytes, retained: bool) -> None:
        if payload:
            h = msg.hello_from_bytes(payload)
            hellos[h.client_id] = h

    def on_round(topic: str, payload: bytes, retained: bool) -> None:
        ann = msg.announcement_from_bytes(payload)
        if ann.round == 1 and not killed:
            for cid in ann.sampled[:3]:
                os.kill(hellos[cid].pid, signal.SIGKILL)
                killed.append(cid)

    def on_model(topic: str, payload: bytes, retained: bool) -> None:
        published.append(msg.model_from_bytes(payload))
        got_model.set()

    with MqttClient(MqttConfig(url=broker.url, client_id="test-observer")) as mq:
        mq.subscribe(topics.fl_clients_filter("kill"), on_client)
        mq.subscribe(topics.fl_topic("kill", topics.FL_ROUND), on_round)
        mq.subscribe(topics.fl_topic("kill", topics.FL_MODEL), on_model)
        common = ["--config", str(cfg_path), "--broker", broker.url]
        with (
            collab_process(
                [
                    "fl",
                    "aggregator",
                    *common,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--public-context",
                    str(pub),
                ],
                port=port,
                log=tmp_path / "agg.log",
            ),
            collab_process(
                ["fl", "client", *common, "--index", "0-9", "--secret-context", str(sec)],
                log=tmp_path / "clients.log",
            ),
        ):
            assert got_model.wait(60), (tmp_path / "agg.log").read_text()[-3000:]
            p = published[0]
            assert len(killed) == 3
            assert (p.round, p.sampled, p.reporters) == (1, 10, 7)
            # The key holder decrypts the aggregate: its weight slot is exactly the example
            # count of the 7 survivors, so nothing of the killed clients is in it.
            stub = AggregatorStub(f"127.0.0.1:{port}")
            agg = stub.fetch("kill", p.base_version)
            stub.close()
            holder = ModelHolder(cfg, secret_context=keys.secret)
            total = decode_aggregate(list(agg.chunks), "ckks", agg.num_values, holder.ctx)
            survivors = sum(h.num_examples for c, h in hellos.items() if c not in killed)
            assert total[-1] == pytest.approx(survivors, abs=1e-3)
            before = holder.state.flat.copy()
            holder.apply(agg)
            assert holder.state.version == p.version
            assert np.abs(holder.state.flat - before).max() > 0
            for c in killed:  # really dead (gone, or a zombie its parent has not reaped yet)
                status = Path(f"/proc/{hellos[c].pid}/status")
                assert not status.exists() or "zombie" in status.read_text()
    assert "round 1 aggregated: 7/10" in (tmp_path / "agg.log").read_text()
