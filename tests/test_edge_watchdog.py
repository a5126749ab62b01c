"""Fault injection into real edge daemon processes: each fault is recovered by the
watchdog (edge_node.watchdog) while requests keep coming, and none of them is lost.

Faults come from outside the daemon: a memory leak and a slowed runtime through its
``--fault-injection`` directory (off by default), a flipped byte in a model file on disk,
a cut link (the link emulator in front of the cloud node and the broker). The times from
injection to detection and to recovery are printed (``-s``) for the closing note; they are
not asserted beyond generous bounds (the box is shared).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from test_client import sample_inputs
from test_control_support import StatusWatcher, fetch_token_file
from test_coordinator_fleet import _coordinator

from collab.bundle import load_bundle
from collab.cli import main as collab_main
from collab.control import messages as msg
from collab.control import topics
from collab.control.agent import AgentConfig, NodeAgent
from collab.control.mqtt import MqttClient, MqttConfig
from collab.control.outbox import Outbox
from collab.edge.client import Client
from collab.errors import BundleError, ConfigError, ControlPlaneError, MalformedMessage
from collab.procs import Broker, collab_process, free_port
from collab.split.examples import cache_root
from coordinator.cli_status import format_table
from coordinator.operator_client import CoordinatorClient
from edge_node.watchdog import Watchdog
from edge_node.watchdog_config import WatchdogConfig
from tests.helpers import faultload as fl


@pytest.fixture(scope="module")
def variant_bundle(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits bundle with a real distilled student (``collab optimize --distill``),
    built once per digits bundle into the example cache (beside it)."""
    # not "digits-*": example_bundle prunes those it did not build
    final = cache_root() / f"distilled-digits-{load_bundle(digits_bundle).version[:16]}"
    try:
        if load_bundle(final).manifest.full_variants:
            return final
    except BundleError:
        shutil.rmtree(final, ignore_errors=True)
    out = tmp_path_factory.mktemp("variants") / "digits-distilled"
    args = ["optimize", str(digits_bundle), "--out", str(out), "--calibration", "example:digits"]
    assert collab_main([*args, "--distill", "0.5", "--splits", "none", "--no-progress"]) == 0
    assert load_bundle(out).manifest.full_variants
    try:
        shutil.copytree(out, final.with_name(f".{final.name}.{os.getpid()}"))
        final.with_name(f".{final.name}.{os.getpid()}").rename(final)
    except OSError:  # another session cached it meanwhile
        return out
    return final


def _references(bundle: Path, x: np.ndarray) -> list[np.ndarray]:
    """The FP32 model's output and every full variant's, computed here."""
    with Client(bundle, policy="edge_only", accuracy_budget=0.0, warm=False) as c:
        outs = [np.asarray(c.infer(x).output)]
        for v in c.bundle.manifest.full_variants:
            c.set_mode(variant=v.name)
            outs.append(np.asarray(c.infer(x).output))
    return outs


def _edge(bundle: Path, faults: Path, tmp: Path, *extra: str):  # type: ignore[no-untyped-def]
    port, mport = free_port(), free_port()
    args = ["edge", "--bundle", str(bundle), "--listen", f"127.0.0.1:{port}"]
    args += ["--metrics-port", str(mport), "--fault-injection", str(faults)]
    args += ["--watchdog-interval", "0.2", "--deadline-ms", str(fl.DEADLINE_MS), *extra]
    return port, mport, collab_process(args, port=port, log=tmp / f"edge-{port}.log")


def _report(what: str, **times: float) -> None:
    print(f"\n[watchdog] {what}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items()))


def test_memory_leak_restarts_the_runtime_without_losing_a_request(
    variant_bundle: Path, tmp_path: Path
) -> None:
    faults = tmp_path / "faults"
    faults.mkdir()
    x = sample_inputs(variant_bundle, 1)
    refs = _references(variant_bundle, x)
    limit = 0.85 * 400 * 2**20
    port, mport, proc = _edge(variant_bundle, faults, tmp_path, "--memory-budget", "400")
    with proc as p, fl.Load(port, x).running() as load, fl.RssSampler(p.pid) as rss:
        fl.until(lambda: load.answers, 30, "first answers")
        assert fl.rss(p.pid) < limit  # room to leak
        t0 = fl.inject(faults, "leak_mb", "300")
        t_restart = fl.until(
            lambda: fl.action(mport, "runtime_restart") >= 1, 20, "runtime restart"
        )
        t_back = fl.until(lambda: fl.rss(p.pid) < limit, 20, "RSS back under the threshold")
        time.sleep(1.0)  # requests go on on the fresh runtime
        after = load.between(t_back, time.monotonic())
        assert fl.action(mport, "runtime_restart") == 1  # one restart cured it
    load.check_none_lost()
    assert after, "no request answered after the restart"
    assert all(any(np.allclose(a.output, r, atol=1e-4) for r in refs) for a in load.answers)
    assert p.returncode == 0  # and it drained and exited cleanly
    t_over = rss.first_above(limit)  # sampled every 5 ms: a fast host may cross and cure within
    assert t_over is not None or rss.peak() > 0.5 * limit, "the leak never showed"
    t_over = t_over if t_over is not None else t_restart
    _report(
        "memory leak 300 MiB (budget 400 MiB, threshold 85 %)",
        leak_allocated=t_over - t0,
        restart_seen=t_restart - t_over,
        rss_back=t_back - t_over,
    )
    print(f"[watchdog] peak RSS {rss.peak() / 2**20:.0f} MiB")


def test_slowed_runtime_switches_to_the_lightest_variant_and_back(
    variant_bundle: Path, tmp_path: Path
) -> None:
    faults = tmp_path / "faults"
    faults.mkdir()
    m = load_bundle(variant_bundle).manifest
    light = min(m.full_variants, key=lambda v: v.ms)
    # slowed so that FP32 takes ~1.3 x the budget (50 % of the deadline) and the lightest
    # variant well under it; FP32 is predicted back under 70 % of it only once the fault is gone
    budget_ms = 0.5 * fl.DEADLINE_MS
    factor = 1.3 * budget_ms / m.full_ms
    assert factor * light.ms < 0.7 * budget_ms  # the bundle leaves room for the check
    x = sample_inputs(variant_bundle, 1)
    port, mport, proc = _edge(
        variant_bundle,
        faults,
        tmp_path,
        "--latency-budget",
        "0.5",
        "--latency-window",
        "1.0",
    )
    with proc as p, fl.Load(port, x).running() as load:
        fl.until(lambda: len(load.answers) > 20, 30, "first answers")
        t0 = fl.inject(faults, "slowdown", f"{factor:.1f}")
        t_switch = fl.until(lambda: fl.action(mport, "variant_switch") >= 1, 20, "variant switch")
        assert fl.metrics(mport)["collab_edge_degraded"] == 1.0
        time.sleep(1.0)
        degraded = load.between(t_switch + 0.2, time.monotonic())
        t1 = fl.inject(faults, "slowdown", None)
        t_restore = fl.until(
            lambda: fl.action(mport, "variant_restore") >= 1, 20, "variant restore"
        )
        time.sleep(0.5)
        restored = load.between(t_restore + 0.2, time.monotonic())
        slow = load.between(t0 + 0.3, t_switch - 0.1)
    load.check_none_lost()
    assert p.returncode == 0
    med = lambda answers: float(np.median([a.edge_ms for a in answers]))  # noqa: E731
    assert degraded and restored
    # the variant brought edge compute back under the budget while the fault lasted
    assert med(degraded) < budget_ms, (med(slow) if slow else None, med(degraded))
    _report(
        f"runtime slowed x{factor:.0f} (FP32 {factor * m.full_ms:.1f} ms, budget {budget_ms:.0f} ms)",
        switch=t_switch - t0,
        restore=t_restore - t1,
    )
    print(
        f"[watchdog] edge ms median: slowed FP32 {med(slow) if slow else float('nan'):.1f}, "
        f"{light.name} {med(degraded):.1f}, restored FP32 {med(restored):.1f}"
    )


@pytest.mark.slow
def test_flipped_byte_is_refetched_and_a_cut_link_serves_offline(
    variant_bundle: Path, broker: Broker, tmp_path: Path
) -> None:
    """A fleet member: coordinator, cloud node and Mosquitto are real processes; the edge's
    link to the cloud and to the broker runs through the link emulator."""
    node = "wd-e1"
    served = tmp_path / "served"
    shutil.copytree(variant_bundle, served)
    version = load_bundle(served).version
    port, oport, cport = free_port(), free_port(), free_port()
    key = tmp_path / "coord" / "coordinator.ed25519.pub"
    seen: list[tuple[float, float]] = []  # (arrival, sent_at) of the edge's telemetry

    def on_telemetry(topic: str, payload: bytes, retained: bool) -> None:
        seen.append((time.time(), msg.telemetry_from_bytes(payload).sent_at))

    with (
        _coordinator(broker, tmp_path, port, oport),
        fl.through_link(("127.0.0.1", cport)) as cloud_link,
        fl.through_link((broker.host, broker.port)) as mqtt_link,
        collab_process(
            [
                *("cloud", "--bundle", str(served), "--listen", f"127.0.0.1:{cport}"),
                *("--broker", broker.url, "--node-id", "wd-c1", "--heartbeat-interval", "0.3"),
                *("--advertise", f"127.0.0.1:{cloud_link.port}"),
            ],
            port=cport,
            log=tmp_path / "cloud.log",
        ),
        StatusWatcher(broker.url) as watch,
        MqttClient(MqttConfig(url=broker.url, client_id="wd-observer")) as obs,
    ):
        obs.subscribe(topics.node_topic(node, topics.TELEMETRY), on_telemetry, qos=0)
        token = fetch_token_file(key.parent / "coordinator.fetch-key", tmp_path / "tok", node)
        eport, mport, edge = _edge(
            served,
            tmp_path / "no-faults",
            tmp_path,
            "--policy",
            "cloud_only",
            "--probe-interval",
            "0.2",
            "--integrity-interval",
            "1",
            "--reachability-interval",
            "0.25",
            "--broker",
            f"mqtt://127.0.0.1:{mqtt_link.port}",
            "--node-id",
            node,
            "--trusted-key",
            str(key),
            "--fetch-token-file",
            str(token),
            "--work-dir",
            str(tmp_path / "work"),
            "--heartbeat-interval",
            "0.3",
            "--telemetry-interval",
            "0.3",
        )
        x = sample_inputs(served, 1)
        with edge as p, fl.Load(eport, x).running() as load:
            fl.until(lambda: any(a.path == "cloud_only" for a in load.answers), 30, "cloud path")
            # the coordinator rolls out the version the edge serves: the signed directive
            # says where (and what) a re-fetch may fetch
            with CoordinatorClient(f"127.0.0.1:{oport}") as c:
                assert c.upload(served).version == version
                c.start(version)
                fl.until(
                    lambda: any(n.node_id == node and n.state == "acked" for n in c.status().nodes),
                    30,
                    "the edge's rollout ack",
                )

            # --- a flipped byte in a model file on disk
            seg = load_bundle(served).manifest.full_paths()[0]
            t0 = time.monotonic()
            fl.flip_byte(served / seg)
            t_fail = fl.until(
                lambda: fl.action(mport, "integrity_fail") >= 1, 20, "integrity check"
            )
            t_fixed = fl.until(lambda: fl.action(mport, "refetch") >= 1, 30, "re-fetch")
            fresh = tmp_path / "work" / "bundles" / version
            assert load_bundle(fresh).version == version  # verified, complete
            fl.until(
                lambda: (
                    (n := watch.node(node))
                    and n.telemetry
                    and n.telemetry.recoveries.get("refetch", 0) >= 1
                ),
                15,
                "the coordinator told of the re-fetch",
            )
            assert watch.latest is not None
            table = format_table(watch.latest)  # what collab status prints
            assert f"recoveries: {node}: " in table and "refetch=1" in table, table

            # --- the link cut (cloud and broker)
            before = len(load.answers)
            t1 = time.monotonic()
            wall_cut = time.time()
            cloud_link.cut(True)
            mqtt_link.cut(True)
            t_off = fl.until(lambda: fl.action(mport, "offline_enter") >= 1, 20, "offline mode")
            fl.until(lambda: fl.action(mport, "broker_lost") >= 1, 20, "broker loss noticed")
            time.sleep(1.5)
            offline = load.between(t_off + 0.3, time.monotonic())
            t2 = time.monotonic()
            wall_back = time.time()
            cloud_link.cut(False)
            mqtt_link.cut(False)
            t_on = fl.until(lambda: fl.action(mport, "offline_exit") >= 1, 20, "online again")
            t_broker = fl.until(lambda: fl.action(mport, "broker_back") >= 1, 30, "broker back")
            fl.until(lambda: any(wall_cut < s < wall_back for _, s in seen), 15, "queued telemetry")
            fl.until(
                lambda: any(a.path == "cloud_only" for a in load.between(t_on, time.monotonic())),
                20,
                "cloud path again",
            )
            assert len(load.answers) > before
    load.check_none_lost()
    assert p.returncode == 0
    assert offline and all(a.path == "edge_only" for a in offline)
    queued = [s for arrived, s in seen if wall_cut < s < wall_back]
    assert all(arrived >= wall_back for arrived, s in seen if wall_cut + 1.0 < s < wall_back)
    _report(
        "flipped byte in a model file",
        detected=t_fail - t0,
        refetched_and_swapped=t_fixed - t0,
    )
    _report(
        "link cut (cloud + broker)",
        offline_after=t_off - t1,
        cloud_back_after=t_on - t2,
        broker_back_after=t_broker - t2,
    )
    print(
        f"[watchdog] {len(offline)} answers edge-only while offline; {len(queued)} telemetry "
        "intervals from the outage delivered after it"
    )


# -- the parts, in this process ------------------------------------------------------------


def test_outbox_keeps_the_newest_and_counts_what_it_dropped() -> None:
    box: Outbox[int] = Outbox(2)
    for i in range(5):
        box.put(i)
    assert box.dropped == 3 and box.take() == [3, 4] and box.take() == []
    with pytest.raises(ValueError):
        Outbox(0)


def test_telemetry_carries_the_watchdog_report() -> None:
    t = msg.Telemetry(
        node_id="e1", interval_s=1.0, recoveries={"refetch": 2}, health="offline,degraded:s"
    )
    back = msg.telemetry_from_bytes(msg.telemetry_to_proto(t).SerializeToString())
    assert back.recoveries == {"refetch": 2} and back.health == "offline,degraded:s"
    long = msg.telemetry_to_proto(replace(t, health="x" * (msg.MAX_HEALTH_LEN + 1)))
    with pytest.raises(MalformedMessage, match="health"):
        msg.telemetry_from_bytes(long.SerializeToString())


def test_watchdog_settings_are_bounded() -> None:
    with pytest.raises(ConfigError, match="memory_threshold"):
        WatchdogConfig(memory_threshold=1.5)
    with pytest.raises(ConfigError, match="latency_recover"):
        WatchdogConfig(latency_recover=0)


def test_forced_mode_overrides_the_policy_and_rejects_an_unknown_variant(
    variant_bundle: Path,
) -> None:
    x = sample_inputs(variant_bundle, 1)
    light = load_bundle(variant_bundle).manifest.full_variants[0].name
    with Client(variant_bundle, cloud=[f"127.0.0.1:{free_port()}"], policy="cloud_only") as c:
        assert c.infer(x).fell_back  # nothing listens there: tried, finished locally
        c.set_mode(edge_only=True)
        r = c.infer(x)
        assert r.path == "edge_only" and not r.fell_back and r.variant is None
        c.set_mode(variant=light)
        assert c.infer(x).variant == light
        with pytest.raises(ConfigError, match="no full-model variant"):
            c.set_mode(variant="nope")
        c.set_mode()
        assert c.infer(x).path == "cloud_only"


def test_a_damaged_bundle_without_a_fleet_keeps_serving_from_memory(
    digits_bundle: Path, tmp_path: Path
) -> None:
    """No coordinator to re-fetch from: the damage is reported once, a runtime restart
    (which would read the damaged file) is refused, and requests keep being answered."""
    root = tmp_path / "b"
    shutil.copytree(digits_bundle, root)
    x = sample_inputs(root, 1)
    with Client(root, policy="edge_only") as c:
        c.warm()
        want = c.infer(x).output
        wd = Watchdog(WatchdogConfig(memory_budget_mb=1), c, CollectorRegistry())
        wd.check_integrity()
        assert wd.health() == "ok" and not wd.counts
        fl.flip_byte(root / c.bundle.manifest.full_paths()[0])
        wd.check_integrity()
        wd.check_integrity()
        assert wd.counts == {"integrity_fail": 1} and wd.health() == "damaged"
        wd.check_memory()  # 1 MiB budget: over it, but the files no longer verify
        assert wd.counts["restart_failed"] == 1
        np.testing.assert_allclose(c.infer(x).output, want)  # the in-memory sessions


def test_a_leak_restarts_cannot_cure_makes_the_daemon_exit_for_its_supervisor(
    digits_bundle: Path, tmp_path: Path
) -> None:
    """A budget the daemon's own baseline exceeds: the in-process restarts do not help, so
    after --escalate-after of them it drains and exits 75 (its supervisor restarts it)."""
    port = free_port()
    args = ["edge", "--bundle", str(digits_bundle), "--listen", f"127.0.0.1:{port}"]
    args += ["--memory-budget", "20", "--restart-cooldown", "0.3", "--escalate-after", "2"]
    args += ["--watchdog-log-interval", "0"]  # every action logged
    log = tmp_path / "edge.log"
    with collab_process(args, port=port, log=log) as p:
        t0 = time.monotonic()
        assert p.wait(30) == 75
    text = log.read_text()
    assert text.count("watchdog: runtime restart") == 2 and "process restart" in text
    _report("leak outside the runtime (budget 20 MiB)", exited=time.monotonic() - t0)


def test_no_refetch_without_a_verified_directive(tmp_path: Path) -> None:
    """The broker is not trusted to say where the fetch token goes: a node re-fetches only
    from the endpoint a verified directive for the version it serves names."""
    agent = NodeAgent(
        AgentConfig(
            node_id="e1",
            role="edge",
            mqtt=MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"),
            work_dir=tmp_path,
            bundle_version="ab" * 32,
        )
    )
    with pytest.raises(ControlPlaneError, match="no verified directive"):
        agent.refetch()
