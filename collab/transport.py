"""gRPC plumbing shared by the edge SDK, the cloud node and the coordinator.

One place decides how channels are built (round_robin over every given cloud
address, retries of UNAVAILABLE on another replica, keepalive, message limits,
TLS), so that edge and cloud agree on limits and a dead replica is routed around.
grpc errors enter the library here and leave as :class:`TransportError`.
No torch import: this runs on edge devices.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from collab.errors import ConfigError, DeadlineError, TransportError
from collab.files import read_bytes
from collab.proto import collab_pb2

SERVICE_NAME = "collab.v1.CloudService"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
KEEPALIVE_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000

# Infer/Decode/Probe are pure functions of the request, so a call that failed to reach
# a replica (UNAVAILABLE) is safe to retry on another one.
_RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.01s",
    "maxBackoff": "0.2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


# --------------------------------------------------------------------------- errors


class RpcError(TransportError):
    """A failed RPC; ``code`` is the gRPC status code, ``details`` the peer's message."""

    def __init__(self, message: str, *, code: grpc.StatusCode, details: str) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class RpcDeadlineError(RpcError, DeadlineError):
    """The RPC's deadline passed (DEADLINE_EXCEEDED)."""


def wrap_rpc_error(e: grpc.RpcError, *, what: str = "rpc") -> RpcError:
    """Turn a grpc error into the project's error tree, keeping the status code."""
    code_fn = getattr(e, "code", None)
    details_fn = getattr(e, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or str(e)
    code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    cls = RpcDeadlineError if code == grpc.StatusCode.DEADLINE_EXCEEDED else RpcError
    return cls(f"{what} failed: {code.name}: {details}", code=code, details=details)


@contextmanager
def rpc_errors(what: str = "rpc") -> Iterator[None]:
    """``with rpc_errors("Decode"): stub.Decode(...)`` raises RpcError instead of grpc's."""
    try:
        yield
    except grpc.RpcError as e:
        raise wrap_rpc_error(e, what=what) from e


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """Client-side TLS: the CA that signed the servers, optionally our own cert/key
    (for servers that require client certificates), and the name to verify when the
    target is an IP address whose certificate carries a DNS name."""

    ca_cert: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None


def _read(path: Path | str | None, what: str) -> bytes | None:
    return None if path is None else read_bytes(path, what)


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    if (tls.client_cert is None) != (tls.client_key is None):
        raise ConfigError("client TLS needs both a certificate and a key")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_cert, "CA certificate"),
        private_key=_read(tls.client_key, "client key"),
        certificate_chain=_read(tls.client_cert, "client certificate"),
    )


def server_credentials(
    cert: Path | str, key: Path | str, client_ca: Path | str | None = None
) -> grpc.ServerCredentials:
    """Server TLS; with ``client_ca`` every client must present a cert signed by it."""
    pair = (_read(key, "TLS key"), _read(cert, "TLS certificate"))
    ca = _read(client_ca, "client CA certificate")
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=ca,  # type: ignore[list-item]
        require_client_auth=ca is not None,
    )


# --------------------------------------------------------------------------- channels


def parse_address(addr: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ConfigError otherwise.
    ``allow_zero``: port 0 (bind any free port) is valid for listen addresses."""
    host, sep, port_s = addr.rpartition(":")
    lowest = 0 if allow_zero else 1
    if not sep or not host or not port_s.isdigit() or not lowest <= int(port_s) < 65536:
        raise ConfigError(f"bad address {addr!r}: expected HOST:PORT")
    return host.strip("[]"), int(port_s)


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this host only (127.0.0.0/8, ::1 or ``localhost``); a wildcard
    or any other name is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback(listen: str) -> bool:
    """Whether a server listening on ``listen`` (HOST:PORT) is reachable from this host only."""
    return is_loopback_host(parse_address(listen, allow_zero=True)[0])


def check_listener(
    listen: str,
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
    insecure: bool,
    risk: str,
) -> None:
    """A server's listen address and TLS settings, checked the same way for every role:
    certificate and key go together, a client CA needs them, and a listener reachable off
    this host without client certificates is refused unless ``insecure`` says so (``risk``:
    what anyone reaching it could then do)."""
    parse_address(listen, allow_zero=True)
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        raise ConfigError("--tls-client-ca needs --tls-cert/--tls-key")
    if tls_client_ca is None and not insecure and not is_loopback(listen):
        raise ConfigError(
            f"refusing to listen on {listen} without client certificates: anyone reaching it "
            f"could {risk}. Give --tls-cert, --tls-key and --tls-client-ca, listen on "
            "loopback, or accept that with --insecure"
        )


def advertised(listen: str, port: int, *, wildcard_host: str) -> str:
    """The endpoint peers dial to reach a server listening on ``listen`` and bound to
    ``port``: its host, where a wildcard (every interface) becomes ``wildcard_host``."""
    host, _ = parse_address(listen, allow_zero=True)
    if host in ("0.0.0.0", "::"):
        host = wildcard_host
    return f"{host}:{port}"


def _resolve(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"cannot resolve {host!r}: {e}") from e
    v4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    return str(v4[0] if v4 else infos[0][4][0])


def target_for(addresses: Sequence[str]) -> str:
    """A gRPC target naming every address, so the round_robin policy sees them all.

    One address keeps the DNS resolver (which may itself yield several backends);
    several are resolved once to IPs and listed with the ipv4:/ipv6: scheme."""
    if not addresses:
        raise ConfigError("no cloud address given")
    if len(addresses) == 1:
        parse_address(addresses[0])
        return f"dns:///{addresses[0]}"
    ips = [(_resolve(h), p) for h, p in map(parse_address, addresses)]
    families = {ipaddress.ip_address(ip).version for ip, _ in ips}
    if len(families) != 1:
        raise ConfigError(f"cannot mix IPv4 and IPv6 cloud addresses: {list(addresses)}")
    if families == {4}:
        return "ipv4:" + ",".join(f"{ip}:{p}" for ip, p in ips)
    return "ipv6:" + ",".join(f"[{ip}]:{p}" for ip, p in ips)


def service_config(*, retries: bool = True, health_check: bool = True) -> str:
    """round_robin, retries of UNAVAILABLE, and client-side health checking so that a
    replica that reports NOT_SERVING (e.g. draining on SIGTERM) gets no new calls."""
    cfg: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if health_check:
        cfg["healthCheckConfig"] = {"serviceName": SERVICE_NAME}
    if retries:
        cfg["methodConfig"] = [{"name": [{"service": SERVICE_NAME}], "retryPolicy": _RETRY_POLICY}]
    return json.dumps(cfg)


def channel_options(
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    keepalive_ms: int = KEEPALIVE_MS,
    retries: bool = True,
    health_check: bool = True,
    server_name: str | None = None,
) -> list[tuple[str, Any]]:
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 1 if retries else 0),
        ("grpc.service_config", service_config(retries=retries, health_check=health_check)),
        # Reconnect to a restarted replica or a returning link within half a second instead
        # of after seconds of backoff: an edge falls back to local compute meanwhile, so
        # every second of backoff is a second of slower answers. A reconnect attempt is one
        # TCP handshake, cheap at two a second.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return opts


def server_options(
    *, max_message_bytes: int, keepalive_ms: int = KEEPALIVE_MS
) -> list[tuple[str, Any]]:
    """Server limits matching :func:`channel_options` (clients' keepalive pings allowed)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min(keepalive_ms, 10_000)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


def make_channel(
    addresses: str | Sequence[str],
    *,
    tls: TlsConfig | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    keepalive_ms: int = KEEPALIVE_MS,
    retries: bool = True,
    health_check: bool = True,
    aio: bool = False,
) -> Any:
    """A channel spreading calls round-robin over ``addresses`` (``"host:port"`` each).

    ``aio=True`` returns a ``grpc.aio.Channel`` (must be created inside a running loop)."""
    addrs = [addresses] if isinstance(addresses, str) else list(addresses)
    target = target_for(addrs)
    opts = channel_options(
        max_message_bytes=max_message_bytes,
        keepalive_ms=keepalive_ms,
        retries=retries,
        health_check=health_check,
        server_name=tls.server_name if tls else None,
    )
    mod: Any = grpc.aio if aio else grpc
    if tls is None:
        return mod.insecure_channel(target, options=opts)
    return mod.secure_channel(target, channel_credentials(tls), options=opts)


# --------------------------------------------------------------------------- wire types


@dataclass(frozen=True, kw_only=True)
class ServerTiming:
    """Where a request's time went on the cloud node (edges learn its load from this)."""

    queue_ms: float = 0.0
    compute_ms: float = 0.0
    decode_ms: float = 0.0
    batch_size: int = 0
    total_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class LoadReport:
    queue_depth: int = 0
    inflight: int = 0
    queue_ms_ewma: float = 0.0
    compute_ms_ewma: float = 0.0


def timing_to_proto(t: ServerTiming) -> collab_pb2.ServerTiming:
    return collab_pb2.ServerTiming(
        queue_ms=t.queue_ms,
        compute_ms=t.compute_ms,
        decode_ms=t.decode_ms,
        batch_size=t.batch_size,
        total_ms=t.total_ms,
    )


def timing_from_proto(p: collab_pb2.ServerTiming) -> ServerTiming:
    return ServerTiming(
        queue_ms=p.queue_ms,
        compute_ms=p.compute_ms,
        decode_ms=p.decode_ms,
        batch_size=p.batch_size,
        total_ms=p.total_ms,
    )


def load_to_proto(r: LoadReport) -> collab_pb2.LoadReport:
    return collab_pb2.LoadReport(
        queue_depth=r.queue_depth,
        inflight=r.inflight,
        queue_ms_ewma=r.queue_ms_ewma,
        compute_ms_ewma=r.compute_ms_ewma,
    )


def load_from_proto(p: collab_pb2.LoadReport) -> LoadReport:
    return LoadReport(
        queue_depth=p.queue_depth,
        inflight=p.inflight,
        queue_ms_ewma=p.queue_ms_ewma,
        compute_ms_ewma=p.compute_ms_ewma,
    )


__all__ = [
    "SERVICE_NAME",
    "LoadReport",
    "RpcDeadlineError",
    "RpcError",
    "ServerTiming",
    "TlsConfig",
    "advertised",
    "channel_credentials",
    "channel_options",
    "check_listener",
    "is_loopback",
    "is_loopback_host",
    "load_from_proto",
    "load_to_proto",
    "make_channel",
    "parse_address",
    "rpc_errors",
    "server_credentials",
    "server_options",
    "service_config",
    "target_for",
    "timing_from_proto",
    "timing_to_proto",
    "wrap_rpc_error",
]
