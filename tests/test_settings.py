"""One default per setting: the daemons' CLI flags and the scenario specs are derived
from ClientConfig / EdgeConfig / CloudConfig, so none has a default of its own."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud_node import cli as cloud_cli
from cloud_node.config import CloudConfig
from collab.edge.config import ClientConfig
from collab.errors import ConfigError
from collab.scenario.schema import RUNNER_CLOUD, RUNNER_EDGE, CloudSpec, EdgeSpec, parse_scenario
from collab.settings import Setting, settings, to_argv
from edge_node import cli as edge_cli
from edge_node.config import EdgeConfig
from edge_node.watchdog_config import WatchdogConfig

MINIMAL = textwrap.dedent("""\
    model: {example: digits, calibrate: false}
    network:
      segments:
        - {duration_s: 2, up_mbps: 5, down_mbps: 10, rtt_ms: 20}
    """)


def _parser(configure: Callable[[argparse.ArgumentParser], object]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    configure(p)
    return p


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    ("configure", "classes", "unflagged"),
    [
        (
            edge_cli.configure,
            (ClientConfig, EdgeConfig, WatchdogConfig),
            {"tls", "bundle", "client", "mqtt", "watchdog"},
        ),
        (cloud_cli.configure, (CloudConfig,), {"bundles"}),
    ],
)
def test_every_cli_flag_default_is_the_field_default(
    configure: Callable[[argparse.ArgumentParser], object],
    classes: tuple[type, ...],
    unflagged: set[str],
) -> None:
    actions = {a.dest: a for a in _parser(configure)._actions}
    for cls in classes:
        for name, default in _defaults(cls).items():
            if name in unflagged:
                continue
            assert name in actions, f"{cls.__name__}.{name} has no flag"
            assert actions[name].default == default, (cls.__name__, name)


def test_no_flags_give_the_config_defaults() -> None:
    edge = edge_cli.config_from_args(_parser(edge_cli.configure).parse_args(["--bundle", "b"]))
    assert edge == EdgeConfig(bundle=Path("b")) and edge.client == ClientConfig()
    cloud = cloud_cli.config_from_args(_parser(cloud_cli.configure).parse_args(["--bundle", "b"]))
    assert cloud == CloudConfig(bundles=(Path("b"),))


def test_daemons_listen_on_loopback_unless_asked() -> None:
    assert EdgeConfig(bundle=Path("b")).listen.startswith("127.0.0.1:")
    assert CloudConfig(bundles=(Path("b"),)).listen.startswith("127.0.0.1:")


def test_bounds_are_the_fields_everywhere() -> None:
    with pytest.raises(ConfigError, match=r"slowdown must be >= 1\.0"):
        ClientConfig(slowdown=0.5)
    with pytest.raises(ConfigError, match=r"slowdown must be >= 1\.0"):
        edge_cli.config_from_args(
            _parser(edge_cli.configure).parse_args(["--bundle", "b", "--slowdown", "0.5"])
        )
    with pytest.raises(ConfigError, match=r"s\.yaml:6: edges\.slowdown: must be >= 1\.0"):
        parse_scenario(MINIMAL + "edges:\n  slowdown: 0.5\n", source="s.yaml")
    with pytest.raises(ConfigError, match=r"cloud.max_batch_size: must be >= 1"):
        parse_scenario(MINIMAL + "cloud: {max_batch_size: 0}\n", source="s.yaml")


def test_scenario_setting_keys_are_typed_strictly_and_all_reported() -> None:
    text = (
        MINIMAL + "edges:\n  slowdown: '5'\n  max_probe_bytes: 2048.0\n  strict_deadline: 1\n"
        "cloud: {workers: true, max_wait_ms: .inf}\n"
    )
    with pytest.raises(ConfigError) as e:
        parse_scenario(text, source="s.yaml")
    assert sorted(str(e.value).splitlines()) == [
        "s.yaml:6: edges.slowdown: must be a number, got '5'",
        "s.yaml:7: edges.max_probe_bytes: must be an integer, got 2048.0",
        "s.yaml:8: edges.strict_deadline: must be true or false, got 1",
        "s.yaml:9: cloud.max_wait_ms: must be finite, got inf",
        "s.yaml:9: cloud.workers: must be an integer, got True",
    ]
    # what the config itself checks beyond one field's type and bounds names the section
    with pytest.raises(ConfigError, match=r"s\.yaml:5: edges: unknown quantizer 'bogus'"):
        parse_scenario(MINIMAL + "edges:\n  codec: bogus\n", source="s.yaml")


def test_scenario_specs_default_to_the_config_defaults() -> None:
    sc = parse_scenario(MINIMAL, source="s.yaml")
    assert sc.edge.client == ClientConfig() and sc.cloud.argv() == []
    # nothing copied: the specs hold the config (edges) or its flags (cloud), no settings of their own
    assert [f.name for f in dataclasses.fields(EdgeSpec)] == ["count", "client"]
    assert [f.name for f in dataclasses.fields(CloudSpec)] == ["settings"]


def _other(s: Setting) -> Any:
    """A valid value different from the default."""
    if s.kind is bool:
        return not s.default
    if s.kind is str:
        return {"codec": "f16+zstd1", "execution": "sessions"}.get(s.name, "split:x")
    base = s.default if s.default is not None else 1
    return base + 1 if s.kind is int else base * 2 or 1.0


def _yaml(values: dict[str, Any]) -> str:
    return (
        "{"
        + ", ".join(
            f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()
        )
        + "}"
    )


def test_scenario_keys_are_the_config_fields_by_name() -> None:
    edge = {s.name: _other(s) for s in settings(ClientConfig, skip=RUNNER_EDGE)}
    cloud = {s.name: _other(s) for s in settings(CloudConfig, skip=RUNNER_CLOUD)}
    sc = parse_scenario(MINIMAL + f"edges: {_yaml(edge)}\ncloud: {_yaml(cloud)}\n", source="s.yaml")
    assert sc.edge.client == ClientConfig(**edge)
    # the node process gets them as its flags
    argv = ["--bundle", "b", *sc.cloud.argv()]
    assert cloud_cli.config_from_args(_parser(cloud_cli.configure).parse_args(argv)) == CloudConfig(
        bundles=(Path("b"),), **cloud
    )
    for key in (*RUNNER_EDGE, "tls"):  # the runner's, per run
        with pytest.raises(ConfigError, match=f"edges.{key}: unknown key"):
            parse_scenario(MINIMAL + f"edges: {{{key}: 1}}\n", source="s.yaml")


def test_to_argv_round_trips_through_the_flags() -> None:
    values = {"max_batch_size": 3, "max_wait_ms": 0.25, "wait_when_idle": True, "warmup": False}
    argv = to_argv(settings(CloudConfig), values)
    assert argv == [
        "--max-batch-size",
        "3",
        "--max-wait-ms",
        "0.25",
        "--wait-when-idle",
        "--no-warmup",
    ]
    args = _parser(cloud_cli.configure).parse_args(["--bundle", "b", *argv])
    assert {k: getattr(args, k) for k in values} == values
