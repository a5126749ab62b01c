"""Operator commands: clear errors for bad input, nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_control_support import coordinator_config, tiny_bundle

from collab.cli import main as collab_main
from collab.procs import Broker
from coordinator.daemon import Coordinator


def test_rollout_cli_errors_and_success(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    with Coordinator(coordinator_config(broker.url, tmp_path)) as c:
        ep = f"127.0.0.1:{c.operator_port}"

        def run(*argv: str) -> tuple[int, str]:
            capsys.readouterr()
            rc = collab_main(["rollout", "--coordinator", ep, *argv])
            out = capsys.readouterr()
            return rc, out.out + out.err

        rc, out = run("status")
        assert rc == 1 and "no rollout yet" in out
        rc, out = run("rollback")
        assert rc == 1 and "nothing to roll back to" in out
        rc, out = run("start", "f" * 64)
        assert rc == 1 and "no stored bundle" in out
        rc, out = run("publish", str(tmp_path / "missing"))
        assert rc == 1 and "not a bundle" in out
        rc, out = run("publish", str(bundle), "--upload-only")
        assert rc == 0 and "stored tiny" in out
        version = out.split()[2]
        rc, out = run("start", version, "--percent", "150")
        assert rc == 1 and "percent must be in 1..100" in out
        assert c.rollout_status() is None  # nothing was started by the bad calls
        rc, out = run("start", version, "--wait", "5")
        assert rc == 0 and "state=completed" in out  # no nodes: trivially complete


def test_operator_token(broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-operator-token\n")
    token.chmod(0o600)
    with Coordinator(
        coordinator_config(broker.url, tmp_path, admin_token="s3cret-operator-token")
    ) as c:
        ep = f"127.0.0.1:{c.operator_port}"
        assert (
            collab_main(
                ["rollout", "--coordinator", ep, "publish", str(tiny_bundle(tmp_path / "b"))]
            )
            == 1
        )
        assert "admin token" in capsys.readouterr().err
        assert not c.store.model_names  # nothing stored without the token
        assert (
            collab_main(
                [
                    "rollout",
                    "--coordinator",
                    ep,
                    "--token-file",
                    str(token),
                    "publish",
                    str(tmp_path / "b"),
                    "--wait",
                    "5",
                ]
            )
            == 0
        )
        assert c.rollout_status() is not None


def test_auth_and_status_cli_errors(
    tmp_path: Path, broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert collab_main(["mqtt-auth", "--out", str(tmp_path / "a")]) == 1
    assert collab_main(["mqtt-auth", "--out", str(tmp_path / "a"), "--node", "a/b"]) == 1
    assert collab_main(["mqtt-auth", "--out", str(tmp_path / "a"), "--node", "coordinator"]) == 1
    assert collab_main(["status", "--broker", broker.url, "--timeout", "0.5"]) == 1
    assert "is a coordinator running" in capsys.readouterr().err
    assert collab_main(["status", "--broker", "http://x"]) == 1
