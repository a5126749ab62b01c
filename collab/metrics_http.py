"""The /metrics HTTP endpoint shared by the cloud and edge daemons' metric sets."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, start_http_server


class MetricsEndpoint:
    """Mixin: serves ``self.registry`` over HTTP and shuts the server down on close."""

    registry: CollectorRegistry
    _http: Any = None

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics endpoint; returns the bound port (``port`` 0 = any free)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
