"""The coordinator daemon: consumes node messages from MQTT, keeps the registry, runs
rollouts, publishes the cloud endpoint list and a fleet status snapshot.

Threads: paho's network thread runs the message handlers, a sweeper marks silent nodes
offline and publishes status, two gRPC servers with their own workers serve bundle
fetches (nodes) and operator calls, and the database writer commits. One lock guards
registry and rollout state.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from collab.bundle import load_bundle
from collab.control import canary as cn
from collab.control import messages as msg
from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig, with_client_id
from collab.control.signing import load_or_create_signing_key, public_key_path, sign_directive
from collab.errors import ConfigError, ControlPlaneError
from collab.log import logger
from collab.proto import control_pb2 as pb
from collab.settings import check_bounds, setting
from collab.transport import advertised, is_loopback, is_loopback_host
from coordinator.auth import load_or_create_fetch_key, require_operator_auth
from coordinator.canary import Canaries, Launch
from coordinator.db import Database
from coordinator.guard import Rejections
from coordinator.metrics import register as register_metrics
from coordinator.registry import Registry, bounded_snapshot
from coordinator.rollout import Rollouts
from coordinator.service import FetchLimits, Tls, serve_fetch, serve_operator
from coordinator.store import BundleStore

MAX_PAYLOAD = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    mqtt: MqttConfig
    db: Path
    bundle_store: Path | None = setting(None, help="bundle store dir (default: <db dir>/bundles)")
    signing_key: Path | None = setting(
        None,
        help="Ed25519 key (PEM), created on first start; nodes trust <key>.pub "
        "(default: <db dir>/coordinator.ed25519)",
    )
    listen: str = setting(
        "127.0.0.1:50070",
        help="gRPC for nodes: bundle fetch, per-node fetch tokens",
        metavar="HOST:PORT",
    )
    advertise: str | None = setting(
        None, help="host:port nodes fetch bundles from (default: --listen)", metavar="HOST:PORT"
    )
    operator_listen: str = setting(
        "127.0.0.1:50071",
        help="gRPC for `collab rollout`; beyond loopback it needs an admin token",
        metavar="HOST:PORT",
    )
    fetch_key: Path | None = setting(
        None,
        help="secret the nodes' fetch tokens derive from, created on first start "
        "(`collab mqtt-auth --fetch-key` issues the tokens; default: <db dir>/coordinator.fetch-key)",
    )
    fetch_limits: FetchLimits = field(default_factory=FetchLimits)
    heartbeat_timeout: float = setting(
        15.0, help="seconds without heartbeat -> offline", lo=0, lo_open=True, metavar="S"
    )
    status_interval: float = setting(
        2.0, help="fleet status publish period (s)", lo=0, lo_open=True, metavar="S"
    )
    max_payload: int = MAX_PAYLOAD
    grpc_tls_cert: Path | None = setting(None, help="serve gRPC with TLS (cert PEM)")
    grpc_tls_key: Path | None = setting(None, help="TLS key PEM")
    admin_token: str | None = None  # "authorization: Bearer <token>" on the operator API
    client_id: str = "collab-coordinator"
    directive_ttl: float = setting(
        3600.0,
        help="seconds a signed rollout directive is valid (re-signed at half its lifetime)",
        lo=0,
        lo_open=True,
    )
    node_ttl: float = setting(
        86400.0,
        help="seconds after which a node not heard of is deleted from the registry",
        lo=0,
        lo_open=True,
    )
    status_max_bytes: int = setting(
        1 << 20,
        help="byte budget of the retained status snapshot (the rest is counted as omitted)",
        lo=1024,
    )
    max_clouds: int = setting(
        msg.MAX_CLOUDS,
        help="cloud endpoints published to the edges (the most recently announced)",
        lo=1,
        hi=msg.MAX_CLOUDS,
    )
    broker_auth: Path | None = setting(
        None,
        help="own broker only: credentials + ACL dir of `collab mqtt-auth` (created if "
        "missing; default <db dir>/mqtt-auth)",
    )
    allow_anonymous_broker: bool = setting(
        False,
        help="run the own broker without credentials, or connect to a non-loopback "
        "--broker without a user name or client certificate (anyone reaching it can publish)",
    )

    def __post_init__(self) -> None:
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ConfigError("gRPC TLS needs both a certificate and a key")
        check_bounds(self)
        m = self.mqtt
        anonymous = m.username is None and m.cert_file is None
        if anonymous and not is_loopback_host(m.host) and not self.allow_anonymous_broker:
            raise ConfigError(
                f"broker {m.url} is not on loopback and no MQTT credentials are given: pass "
                "--mqtt-username/--mqtt-password-file (see `collab mqtt-auth`) or "
                "--allow-anonymous-broker"
            )
        require_operator_auth(self.operator_listen, self.admin_token)


class Coordinator:
    def __init__(self, config: CoordinatorConfig) -> None:
        self.config = config
        base = Path(config.db).parent
        self.key_path = Path(config.signing_key or base / "coordinator.ed25519")
        self.public_key_path = public_key_path(self.key_path)
        self._key = load_or_create_signing_key(self.key_path)
        self.fetch_key_path = Path(config.fetch_key or base / "coordinator.fetch-key")
        self.fetch_key = load_or_create_fetch_key(self.fetch_key_path)
        self.db = Database(Path(config.db))
        self.store = BundleStore(Path(config.bundle_store or base / "bundles"), self.db)
        self.registry = Registry(self.db)
        self.rollouts = Rollouts(self.db)
        self.canaries = Canaries(self.db)
        self._manifest_files: dict[str, dict[str, str]] = {}
        self.rejections = Rejections()
        self.metrics = self.rejections.metrics
        register_metrics(self, self.metrics)
        self.processed = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._published_clouds: tuple[str, ...] | None = None
        self._drift: dict[str, str] = {}  # as last logged
        self._published_status: object = None  # what the last status snapshot was built from
        self._stack = ExitStack()
        self._sweeper: threading.Thread | None = None
        self.port = 0  # bundle fetch (nodes)
        self.operator_port = 0
        self.fetch_endpoint = ""
        will = (topics.COORDINATOR_STATE, self._state_bytes(online=False), 1, True)
        self.mqtt = MqttClient(
            with_client_id(config.mqtt, config.client_id, clean_session=False),
            will=will,
            on_connect=self._on_connect,
        )
        # acks at QoS 1 (queued by the broker while we are down, persistent session);
        # the rest at QoS 0 so the broker's QoS 1 in-flight window cannot let a node's first
        # heartbeat overtake its announce (retained announces are re-sent on subscribe anyway)
        for kind, qos in (
            (topics.ACK, 1),
            (topics.ANNOUNCE, 0),
            (topics.CLOUD_ANNOUNCE, 0),
            (topics.HEARTBEAT, 0),
            (topics.TELEMETRY, 0),
        ):
            self.mqtt.subscribe(f"{topics.PREFIX}/node/+/{kind}", self._on_message, qos=qos)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Coordinator:
        try:
            self.db.start()
            self._stack.callback(self.db.close)
            cfg = self.config
            tls = None
            if cfg.grpc_tls_cert is not None and cfg.grpc_tls_key is not None:
                tls = Tls(cert=cfg.grpc_tls_cert, key=cfg.grpc_tls_key)
            for where in (cfg.listen, cfg.operator_listen):
                if tls is None and not is_loopback(where):
                    logger.warning("gRPC on %s without TLS: tokens travel in clear", where)
            _, self.port = self._stack.enter_context(
                serve_fetch(self, cfg.listen, self.fetch_key, limits=cfg.fetch_limits, tls=tls)
            )
            _, self.operator_port = self._stack.enter_context(
                serve_operator(self, cfg.operator_listen, cfg.admin_token, tls=tls)
            )
            self.fetch_endpoint = self.config.advertise or advertised(
                self.config.listen, self.port, wildcard_host="127.0.0.1"
            )
            with self._lock:
                self.registry.grace(time.time())
            self.mqtt.start()
            self._stack.callback(self.mqtt.stop)
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="coordinator-sweeper", daemon=True
            )
            self._sweeper.start()
        except BaseException:
            self._stack.close()
            raise
        logger.info(
            "coordinator up: broker %s, bundle fetch on %s, operator API on port %d%s, db %s, "
            "trust key %s",
            self.config.mqtt.url,
            self.fetch_endpoint,
            self.operator_port,
            "" if self.config.admin_token else " (loopback, no token)",
            self.config.db,
            self.public_key_path,
        )
        c = self.canaries.running
        if c is not None:
            logger.info(
                "resuming canary %s at step %d (%g%%, %s), %d windows recorded",
                c.canary_id,
                c.step,
                c.steps[c.step],
                ",".join(c.canary_nodes),
                len(self.canaries.step_windows()),
            )
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
        try:
            if self.mqtt.connected:
                self.mqtt.publish(
                    topics.COORDINATOR_STATE,
                    self._state_bytes(online=False),
                    qos=1,
                    retain=True,
                    wait=2.0,
                )
        except ControlPlaneError as e:
            logger.warning("coordinator offline announce failed: %s", e)
        self._stack.close()

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def lags(self) -> collections.deque[float]:
        """Seconds from a heartbeat/telemetry being sent to its registry row committed."""
        return self.db.lags

    # ------------------------------------------------------------ operator API
    def upload(self, bundle_dir: Path) -> str:
        return self.store.add(Path(bundle_dir))[0]

    def start_rollout(self, version: str, *, percent: int = 100) -> msg.RolloutStatus:
        self.store.path(version)
        with self._lock:
            self.canaries.supersede()  # an operator's rollout ends a running canary
            return self._launch(Launch(version=version, targets=None, percent=percent))

    def start_canary(self, version: str, plan: cn.CanaryPlan) -> cn.CanaryRecord:
        """Refused (ConfigError, NotFoundError) before anything is sent when the
        candidate is not stored, is the baseline, or the fleet cannot judge it."""
        self.store.path(version)
        with self._lock:
            rec, launch = self.canaries.start(
                plan, version, self.store.model_names[version], self.registry.nodes, self._files
            )
            self._launch(launch)
            logger.info(
                "canary %s: %s %s vs baseline %s, seed %d, %d%% -> %s",
                rec.canary_id,
                rec.model_name,
                version[:12],
                rec.baseline_version[:12],
                rec.seed,
                round(rec.steps[0]),
                ",".join(rec.canary_nodes),
            )
            return rec

    def _files(self, version: str) -> dict[str, str] | None:
        """The files (path -> sha256) of a stored version; None when not stored."""
        if version not in self.store.model_names:
            return None
        if version not in self._manifest_files:  # verified once, then remembered
            self._manifest_files[version] = dict(
                load_bundle(self.store.path(version)).manifest.files
            )
        return self._manifest_files[version]

    def canary_status(self) -> cn.CanaryRecord | None:
        with self._lock:
            return self.canaries.current

    def _launch(self, launch: Launch) -> msg.RolloutStatus:
        """Start a rollout (a canary step, or an operator's) and publish its directives."""
        version, percent = launch.version, launch.percent
        with self._lock:
            ro = self.rollouts.start(
                version,
                self.store.model_names[version],
                percent,
                list(self.registry.nodes.values()),
                targets=launch.targets,
                shadow=launch.shadow,
            )
            for node_id in ro.nodes:
                self._publish_directive(node_id)
            logger.info(
                "rollout %s: %s %s to %d%% -> %d nodes (%d pending)",
                ro.rollout_id,
                ro.model_name,
                version[:12],
                percent,
                len(ro.nodes),
                len(ro.pending()),
            )
            return ro.status()

    def rollback(self, to_version: str = "") -> msg.RolloutStatus:
        with self._lock:
            cur = self.rollouts.current
            target = to_version or (cur.previous_version if cur else "")
        if not target:
            raise ControlPlaneError(
                "nothing to roll back to: no previous version recorded; pass a version"
            )
        logger.info("rollback to %s", target[:12])
        return self.start_rollout(target, percent=100)

    def rollout_status(self) -> msg.RolloutStatus | None:
        with self._lock:
            return self.rollouts.current.status() if self.rollouts.current else None

    def drift(self) -> dict[str, str]:
        """Nodes serving another version than the current rollout gave them -> that one."""
        with self._lock:
            return self.rollouts.drift(self.registry.nodes)

    def fleet_status(self) -> msg.FleetStatus:
        # copies under the lock, the sorting and sizing outside it: at 10k nodes that work
        # held up the MQTT handlers (p99 heartbeat->commit 151 ms, benchmarks/fleet.py)
        with self._lock:
            statuses = self.registry.statuses()
            rollout, rejected, drift, canary = (
                self.rollout_status(),
                dict(self.rejections.counts),
                self.drift(),
                self.canaries.current,
            )
        nodes, omitted = bounded_snapshot(statuses, self.config.status_max_bytes)
        return msg.FleetStatus(
            nodes=nodes,
            rollout=rollout,
            updated_at=time.time(),
            rejected=rejected,
            drift=drift,
            omitted=omitted,
            canary=canary,
        )

    def _status_changed(self) -> bool:
        """Whether anything a snapshot shows changed since the last one was published."""
        with self._lock:
            key = (
                self.registry.version,
                self.rollout_status(),
                dict(self.rejections.counts),
                self.canaries.current,
            )
        changed, self._published_status = key != self._published_status, key
        return changed

    # ------------------------------------------------------------ publishing
    def _state_bytes(self, *, online: bool) -> bytes:
        return pb.CoordinatorState(
            state=pb.STATE_ONLINE if online else pb.STATE_OFFLINE,
            fetch_endpoint=getattr(self, "fetch_endpoint", ""),
            sent_at=time.time(),
        ).SerializeToString()

    def _on_connect(self) -> None:
        self.mqtt.publish(
            topics.COORDINATOR_STATE, self._state_bytes(online=True), qos=1, retain=True
        )
        with self._lock:
            self._published_clouds = self._published_status = None  # the broker may have lost them
            self._publish_clouds()
            ro = self.rollouts.active
            for node_id in ro.pending() if ro else ():
                self._publish_directive(node_id)

    def _publish_clouds(self) -> None:
        clouds = self.registry.cloud_endpoints(self.config.max_clouds)
        if clouds == self._published_clouds:
            return
        self._published_clouds = clouds
        payload = msg.clouds_to_proto(clouds, time.time()).SerializeToString()
        self.mqtt.publish(topics.CLOUDS, payload, qos=1, retain=True)
        logger.info("cloud endpoints: %s", list(clouds))

    def _publish_directive(self, node_id: str) -> None:
        ro = self.rollouts.current
        assert ro is not None
        d = ro.directive(
            node_id,
            fetch_endpoint=self.fetch_endpoint,
            file_sizes=self.store.sizes(ro.version),
            ttl=self.config.directive_ttl,
        )
        self.mqtt.publish(
            topics.node_topic(node_id, topics.ROLLOUT),
            msg.directive_to_proto(sign_directive(self._key, d)).SerializeToString(),
            qos=1,
            retain=True,
        )

    def _sweep_loop(self) -> None:
        interval = min(1.0, self.config.heartbeat_timeout / 4)
        next_status = 0.0
        while not self._stop.wait(interval):
            now = time.time()
            try:
                with self._lock:
                    for node_id in self.registry.expired(now, self.config.heartbeat_timeout):
                        logger.info(
                            "node %s offline: no heartbeat for %.1fs",
                            node_id,
                            self.config.heartbeat_timeout,
                        )
                        self.registry.mark_offline(node_id)
                    self._publish_clouds()
                    for node_id in self.rollouts.stale(self.config.directive_ttl):
                        self._publish_directive(node_id)
                    act = self.canaries.sweep(now)
                    if act is not None:
                        self._act(*act)
                    self._log_drift()
                    self._forget(self.registry.expire(now, self.config.node_ttl))
                if now >= next_status and self._status_changed():
                    next_status = now + self.config.status_interval
                    fs = msg.fleet_status_to_proto(self.fleet_status()).SerializeToString()
                    self.mqtt.publish(topics.FLEET_STATUS, fs, qos=0, retain=True)
            except Exception:
                logger.exception("coordinator sweep failed")

    def _forget(self, node_ids: list[str]) -> None:
        """Clear the retained announces of expired nodes, so neither the broker keeps them
        nor a restarted coordinator registers them again."""
        for node_id in node_ids:
            logger.info("node %s forgotten: not heard of for %.0fs", node_id, self.config.node_ttl)
            for kind in (topics.ANNOUNCE, topics.CLOUD_ANNOUNCE):
                self.mqtt.publish(topics.node_topic(node_id, kind), b"", qos=1, retain=True)

    # ------------------------------------------------------------ receiving
    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        self.processed += 1
        if len(payload) > self.config.max_payload:
            self.rejections.reject("oversized", f"{len(payload)} bytes on {topic}")
            return
        parsed = topics.parse_node_topic(topic)
        if parsed is None:
            self.rejections.reject("bad_topic", topic)
            return
        node_id, kind = parsed
        if kind == topics.ROLLOUT:
            return  # our own retained directives echoed back
        try:
            if kind in (topics.ANNOUNCE, topics.CLOUD_ANNOUNCE):
                if payload:
                    role = "cloud" if kind == topics.CLOUD_ANNOUNCE else "edge"
                    self._on_announce(node_id, role, msg.announce_from_bytes(payload))
            elif kind == topics.HEARTBEAT:
                self._on_heartbeat(node_id, msg.heartbeat_from_bytes(payload))
            elif kind == topics.TELEMETRY:
                self._on_telemetry(node_id, msg.telemetry_from_bytes(payload))
            elif kind == topics.ACK:
                self._on_ack(node_id, msg.ack_from_bytes(payload))
        except msg.MalformedMessage as e:
            self.rejections.reject("malformed", f"{topic}: {e}")

    def _check(self, topic_id: str, claimed: str, *, known: bool = True) -> bool:
        if claimed != topic_id:
            self.rejections.reject(
                "id_mismatch", f"payload claims {claimed!r} on {topic_id!r}'s topic"
            )
            return False
        if known and topic_id not in self.registry.nodes:
            self.rejections.reject("unknown_node", f"{topic_id!r} never announced itself")
            return False
        return True

    def _on_announce(self, node_id: str, role: str, a: msg.Announce) -> None:
        """``role`` is the topic's: the broker ACL lets only cloud credentials write a
        cloud-announce topic, so a payload claiming another role is refused."""
        if not self._check(node_id, a.node_id, known=False):
            return
        if a.role != role:
            self.rejections.reject(
                "role_conflict", f"{node_id!r} announced {a.role} on its {role} announce topic"
            )
            return
        with self._lock:
            old = self.registry.nodes.get(node_id)
            if old is not None and old.role != a.role:
                self.rejections.reject(
                    "role_conflict", f"{node_id!r} registered as {old.role}, announced {a.role}"
                )
                return
            if old is None or old.online != a.online:
                logger.info(
                    "node %s (%s) %s, version %s",
                    node_id,
                    a.role,
                    "online" if a.online else "offline (last-will or clean exit)",
                    a.bundle_version[:12] or "-",
                )
            rec = self.registry.announce(a, time.time())
            ro = self.rollouts.active
            if ro is not None and a.online:
                if self.rollouts.add_target(rec):
                    self._publish_directive(node_id)
                elif (
                    ro.nodes.get(node_id, ("", ""))[0] == "pending"
                    and rec.bundle_version == ro.version
                ):
                    self.rollouts.set_node(node_id, "acked")  # acked while we were down
                    self._log_settled()
            if a.role == "cloud":
                self._publish_clouds()

    def _on_heartbeat(self, node_id: str, h: msg.Heartbeat) -> None:
        if not self._check(node_id, h.node_id):
            return
        with self._lock:
            revived = self.registry.heartbeat(h, time.time())
            if revived:
                logger.info("node %s back online", node_id)
                if self.registry.nodes[node_id].role == "cloud":
                    self._publish_clouds()

    def _on_telemetry(self, node_id: str, t: msg.Telemetry) -> None:
        if not self._check(node_id, t.node_id):
            return
        with self._lock:
            now = time.time()
            # the per-version samples are the canary's; the registry (and the status
            # snapshot, within its byte budget) keeps the node's totals only
            self.registry.telemetry(dataclasses.replace(t, versions=()), now)
            ignored, act = self.canaries.on_telemetry(node_id, t.versions, self.registry.nodes, now)
            if ignored:
                self.rejections.reject(
                    "canary_ignored",
                    f"{node_id!r}: a version window that is neither a canary node's candidate "
                    "nor a control node's baseline (e.g. a canary node before its swap)",
                )
            if act is not None:
                self._act(*act)

    def _act(self, d: cn.CanaryDecision, launch: Launch) -> None:
        """(lock held) Carry out a canary decision (already recorded)."""
        try:
            self._carry_out(d, launch)
        except Exception:  # never into the MQTT loop or the sweeper; the record stands
            logger.exception("canary decision %s could not be carried out", d.action)

    def _carry_out(self, d: cn.CanaryDecision, launch: Launch) -> None:
        rec = self.canaries.current
        assert rec is not None
        logger.info(
            "canary %s step %d (%g%%): %s: %s",
            rec.canary_id,
            d.step,
            rec.steps[d.step],
            d.action,
            d.reason,
        )
        self._launch(launch)

    def _on_ack(self, node_id: str, a: msg.RolloutAck) -> None:
        if not self._check(node_id, a.node_id):
            return
        with self._lock:
            ro = self.rollouts.active
            if ro is None or a.rollout_id != ro.rollout_id or a.version != ro.version:
                if ro is None or a.rollout_id != ro.rollout_id:
                    logger.debug("ack from %s for old rollout %s", node_id, a.rollout_id)
                return
            if a.ok:
                self.rollouts.set_node(node_id, "acked")
            else:
                logger.warning("node %s refused %s: %s", node_id, a.version[:12], a.error)
                self.rollouts.set_node(node_id, "refused", a.error)
            self._log_settled()
            if ro.state == "failed" and not ro.counts["acked"]:  # a canary step nobody took
                errors = [e for s, e in ro.nodes.values() if s == "refused"]
                act = self.canaries.refused(ro.version, ro.targets, errors, time.time())
                if act is not None:
                    self._act(*act)

    def _log_drift(self) -> None:
        drift = self.drift()
        ro = self.rollouts.current
        for node_id, version in sorted(drift.items()):
            if self._drift.get(node_id) != version and ro is not None:
                logger.warning(
                    "drift: node %s reports %s, rollout %s gave it %s",
                    node_id,
                    version[:12] or "-",
                    ro.rollout_id,
                    ro.version[:12],
                )
        self._drift = drift

    def _log_settled(self) -> None:
        ro = self.rollouts.current
        if ro is not None and ro.state in ("completed", "failed"):
            st = ro.status()
            logger.info(
                "rollout %s %s: %d acked, %d refused",
                ro.rollout_id,
                ro.state,
                st.count("acked"),
                st.count("refused"),
            )
