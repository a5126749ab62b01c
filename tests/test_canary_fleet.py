"""Canary rollouts with real processes: a coordinator, a Mosquitto broker and three
`collab edge` daemons under load. A candidate that disagrees with the baseline and one
that is far slower are rolled back automatically, a good one is promoted in steps to the
whole fleet; every decision is reproduced from the telemetry windows the coordinator
recorded; bad requests are refused before anything is sent."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from test_control_support import StatusWatcher, fetch_token_file, revised, tiny_bundle, wait_until
from test_coordinator_fleet import _coordinator

from collab import codec
from collab.bundle import Manifest, load_bundle, update_bundle
from collab.cli import main as collab_main
from collab.control import canary as cn
from collab.control import messages as msg
from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig
from collab.errors import TransportError
from collab.procs import Broker, collab_process, free_port
from collab.proto import collab_pb2, collab_pb2_grpc
from collab.proto import control_pb2 as pb
from collab.proto import control_pb2_grpc as pb_grpc
from coordinator.canary import load_windows
from coordinator.canary_decision import Window, replay
from coordinator.db import Database
from coordinator.operator_client import CoordinatorClient

EDGES = ("edge-a", "edge-b", "edge-c")
# small samples keep the run short; the degraded candidates differ by far more than the
# tests need (20 % disagreement against a 1 % budget; 200x the latency)
PLAN = [
    "--min-requests",
    "150",
    "--min-shadow",
    "40",
    "--shadow-share",
    "0.5",
    "--max-duration",
    "90",
    "--latency-tolerance",
    "1.0",  # processes on a shared 2-core box differ; the slow candidate is 200x slower
]


class Load:
    """One thread per edge sending edge-only requests until stopped."""

    def __init__(self, ports: list[int]) -> None:
        self._stop = threading.Event()
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(p,), daemon=True) for p in ports]

    def _run(self, port: int) -> None:
        rng = np.random.default_rng(port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = collab_pb2_grpc.EdgeServiceStub(ch)
            while not self._stop.is_set():
                x = rng.normal(size=(1, 4)).astype(np.float32)
                try:
                    stub.Infer(
                        collab_pb2.EdgeInferRequest(
                            frame=codec.encode(x, "f32"), policy="edge_only"
                        ),
                        timeout=10,
                    )
                except grpc.RpcError as e:
                    self.errors.append(str(e.code()))
                time.sleep(0.002)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


@dataclass
class Fleet:
    ep: str  # the operator API
    watch: StatusWatcher
    db: Path
    coordinator: subprocess.Popen[bytes]
    restart: Callable[[], subprocess.Popen[bytes]]  # a new coordinator on the same ports


@contextmanager
def fleet(broker: Broker, tmp: Path, base: Path) -> Iterator[Fleet]:
    gport, oport = free_port(), free_port()
    db = tmp / "coord" / "registry.db"
    with ExitStack() as stack:

        def coordinator() -> subprocess.Popen[bytes]:
            return stack.enter_context(_coordinator(broker, tmp, gport, oport, hb=5.0))

        first = coordinator()
        watch = stack.enter_context(StatusWatcher(broker.url))
        ports = []
        for node in EDGES:
            port = free_port()
            ports.append(port)
            stack.enter_context(
                collab_process(
                    [
                        "edge",
                        "--bundle",
                        str(base),
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--broker",
                        broker.url,
                        "--node-id",
                        node,
                        "--trusted-key",
                        str(db.parent / "coordinator.ed25519.pub"),
                        "--fetch-token-file",
                        str(fetch_token_file(db.parent / "coordinator.fetch-key", tmp, node)),
                        "--heartbeat-interval",
                        "0.5",
                        "--telemetry-interval",
                        "0.3",
                        "--work-dir",
                        str(tmp / f"work-{node}"),
                    ],
                    port=port,
                    log=tmp / f"{node}.log",
                )
            )
        wait_until(
            lambda: all((n := watch.node(e)) and n.online for e in EDGES), 30, "edges registered"
        )
        stack.enter_context(Load(ports))
        yield Fleet(
            ep=f"127.0.0.1:{oport}", watch=watch, db=db, coordinator=first, restart=coordinator
        )


def versions(watch: StatusWatcher) -> dict[str, str]:
    return {e: n.bundle_version for e in EDGES if (n := watch.node(e)) is not None}


def canary(ep: str, bundle: Path, *flags: str) -> int:
    return collab_main(
        ["rollout", "--coordinator", ep, "publish", str(bundle), *flags, *PLAN, "--wait", "120"]
    )


def junk_head(root: Path, m: Manifest) -> Manifest:
    """A head file that is no ONNX model (its hash is recorded: the bundle verifies)."""
    (root / "head.onnx").write_bytes(b"junk" * 64)
    return m


def recorded(db: Path, canary_id: str) -> list[Window]:
    """The windows the coordinator committed for a canary (read beside the running one)."""
    d = Database(db)
    try:
        return load_windows(d, canary_id)
    finally:
        d.conn.close()


def check_replay(db: Path, rec: cn.CanaryRecord) -> None:
    """The decisions follow from the recorded windows alone."""
    windows = recorded(db, rec.canary_id)
    assert rec.decisions and (windows or all(d.refused for d in rec.decisions))
    got = replay(rec, windows)
    assert [replace(g, decided_at=0.0) for g in got] == [
        replace(r, decided_at=0.0) for r in rec.decisions
    ]


@pytest.mark.slow
def test_canary_rolls_back_bad_candidates_and_promotes_a_good_one(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tiny_bundle(tmp_path / "base", rev=1)
    disagrees = tiny_bundle(tmp_path / "disagrees", rev=4)  # other weights: ~20 % other top-1
    slow = tiny_bundle(tmp_path / "slow", rev=5, weights=1, detour=300)  # same answers, 200x slower
    good = tiny_bundle(tmp_path / "good", rev=6, weights=1, scale=1.5)  # same answers
    v_base = load_bundle(base).version
    with fleet(broker, tmp_path, base) as f, CoordinatorClient(f.ep) as c:
        ep, watch, db = f.ep, f.watch, f.db
        # ---- bad input: refused before anything is sent to a node
        for flags, why in (
            (["--canary", "0%"], "(0, 100]"),
            (["--canary", "150%"], "(0, 100]"),
            (["--canary", "5%", "--metric", "latency,accuracy"], "accuracy"),
        ):
            capsys.readouterr()
            assert canary(ep, good, *flags) == 1
            assert why in capsys.readouterr().err
        # the baseline must be stored (a rollback is served from the store) ...
        capsys.readouterr()
        assert canary(ep, good, "--canary", "30%") == 1
        assert "not in the bundle store" in capsys.readouterr().err
        # ... and once it is, a copy with other metadata but the same model files is
        # refused as identical
        c.upload(base)
        capsys.readouterr()
        assert canary(ep, revised(base, tmp_path / "same", rev=99), "--canary", "30%") == 1
        assert "identical to the baseline" in capsys.readouterr().err
        # the operator API refuses a plan out of bounds itself (not only the CLI)
        with grpc.insecure_channel(ep) as ch:
            stub = pb_grpc.CoordinatorServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.StartCanary(
                    pb.StartCanaryRequest(
                        version=load_bundle(good).version,
                        plan=pb.CanaryPlan(share=150, metrics=["agreement"], min_requests=1),
                    ),
                    timeout=10,
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert "(0, 100]" in (err.value.details() or "")  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="no rollout yet"):
            c.status()  # nothing was rolled out

        # ---- a candidate that disagrees with the baseline: rolled back, with the reason
        assert canary(ep, disagrees, "--canary", "30%", "--steps", "100", "--seed", "11") == 1
        rec = c.canary()
        assert rec.state == "rolled_back" and rec.seed == 11 and len(rec.canary_nodes) == 1
        (d,) = rec.decisions
        assert d.action == "rollback" and not d.timeout and "agreement worse" in d.reason
        agree = next(t for t in d.tests if t.metric == "agreement")
        assert agree.rejected and agree.p_value < 1e-6 and agree.n_candidate >= 40
        check_replay(db, rec)
        wait_until(
            lambda: set(versions(watch).values()) == {v_base}, 30, "every edge back on baseline"
        )

        # ---- a candidate every canary node refuses (its ONNX does not load): rolled back
        # at once, not after --max-duration
        broken = tiny_bundle(tmp_path / "broken", rev=7)
        update_bundle(broken, junk_head)
        t0 = time.monotonic()
        assert canary(ep, broken, "--canary", "30%", "--steps", "100") == 1
        assert time.monotonic() - t0 < 60
        rec = c.canary()
        (d,) = rec.decisions
        assert rec.state == "rolled_back" and d.refused and "swap failed" in d.reason, d
        check_replay(db, rec)
        wait_until(lambda: set(versions(watch).values()) == {v_base}, 30, "every edge on baseline")

        # ---- telemetry of a node outside the canary is ignored and counted
        with MqttClient(MqttConfig(url=broker.url)) as fake:
            fake.publish(
                topics.node_topic("edge-x", topics.ANNOUNCE),
                msg.announce_to_proto(
                    msg.Announce(node_id="edge-x", role="edge", bundle_version=v_base)
                ).SerializeToString(),
                qos=1,
                wait=5.0,
            )
            cand = load_bundle(slow).version
            c.upload(slow)
            # ---- a candidate far slower than the baseline: rolled back on latency
            seen = threading.Event()

            def outsider() -> None:  # while the canary runs, edge-x claims the candidate
                t = msg.Telemetry(
                    node_id="edge-x",
                    interval_s=1.0,
                    requests=10,
                    versions=(
                        cn.VersionTelemetry(version=cand, requests=10, latency_ms=(0.01,) * 10),
                    ),
                )
                while not seen.is_set():
                    fake.publish(
                        topics.node_topic("edge-x", topics.TELEMETRY),
                        msg.telemetry_to_proto(t).SerializeToString(),
                    )
                    time.sleep(0.2)

            th = threading.Thread(target=outsider, daemon=True)
            th.start()
            try:
                code = canary(
                    ep,
                    slow,
                    "--canary",
                    "30%",
                    "--steps",
                    "100",
                    "--metric",
                    "latency,latency_p95,agreement",
                )
            finally:
                seen.set()
                th.join(5)
        assert code == 1
        rec = c.canary()
        (d,) = rec.decisions
        assert rec.state == "rolled_back" and "latency_p95 worse" in d.reason, d.reason
        assert "latency worse" in d.reason  # Mann-Whitney U agrees
        assert next(t for t in d.tests if t.metric == "agreement").rejected is False
        assert rec.ignored_windows >= 1 and "edge-x" not in rec.canary_nodes
        check_replay(db, rec)
        wait_until(
            lambda: set(versions(watch).values()) == {v_base}, 30, "every edge back on baseline"
        )

        # ---- a good candidate: promoted 30 % (1 edge) -> 60 % (2) -> 100 %
        assert (
            canary(
                ep,
                good,
                "--canary",
                "30%",
                "--steps",
                "60,100",
                "--metric",
                "latency_p95,error_rate,agreement",
            )
            == 0
        )
        rec = c.canary()
        assert rec.state == "promoted", rec
        assert [d.action for d in rec.decisions] == ["promote", "promote"]
        assert all(t.p_value > 0 and not t.rejected for d in rec.decisions for t in d.tests)
        check_replay(db, rec)
        v_good = load_bundle(good).version
        wait_until(
            lambda: set(versions(watch).values()) == {v_good}, 30, "every edge on the candidate"
        )
        capsys.readouterr()  # and the operator's offline replay says the same
        assert collab_main(["rollout", "replay", "--db", str(db)]) == 0
        assert "replayed 2 decision(s)" in capsys.readouterr().out
        # ---- `collab status` shows the record, with the p-values
        capsys.readouterr()
        assert collab_main(["status", "--broker", broker.url]) == 0
        out = capsys.readouterr().out
        assert f"canary {rec.canary_id}" in out and "state=promoted" in out
        assert out.count("PROMOTE") == 2 and "agreement" in out and "p=" in out
        assert collab_main(["status", "--broker", broker.url, "--json"]) == 0
        js = json.loads(capsys.readouterr().out)
        assert js["canary"]["state"] == "promoted" and len(js["canary"]["decisions"]) == 2
        fs = watch.latest
        assert fs is not None and fs.rejected.get("canary_ignored", 0) >= 1


@pytest.mark.slow
def test_a_canary_survives_a_coordinator_crash(broker: Broker, tmp_path: Path) -> None:
    """kill -9 of the coordinator mid-step: the restarted one resumes the recorded step
    (same seed, set and windows) and decides it; the decision still replays."""
    base = tiny_bundle(tmp_path / "base", rev=1)
    good = tiny_bundle(tmp_path / "good", rev=6, weights=1, scale=1.5)
    plan = cn.CanaryPlan(
        share=30, steps=("100",), min_requests=1500, min_shadow=200, shadow_share=0.5,
        metrics=("latency_p95", "agreement"), latency_tolerance=1.0, seed=5,
    )  # fmt: skip
    with fleet(broker, tmp_path, base) as f:
        with CoordinatorClient(f.ep) as c:
            c.upload(base)  # what a rollback would be served from
            c.upload(good)
            rec = c.start_canary(load_bundle(good).version, plan)
            wait_until(lambda: c.canary().canary_nodes and len(recorded(f.db, rec.canary_id)) >= 3,
                       30, "the step recorded windows")  # fmt: skip
            assert c.canary().state == "running"  # killed mid-step, before its decision
        f.coordinator.kill()
        f.coordinator.wait(10)
        f.restart()
        with CoordinatorClient(f.ep) as c:

            def decided() -> cn.CanaryRecord | None:
                try:
                    r = c.canary()
                except TransportError:  # the operator port opens just after the fetch port
                    return None
                return r if r.state != "running" else None

            done = wait_until(decided, 90, "the resumed canary decided")
        assert done.canary_id == rec.canary_id and done.seed == 5
        assert done.canary_nodes == rec.canary_nodes and done.state == "promoted", done
        check_replay(f.db, done)
        v_good = load_bundle(good).version
        wait_until(lambda: set(versions(f.watch).values()) == {v_good}, 30, "promoted to all")
