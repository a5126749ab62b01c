"""Who may reach the FL aggregator's gRPC port, and as whom.

The aggregator listens on loopback unless told otherwise, and off loopback only with
client certificates (mutual TLS) or an explicit ``--insecure``. With client certificates
an upload's ``client_id`` is the one its certificate names (subject CN), not whatever its
header claims: a client holding a valid certificate for X cannot take Y's slot. The TLS
plumbing itself is :mod:`collab.transport`'s, shared with the cloud node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from collab.errors import AuthError, ConfigError
from collab.settings import check_bounds, setting
from collab.transport import TlsConfig, check_listener, server_credentials

#: gRPC message limit of a client's channel: an aggregate chunk (f64 values, or a CKKS
#: sum) is larger than any upload chunk; the server derives its own from the model.
CLIENT_MAX_MESSAGE_BYTES = 64 << 20
#: where a client's certificate and key paths take its id (several clients, one flag)
CLIENT_ID_FIELD = "{client_id}"


@dataclass(frozen=True, kw_only=True)
class AggregatorEndpoint:
    """The aggregator's listener: address, TLS, and the limits on its streams."""

    listen: str = setting(
        "127.0.0.1:50072",
        help="gRPC address (port 0 = any free port); off loopback it needs "
        "--tls-client-ca, or --insecure",
        metavar="HOST:PORT",
    )
    advertise: str = setting(
        "", help="HOST:PORT clients dial; empty = the listen address", metavar="HOST:PORT"
    )
    tls_cert: Path | None = setting(None, help="server certificate (PEM)")
    tls_key: Path | None = setting(None, help="server private key (PEM)")
    tls_client_ca: Path | None = setting(
        None,
        help="require client certificates signed by this CA (PEM); an upload's client id "
        "is then its certificate's subject CN",
    )
    insecure: bool = setting(
        False,
        help="allow listening off loopback without client certificates: anyone reaching "
        "the port can upload as any sampled client (and, without TLS, read the updates)",
    )
    max_uploads: int = setting(
        16, help="upload streams open at once (one more: RESOURCE_EXHAUSTED)", lo=1, metavar="N"
    )
    max_fetches: int = setting(
        16,
        help="aggregate downloads open at once, apart from the uploads' (one more: "
        "RESOURCE_EXHAUSTED)",
        lo=1,
        metavar="N",
    )
    stream_timeout_s: float = setting(
        60.0,
        help="a stream still open after this long is cancelled (an idle or trickling peer)",
        lo=0,
        lo_open=True,
        flag="--stream-timeout",
        metavar="S",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        check_listener(
            self.listen,
            tls_cert=self.tls_cert,
            tls_key=self.tls_key,
            tls_client_ca=self.tls_client_ca,
            insecure=self.insecure,
            risk="upload as any sampled client",
        )

    @property
    def authenticates(self) -> bool:
        """Every connection carries a client certificate the aggregator verified."""
        return self.tls_client_ca is not None

    def credentials(self) -> grpc.ServerCredentials | None:
        """TLS (mutual with a client CA) credentials, or None for plaintext."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return server_credentials(self.tls_cert, self.tls_key, self.tls_client_ca)


@dataclass(frozen=True, kw_only=True)
class ParticipantTls:
    """How a client (or the key holder) dials the aggregator: the CA it trusts and its
    own certificate. ``{client_id}`` in a path is replaced by the client's id, so one flag
    serves the several clients of ``collab fl client --index 0-9``."""

    tls_ca: Path | None = setting(
        None, help="CA certificate of the aggregator's TLS (PEM); enables TLS"
    )
    tls_cert: Path | None = setting(
        None,
        help=f"this client's certificate (PEM; {CLIENT_ID_FIELD} = the client id), "
        "whose subject CN is the client id",
    )
    tls_key: Path | None = setting(
        None, help=f"this client's private key (PEM; {CLIENT_ID_FIELD} = the client id)"
    )
    tls_server_name: str | None = setting(
        None,
        help="name the aggregator's certificate must carry, whatever address a round "
        "announces; unset = the announced host",
    )

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_ca is None and (self.tls_cert is not None or self.tls_server_name):
            raise ConfigError("--tls-cert/--tls-key/--tls-server-name need --tls-ca")

    def for_client(self, client_id: str) -> TlsConfig | None:
        """The channel's TLS for ``client_id``; None = plaintext."""
        if self.tls_ca is None:
            return None

        def own(p: Path | None) -> Path | None:
            return None if p is None else Path(str(p).replace(CLIENT_ID_FIELD, client_id))

        return TlsConfig(
            ca_cert=self.tls_ca,
            client_cert=own(self.tls_cert),
            client_key=own(self.tls_key),
            server_name=self.tls_server_name,
        )


def peer_client_id(context: grpc.ServicerContext) -> str:
    """The client id the peer's verified certificate names: its subject CN."""
    names = context.auth_context().get("x509_common_name") or []
    if len(names) != 1:
        raise AuthError("the client certificate names no client id (subject CN)")
    return names[0].decode("utf-8", "replace")


def check_uploader(context: grpc.ServicerContext, claimed: str) -> None:
    """AuthError unless the peer's certificate is for ``claimed``."""
    holder = peer_client_id(context)
    if holder != claimed:
        raise AuthError(f"the client certificate is for {holder!r}, the upload claims {claimed!r}")
