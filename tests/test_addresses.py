"""HOST:PORT handling, one function for every daemon: parsing, the endpoint a server
advertises, and the default node id."""

from __future__ import annotations

import socket

import pytest

from collab.control import topics
from collab.errors import ConfigError
from collab.transport import advertised, parse_address


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("cloud.example:1", ("cloud.example", 1)),
        ("[::1]:65535", ("::1", 65535)),
    ],
)
def test_parse_address(addr: str, expected: tuple[str, int]) -> None:
    assert parse_address(addr) == expected


@pytest.mark.parametrize("addr", ["", "50051", "host:", ":50051", "host:x", "host:65536", "host:0"])
def test_parse_address_refuses(addr: str) -> None:
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_address(addr)


def test_port_zero_only_where_allowed() -> None:
    assert parse_address("0.0.0.0:0", allow_zero=True) == ("0.0.0.0", 0)


def test_advertised_names_the_bound_port_and_replaces_a_wildcard_host() -> None:
    assert advertised("10.0.0.5:0", 50123, wildcard_host="h") == "10.0.0.5:50123"
    assert advertised("0.0.0.0:50051", 50051, wildcard_host="h") == "h:50051"
    assert advertised("[::]:0", 7, wildcard_host="127.0.0.1") == "127.0.0.1:7"
    with pytest.raises(ConfigError):
        advertised(":0", 7, wildcard_host="h")


def test_default_node_id_is_a_valid_node_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "my host/" + "x" * 80)
    node_id = topics.default_node_id("edge", 50061)
    assert node_id == "edge-my-host-" + "x" * 32 + "-50061"
    assert topics.check_node_id(node_id) == node_id
