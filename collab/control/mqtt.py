"""A small paho-mqtt 2.x wrapper: broker URLs, credentials/TLS, re-subscription on
reconnect, and error wrapping (paho errors become :class:`ControlPlaneError`; a broker
refusing the credentials, :class:`AuthError`).

Handlers run on paho's network thread; an exception in one is logged and dropped so a
bad message can never kill the loop.
"""

from __future__ import annotations

import argparse
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from collab.errors import AuthError, ConfigError, ControlPlaneError
from collab.files import read_text
from collab.log import logger

Handler = Callable[[str, bytes, bool], None]  # (topic, payload, retained)
# CONNACK reason codes of a refused login (MQTT 5 numbering; paho maps 3.1.1's 4 and 5 to
# them): bad user name or password, not authorized
AUTH_REFUSALS = (134, 135)


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    url: str  # mqtt://host:port or mqtts://host:port (TLS)
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # trust anchor for mqtts (default: system store)
    cert_file: Path | None = None  # client certificate (optional, mutual TLS)
    key_file: Path | None = None
    client_id: str = ""
    clean_session: bool = True
    keepalive: int = 10

    @property
    def tls(self) -> bool:
        return parse_broker_url(self.url)[0] == "mqtts"

    @property
    def host(self) -> str:
        return parse_broker_url(self.url)[1]

    @property
    def port(self) -> int:
        return parse_broker_url(self.url)[2]


def parse_broker_url(url: str) -> tuple[str, str, int]:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` -> (scheme, host, port)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"bad broker URL {url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as e:
        raise ConfigError(f"bad broker URL {url!r}: {e}") from e
    return parts.scheme, parts.hostname, port


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest); paho's helper builds a
    matcher object per call, too slow for thousands of messages a second."""
    fp, tp = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and fp[0] in ("+", "#"):
        return False
    for i, f in enumerate(fp):
        if f == "#":
            return True
        if i >= len(tp) or (f != "+" and f != tp[i]):
            return False
    return len(fp) == len(tp)


class MqttClient:
    """One broker connection with filter-based dispatch."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        will: tuple[str, bytes, int, bool] | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        parse_broker_url(config.url)
        self.config = config
        self._on_connect_hook = on_connect
        self._subs: dict[str, tuple[int, Handler]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._auth_refused = False
        self._connack = threading.Event()  # first CONNACK, success or not
        self._started = False
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=config.clean_session,
        )
        if config.username is not None:
            c.username_pw_set(config.username, config.password)
        if config.tls:
            try:
                c.tls_set(
                    ca_certs=str(config.ca_file) if config.ca_file else None,
                    certfile=str(config.cert_file) if config.cert_file else None,
                    keyfile=str(config.key_file) if config.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as e:
                raise ConfigError(f"MQTT TLS setup failed: {e}") from e
        if will is not None:
            topic, payload, qos, retain = will
            c.will_set(topic, payload, qos=qos, retain=retain)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.max_inflight_messages_set(1000)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_message = self._handle_message
        self._client = c

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 10.0) -> MqttClient:
        try:
            self._client.connect(
                self.config.host, self.config.port, keepalive=self.config.keepalive
            )
        except (OSError, ssl.SSLError) as e:
            raise ControlPlaneError(f"cannot connect to MQTT broker {self.config.url}: {e}") from e
        self._client.loop_start()
        self._started = True
        if not self._connack.wait(timeout) or not self._connected.is_set():
            self.stop()
            why = self._refused or f"no CONNACK within {timeout}s"
            error = AuthError if self._auth_refused else ControlPlaneError
            raise error(f"MQTT broker {self.config.url} refused the connection: {why}")
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()

    def __enter__(self) -> MqttClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # ------------------------------------------------------------ pub/sub
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        wait: float | None = None,
    ) -> None:
        """Publish; with ``wait`` block until the broker acknowledged it (QoS 1)."""
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except (ValueError, OSError) as e:
            raise ControlPlaneError(f"MQTT publish to {topic} failed: {e}") from e
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise ControlPlaneError(f"MQTT publish to {topic} failed: {paho.error_string(info.rc)}")
        if wait is not None:
            try:
                info.wait_for_publish(wait)
            except (ValueError, RuntimeError) as e:
                raise ControlPlaneError(f"MQTT publish to {topic} not acknowledged: {e}") from e
            if not info.is_published():
                raise ControlPlaneError(f"MQTT publish to {topic} not acknowledged within {wait}s")

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> None:
        with self._lock:
            self._subs[topic_filter] = (qos, handler)
        if self._connected.is_set():
            self._client.subscribe(topic_filter, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subs.pop(topic_filter, None)
        if self._connected.is_set():
            self._client.unsubscribe(topic_filter)

    # ------------------------------------------------------------ paho callbacks
    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        if rc.is_failure:
            self._refused = str(rc)
            self._auth_refused = rc.value in AUTH_REFUSALS
            logger.warning("MQTT %s refused connection: %s", self.config.url, rc)
            if not self._connack.is_set():  # never connected: don't hammer the broker
                client.disconnect()
            self._connack.set()
            return
        with self._lock:
            subs = [(f, q) for f, (q, _) in self._subs.items()]
        if subs:
            client.subscribe(subs)
        logger.debug("MQTT connected to %s", self.config.url)
        self._connected.set()
        self._connack.set()
        if self._on_connect_hook is not None:
            try:
                self._on_connect_hook()
            except Exception:
                logger.exception("MQTT on_connect hook failed")

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        self._connected.clear()
        if self._started:
            logger.warning("MQTT disconnected from %s (%s); reconnecting", self.config.url, rc)

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            handlers = [h for f, (_, h) in self._subs.items() if topic_matches(f, msg.topic)]
        for h in handlers:
            try:
                h(msg.topic, bytes(msg.payload), bool(msg.retain))
            except Exception:
                logger.exception("MQTT handler for %s failed", msg.topic)


# ---------------------------------------------------------------- CLI helpers


def add_mqtt_args(parser: argparse.ArgumentParser, *, broker_required: bool = False) -> None:
    """The broker/credential/TLS flags every role shares."""
    g = parser.add_argument_group("MQTT control plane")
    g.add_argument(
        "--broker",
        required=broker_required,
        default=None,
        help="broker URL mqtt://HOST:PORT (mqtts:// for TLS)",
    )
    g.add_argument("--mqtt-username", default=None, help="MQTT user name (per-node credentials)")
    g.add_argument(
        "--mqtt-password-file",
        type=Path,
        default=None,
        help="file holding the MQTT password (or set COLLAB_MQTT_PASSWORD)",
    )
    g.add_argument("--mqtt-ca", type=Path, default=None, help="CA certificate for mqtts://")
    g.add_argument("--mqtt-cert", type=Path, default=None, help="client certificate (mutual TLS)")
    g.add_argument("--mqtt-key", type=Path, default=None, help="client key (mutual TLS)")


def mqtt_config_from_args(
    args: argparse.Namespace, *, url: str | None = None, client_id: str = ""
) -> MqttConfig:
    password = os.environ.get("COLLAB_MQTT_PASSWORD")
    if args.mqtt_password_file is not None:
        password = read_text(args.mqtt_password_file, "--mqtt-password-file").strip()
    broker = url or args.broker
    if broker is None:
        raise ConfigError("--broker is required")
    return MqttConfig(
        url=broker,
        username=args.mqtt_username,
        password=password,
        ca_file=args.mqtt_ca,
        cert_file=args.mqtt_cert,
        key_file=args.mqtt_key,
        client_id=client_id,
    )


def with_client_id(config: MqttConfig, client_id: str, *, clean_session: bool = True) -> MqttConfig:
    return replace(config, client_id=client_id, clean_session=clean_session)
