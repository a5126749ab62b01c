""":class:`NodeAgent`: what an edge or cloud node runs to be part of a fleet.

It announces the node (retained, with a last-will so the coordinator learns of a crash
from the broker), heartbeats, publishes telemetry from a callback, follows the cloud
endpoint list, and applies rollouts: verify the directive's Ed25519 signature, refuse
it when it is for another node, expired, or not newer than the node's persisted
high-water mark (:mod:`collab.control.replay`), fetch the bundle over gRPC writing only
what matches the signed version and sizes, hand the directory to a swap callback, and
ack — or refuse and keep serving the old bundle.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from collab.bundle import load_bundle
from collab.control import messages as msg
from collab.control import topics
from collab.control.mqtt import MqttClient, MqttConfig, with_client_id
from collab.control.outbox import Outbox
from collab.control.replay import ReplayGuard
from collab.control.signing import load_public_key, verify_directive
from collab.control.transfer import fetch_bundle
from collab.errors import (
    AuthError,
    BundleError,
    CollabError,
    ConfigError,
    ControlPlaneError,
    TransportError,
)
from collab.log import logger

SwapCallback = Callable[[Path], None]  # raise to refuse; return once new requests use it
CloudsCallback = Callable[[tuple[str, ...]], None]
TelemetryCallback = Callable[[], "msg.Telemetry | None"]
AppliedCallback = Callable[["msg.RolloutDirective"], None]  # a verified directive took effect


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    node_id: str
    role: str  # "edge" | "cloud"
    mqtt: MqttConfig
    work_dir: Path  # fetched bundles in work_dir/bundles/<version>; the directive mark
    trusted_key: Path | None = (
        None  # coordinator's Ed25519 public key (PEM); None = refuse rollouts
    )
    capabilities: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[str, ...] = ()  # cloud nodes: gRPC addresses edges should use
    bundle_version: str = ""
    model_name: str = ""
    heartbeat_interval: float = 5.0
    telemetry_interval: float = 10.0
    fetch_retry_max_s: float = 5.0
    fetch_ca: Path | None = None  # CA for a TLS coordinator gRPC endpoint
    fetch_token: str = field(default="", repr=False)  # this node's (collab mqtt-auth --fetch-key)
    keep_bundles: int = 3
    telemetry_queue: int = 64  # intervals kept while the broker is unreachable, oldest dropped

    def __post_init__(self) -> None:
        topics.check_node_id(self.node_id)
        if self.role not in msg.ROLES:
            raise ConfigError(f"role must be one of {msg.ROLES}, got {self.role!r}")
        if self.heartbeat_interval <= 0 or self.telemetry_interval <= 0:
            raise ConfigError("heartbeat/telemetry intervals must be > 0")


class NodeAgent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        on_swap: SwapCallback | None = None,
        on_clouds: CloudsCallback | None = None,
        telemetry: TelemetryCallback | None = None,
        on_applied: AppliedCallback | None = None,
    ) -> None:
        self.config = config
        self._on_applied = on_applied
        self._on_swap = on_swap
        self._on_clouds = on_clouds
        self._telemetry = telemetry
        self._public_key = load_public_key(config.trusted_key) if config.trusted_key else None
        self._guard = (
            ReplayGuard(Path(config.work_dir), config.node_id, self._public_key)
            if self._public_key is not None
            else None
        )
        self._version = config.bundle_version
        self._model_name = config.model_name
        self._bundle_dir: Path | None = None
        self._endpoints = tuple(config.endpoints)
        self._clouds: tuple[str, ...] = ()
        self._clouds_cv = threading.Condition()
        self._apply_lock = threading.Lock()
        self._unapplied: tuple[str, ...] | None = None  # a cloud list whose apply failed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pending: msg.SignedDirective | None = None
        self._done_rollout = ""
        self._installed: msg.RolloutDirective | None = None  # verified, for the version served
        self.outbox: Outbox[msg.Telemetry] = Outbox(config.telemetry_queue)
        self._seq = 0
        self._threads: list[threading.Thread] = []
        self.acks: list[msg.RolloutAck] = []  # what this agent reported, newest last
        self._announce_topic = self._topic(topics.announce_kind(config.role))
        will = (self._announce_topic, self._announce_bytes(online=False), 1, True)
        mqtt_cfg = with_client_id(config.mqtt, config.mqtt.client_id or f"collab-{config.node_id}")
        self._mqtt = MqttClient(mqtt_cfg, will=will, on_connect=self._announce)
        self._mqtt.subscribe(topics.CLOUDS, self._handle_clouds, qos=1)
        self._mqtt.subscribe(self._topic(topics.ROLLOUT), self._handle_directive, qos=1)

    # ------------------------------------------------------------ public
    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def bundle_version(self) -> str:
        return self._version

    @property
    def bundle_dir(self) -> Path | None:
        """Directory of the last bundle installed by a rollout (None before the first)."""
        return self._bundle_dir

    @property
    def cloud_endpoints(self) -> tuple[str, ...]:
        return self._clouds

    def wait_for_clouds(self, timeout: float) -> tuple[str, ...]:
        """Block until the coordinator has sent a non-empty cloud list (or timeout)."""
        with self._clouds_cv:
            self._clouds_cv.wait_for(lambda: bool(self._clouds), timeout)
            return self._clouds

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now (paho reconnects by itself)."""
        return self._mqtt.connected

    def refetch(self) -> Path:
        """Fetch the bundle this node serves again (its files on disk no longer match:
        edge_node.watchdog), exactly as the last verified directive for it describes it
        (signed endpoint, version and sizes), into ``work_dir/bundles/<version>``; checked
        like a rollout's. ControlPlaneError when no verified directive names this version:
        the broker is not trusted to say where to send the fetch token."""
        d = self._installed
        if d is None or d.version != self._version:
            raise ControlPlaneError(
                f"no verified directive for version {self._version[:12]}: nowhere to re-fetch from"
            )
        root = Path(self.config.work_dir) / "bundles"
        root.mkdir(parents=True, exist_ok=True)
        return self._fetch_once(d, root)[0]

    def set_endpoints(self, endpoints: tuple[str, ...]) -> None:
        self._endpoints = tuple(endpoints)
        self._announce()

    def start(self, timeout: float = 10.0) -> NodeAgent:
        self._mqtt.start(timeout)
        # the on-connect announce is queued on paho's thread; make sure the broker has an
        # announce before the first heartbeat, so the coordinator never sees an unknown node
        self._mqtt.publish(
            self._announce_topic,
            self._announce_bytes(online=True),
            qos=1,
            retain=True,
            wait=timeout,
        )
        for name, target in (("heartbeat", self._tick_loop), ("rollout", self._rollout_loop)):
            t = threading.Thread(target=target, name=f"agent-{name}-{self.node_id}", daemon=True)
            t.start()
            self._threads.append(t)
        logger.info("node %s (%s) joined %s", self.node_id, self.config.role, self.config.mqtt.url)
        return self

    def stop(self) -> None:
        """Leave cleanly: publish the OFFLINE announce the will would have sent."""
        self._stop.set()
        self._wake.set()
        try:
            if self._mqtt.connected:
                self._mqtt.publish(
                    self._announce_topic,
                    self._announce_bytes(online=False),
                    qos=1,
                    retain=True,
                    wait=2.0,
                )
        except CollabError as e:
            logger.warning("node %s: offline announce failed: %s", self.node_id, e)
        self._mqtt.stop()
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ publishing
    def _topic(self, kind: str) -> str:
        return topics.node_topic(self.config.node_id, kind)

    def _announce_bytes(self, *, online: bool) -> bytes:
        caps = dict(self.config.capabilities)
        if self._on_swap is not None:
            caps.setdefault("rollout", "1")
        a = msg.Announce(
            node_id=self.node_id,
            role=self.config.role,
            online=online,
            capabilities=caps,
            bundle_version=self._version,
            endpoints=self._endpoints,
            model_name=self._model_name,
            sent_at=time.time(),
        )
        return msg.announce_to_proto(a).SerializeToString()

    def _announce(self) -> None:
        self._mqtt.publish(
            self._announce_topic, self._announce_bytes(online=True), qos=1, retain=True
        )

    def _tick_loop(self) -> None:
        next_hb = time.monotonic()
        next_tm = time.monotonic() + self.config.telemetry_interval
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_hb:
                    self._seq += 1
                    hb = msg.Heartbeat(
                        node_id=self.node_id,
                        seq=self._seq,
                        sent_at=time.time(),
                        bundle_version=self._version,
                    )
                    self._mqtt.publish(
                        self._topic(topics.HEARTBEAT),
                        msg.heartbeat_to_proto(hb).SerializeToString(),
                    )
                    next_hb = now + self.config.heartbeat_interval
                    with self._apply_lock:
                        if self._unapplied is not None:
                            self._apply_clouds(self._unapplied)
                if now >= next_tm:
                    next_tm = now + self.config.telemetry_interval
                    self._publish_telemetry()
            except CollabError as e:
                logger.warning("node %s: publish failed: %s", self.node_id, e)
            self._stop.wait(max(0.01, min(next_hb, next_tm) - time.monotonic()))

    def _publish_telemetry(self) -> None:
        if self._telemetry is None:
            return
        try:
            t = self._telemetry()
        except Exception:
            logger.exception("node %s: telemetry callback failed", self.node_id)
            return
        if t is None:
            return

        def finite(x: float) -> float:  # an idle interval has no percentiles
            return x if math.isfinite(x) else 0.0

        t = replace(
            t,
            node_id=self.node_id,
            sent_at=time.time(),
            p50_ms=finite(t.p50_ms),
            p95_ms=finite(t.p95_ms),
            p99_ms=finite(t.p99_ms),
            interval_s=finite(t.interval_s),
        )
        # while the broker is down the intervals wait (bounded, oldest dropped) and go out
        # oldest first once it is back: the coordinator keeps the newest
        self.outbox.put(t)
        if not self._mqtt.connected:
            return
        queued = self.outbox.take()
        for i, q in enumerate(queued):
            try:
                self._mqtt.publish(
                    self._topic(topics.TELEMETRY), msg.telemetry_to_proto(q).SerializeToString()
                )
            except CollabError:
                for rest in queued[i:]:  # the broker went away meanwhile: they wait again
                    self.outbox.put(rest)
                raise

    def _ack(self, d: msg.RolloutDirective, *, ok: bool, error: str = "") -> None:
        a = msg.RolloutAck(
            node_id=self.node_id,
            rollout_id=d.rollout_id,
            version=d.version,
            ok=ok,
            error=error,
            sent_at=time.time(),
        )
        self.acks.append(a)
        try:
            self._mqtt.publish(
                self._topic(topics.ACK), msg.ack_to_proto(a).SerializeToString(), qos=1
            )
        except CollabError as e:
            logger.warning("node %s: ack publish failed: %s", self.node_id, e)

    # ------------------------------------------------------------ receiving
    def _handle_clouds(self, topic: str, payload: bytes, retained: bool) -> None:
        """Follow the coordinator's list: invalid entries and those beyond the cap are
        skipped, and the list counts as applied only once ``on_clouds`` returned, so a
        failed apply is retried (every heartbeat, and whenever the list arrives again)."""
        try:
            clouds, skipped = msg.clouds_from_bytes(payload)
        except msg.MalformedMessage as e:
            logger.warning("node %s: ignoring malformed cloud list: %s", self.node_id, e)
            return
        if skipped:
            logger.warning(
                "node %s: skipped %d invalid or surplus cloud endpoints", self.node_id, skipped
            )
        with self._apply_lock:
            self._apply_clouds(clouds)

    def _apply_clouds(self, clouds: tuple[str, ...]) -> None:
        """Hand ``clouds`` to ``on_clouds`` (under ``_apply_lock``); on failure keep it
        for the heartbeat loop to retry until it applies or a newer list replaces it."""
        retry, self._unapplied = clouds == self._unapplied, None
        if clouds == self._clouds:
            return
        if self._on_clouds is not None:
            try:
                self._on_clouds(clouds)
            except Exception as e:
                if not retry:  # logged once per list, not once per heartbeat
                    logger.warning(
                        "node %s: applying cloud endpoints %s failed (%s); retrying",
                        self.node_id,
                        list(clouds),
                        e,
                    )
                self._unapplied = clouds
                return
        with self._clouds_cv:
            self._clouds = clouds
            self._clouds_cv.notify_all()
        logger.info("node %s: cloud endpoints %s", self.node_id, list(clouds))

    def _handle_directive(self, topic: str, payload: bytes, retained: bool) -> None:
        if not payload:
            return  # retained directive cleared
        try:
            d = msg.directive_from_bytes(payload)
        except msg.MalformedMessage as e:
            logger.warning("node %s: ignoring malformed rollout directive: %s", self.node_id, e)
            return
        with self._lock:
            self._pending = d
        self._wake.set()

    # ------------------------------------------------------------ rollouts
    def _rollout_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                sd, self._pending = self._pending, None
            if sd is None or self._stop.is_set():
                continue
            d = sd.directive
            if d.rollout_id == self._done_rollout and d.version == self._version:
                continue
            try:
                self._apply(sd)
            except Exception as e:  # a swap callback bug must not kill the agent
                logger.exception("node %s: rollout %s failed", self.node_id, d.rollout_id)
                self._ack(d, ok=False, error=f"{type(e).__name__}: {e}")
            self._done_rollout = d.rollout_id

    def _superseded(self) -> bool:
        with self._lock:
            return self._pending is not None or self._stop.is_set()

    def _apply(self, sd: msg.SignedDirective) -> None:
        d = sd.directive  # unverified until verify_directive: only names the ack
        if self._on_swap is None or self._public_key is None or self._guard is None:
            if d.version == self._version:
                self._ack(d, ok=True)  # nothing changes, so nothing to verify
            elif self._on_swap is None:
                self._ack(d, ok=False, error="node does not accept rollouts")
            else:
                self._ack(
                    d,
                    ok=False,
                    error="no trusted coordinator key configured; refusing unsigned trust",
                )
            return
        try:
            d = verify_directive(sd, self._public_key)
        except AuthError as e:
            self._ack(d, ok=False, error=str(e))
            return
        refusal = self._guard.refusal(d, time.time(), self._version)
        if refusal is not None:
            logger.warning(
                "node %s: refusing directive %s: %s", self.node_id, d.rollout_id, refusal
            )
            self._ack(d, ok=False, error=refusal)
            return
        if d.version == self._version:
            self._guard.advance(d)
            self._applied(d)
            self._installed = d
            self._ack(d, ok=True)
            return
        root = Path(self.config.work_dir) / "bundles"
        root.mkdir(parents=True, exist_ok=True)
        fetched = self._fetch(d, root)
        if fetched is None:
            return
        final, name = fetched
        try:
            if self._on_swap is not None:
                self._on_swap(final)
        except Exception as e:
            logger.warning("node %s: swap to %s refused: %s", self.node_id, d.version[:12], e)
            self._ack(d, ok=False, error=f"swap failed: {e}")
            return
        self._guard.advance(d)
        self._installed = d
        self._version = d.version
        self._model_name = name
        self._bundle_dir = final
        self._applied(d)
        self._announce()
        self._ack(d, ok=True)
        logger.info("node %s now serves %s %s", self.node_id, name, d.version[:12])
        self._prune(root)

    def _applied(self, d: msg.RolloutDirective) -> None:
        if self._on_applied is not None:
            try:
                self._on_applied(d)
            except Exception:  # what it sets up is optional; the swap stands
                logger.exception("node %s: applied-directive callback failed", self.node_id)

    def _fetch(self, d: msg.RolloutDirective, root: Path) -> tuple[Path, str] | None:
        """Fetch, retrying transport failures -> (bundle dir, model name); None when
        refused (acked) or superseded."""
        delay = 0.2
        while True:
            try:
                return self._fetch_once(d, root)
            except TransportError as e:
                if self._superseded():
                    return None
                logger.warning("node %s: %s; retrying in %.1fs", self.node_id, e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.config.fetch_retry_max_s)
            except BundleError as e:
                logger.warning("node %s: refusing bundle %s: %s", self.node_id, d.version[:12], e)
                self._ack(d, ok=False, error=str(e))
                return None

    def _fetch_once(self, d: msg.RolloutDirective, root: Path) -> tuple[Path, str]:
        """Fetch into a staging dir, check the bundle and move it to ``root/<version>``.
        The staging dir is gone when this returns or raises (so before any ack)."""
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
        try:
            fetch_bundle(
                d.fetch_endpoint,
                d.version,
                tmp,
                sizes=d.file_sizes,
                node_id=self.node_id,
                token=self.config.fetch_token,
                ca_file=self.config.fetch_ca,
            )
            name = load_bundle(tmp).name
            final = root / d.version
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            return final, name
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # already gone once renamed

    def _prune(self, root: Path) -> None:
        dirs = sorted(
            (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for p in dirs[self.config.keep_bundles :]:
            shutil.rmtree(p, ignore_errors=True)
