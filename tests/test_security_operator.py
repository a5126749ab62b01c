"""Attacks on the coordinator's gRPC services, against a real `collab coordinator` process
and Mosquitto: an open operator API, idle streams starving it, bundle fetches without a
node credential, uploads that die half-way."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_control_support import SimFleet, StatusWatcher, tiny_bundle, wait_until

from collab.bundle import load_bundle, update_bundle
from collab.cli import main as collab_main
from collab.control.transfer import bundle_files, fetch_bundle, fetch_token, iter_bundle_chunks
from collab.errors import BundleError, TransportError
from collab.procs import Broker, collab_process, free_port
from collab.proto import control_pb2 as pb
from collab.proto import control_pb2_grpc as pb_grpc
from coordinator.auth import ADMIN_TOKEN_ENV, FetchKey, load_or_create_fetch_key
from coordinator.operator_client import CoordinatorClient

TOKEN = "operator-token-0123456789"
_S = grpc.StatusCode


@dataclass(frozen=True)
class Coord:
    proc: subprocess.Popen[bytes]
    root: Path  # the db dir: registry, keys, bundles/
    fetch: str  # node-facing endpoint
    operator: str

    @property
    def key(self) -> FetchKey:
        return load_or_create_fetch_key(self.root / "coordinator.fetch-key")

    def staging(self) -> list[Path]:
        return list((self.root / "bundles").glob(".upload-*"))


@contextmanager
def coordinator(broker: Broker, tmp: Path, *extra: str) -> Iterator[Coord]:
    port, oport = free_port(), free_port()
    root = tmp / "coord"
    args = ["coordinator", "--broker", broker.url, "--db", str(root / "registry.db")]
    args += ["--listen", f"127.0.0.1:{port}", "--operator-listen", f"127.0.0.1:{oport}", *extra]
    log = tmp / f"coordinator-{time.monotonic_ns()}.log"
    with collab_process(args, port=oport, log=log) as proc:  # the operator server starts last
        yield Coord(proc, root, f"127.0.0.1:{port}", f"127.0.0.1:{oport}")


def _sizes(bundle: Path) -> dict[str, int]:
    """What a directive signs for ``bundle``: every file's size (the fetch checks them)."""
    return {rel: (bundle / rel).stat().st_size for rel in bundle_files(bundle)}


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()  # type: ignore[attr-defined, no-any-return]


def operator_stub(c: Coord) -> pb_grpc.CoordinatorServiceStub:
    return pb_grpc.CoordinatorServiceStub(grpc.insecure_channel(c.operator))


def big_bundle(out: Path, mib: int) -> Path:
    """A valid bundle carrying ``mib`` MiB: more than gRPC's flow-control windows, so a
    reader that stops reading really stalls the sender."""
    tiny_bundle(out, rev=900 + mib)

    def add_blob(root: Path, m: Any) -> Any:
        (root / "blob.bin").write_bytes(os.urandom(mib * 1024 * 1024))
        return replace(m, files={**m.files, "blob.bin": ""})

    update_bundle(out, add_blob)
    return out


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)


def test_forged_upload_and_rollout_without_the_admin_token_are_refused(
    broker: Broker, tmp_path: Path
) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    bundle = tiny_bundle(tmp_path / "evil")
    with coordinator(broker, tmp_path, "--admin-token-file", str(token_file)) as c:
        stub = operator_stub(c)
        for md in ((), bearer("guess"), bearer(TOKEN + "x"), (("authorization", TOKEN),)):
            chunks = iter_bundle_chunks(bundle)
            code = code_of(lambda c=chunks, m=md: stub.Upload(c, timeout=10, metadata=m))
            assert code == _S.UNAUTHENTICATED, md
        assert not any((c.root / "bundles").iterdir())  # nothing staged, stored or signed
        version = load_bundle(bundle).version
        start = pb.StartRolloutRequest(version=version, percent=100)
        assert code_of(lambda: stub.StartRollout(start, timeout=10)) == _S.UNAUTHENTICATED
        assert code_of(lambda: stub.Rollback(pb.RollbackRequest(), timeout=10)) == (
            _S.UNAUTHENTICATED
        )
        assert code_of(lambda: stub.GetRollout(pb.GetRolloutRequest(), timeout=10)) == (
            _S.UNAUTHENTICATED
        )
        # the operator's own token works, and shows nothing was rolled out
        with CoordinatorClient(c.operator, token=TOKEN) as op:
            assert op.upload(bundle).version == version
        assert code_of(lambda: stub.StartRollout(start, timeout=10)) == _S.UNAUTHENTICATED
        get = pb.GetRolloutRequest()
        assert code_of(lambda: stub.GetRollout(get, timeout=10, metadata=bearer(TOKEN))) == (
            _S.NOT_FOUND
        )


def test_admin_token_from_env_end_to_end_with_collab_rollout(
    broker: Broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1 = tiny_bundle(tmp_path / "v1", rev=5)
    monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)  # the coordinator process inherits it
    root = tmp_path / "coord"
    with (
        coordinator(broker, tmp_path) as c,
        SimFleet(tmp_path / "nodes", broker.url, root / "coordinator.ed25519.pub") as fleet,
        StatusWatcher(broker.url) as watch,
    ):
        fleet.spawn("e1", "edge")
        wait_until(lambda: (n := watch.node("e1")) and n.online, 20, "e1 online")
        monkeypatch.delenv(ADMIN_TOKEN_ENV)
        assert collab_main(["rollout", "--coordinator", c.operator, "status"]) == 1
        assert "admin token" in capsys.readouterr().err
        monkeypatch.setenv(ADMIN_TOKEN_ENV, TOKEN)
        argv = ["rollout", "--coordinator", c.operator, "publish", str(v1), "--wait", "20"]
        assert collab_main(argv) == 0
        out = capsys.readouterr().out
        assert "state=completed" in out and "acked 1" in out, out
        assert fleet.state("e1")["version"] == load_bundle(v1).version  # fetched with its token


def _start(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab.cli", "coordinator", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_open_operator_api_beyond_loopback_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != ADMIN_TOKEN_ENV}
    db = ["--db", str(tmp_path / "coord" / "registry.db")]
    r = _start([*db, "--operator-listen", "0.0.0.0:0"], env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a token" in lines[0] and ADMIN_TOKEN_ENV in lines[0]
    assert not (tmp_path / "coord").exists()  # refused before anything started
    # a token file others can read is no secret either
    loose = tmp_path / "loose.token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    r = _start([*db, "--operator-listen", "0.0.0.0:0", "--admin-token-file", str(loose)], env)
    assert r.returncode == 2 and "chmod 600" in r.stderr, r.stderr
    # nor is one short enough to guess, from a file or from the environment
    short = tmp_path / "short.token"
    short.write_text("hunter2\n")
    short.chmod(0o600)
    r = _start([*db, "--operator-listen", "0.0.0.0:0", "--admin-token-file", str(short)], env)
    assert r.returncode == 2 and "fewer than 16" in r.stderr, r.stderr
    r = _start([*db, "--operator-listen", "0.0.0.0:0"], {**env, ADMIN_TOKEN_ENV: "hunter2"})
    assert r.returncode == 2 and "fewer than 16" in r.stderr, r.stderr
    assert not (tmp_path / "coord").exists()


def test_fetch_without_or_with_a_wrong_node_credential_is_refused(
    broker: Broker, tmp_path: Path
) -> None:
    bundle = tiny_bundle(tmp_path / "b")
    with coordinator(broker, tmp_path) as c:
        with CoordinatorClient(c.operator) as op:
            version = op.upload(bundle).version
        stub = pb_grpc.BundleServiceStub(grpc.insecure_channel(c.fetch))
        key = c.key
        attempts = {
            "no token": ("e1", ()),
            "another node's token": ("e1", bearer(key.token_for("e2"))),
            "a made-up token": ("e1", bearer("0" * 64)),
            "no node id": ("", bearer(key.token_for(""))),
            "a token from another fetch key": ("e1", bearer(FetchKey(b"x" * 32).token_for("e1"))),
        }
        for what, (node_id, md) in attempts.items():
            req = pb.FetchRequest(version=version, node_id=node_id)
            code = code_of(lambda req=req, md=md: list(stub.Fetch(req, timeout=10, metadata=md)))
            assert code == _S.UNAUTHENTICATED, what
        # the node's fetch fails for good (no retry loop) and writes nothing
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(BundleError, match="refused the fetch"):
            fetch_bundle(
                c.fetch,
                version,
                dest,
                sizes=_sizes(bundle),
                node_id="e1",
                token=key.token_for("e2"),
            )
        assert not any(dest.iterdir())
        # the token `collab mqtt-auth --fetch-key` issues with the node's credentials works
        auth = tmp_path / "auth"
        fetch_key = str(c.root / "coordinator.fetch-key")
        argv = ["mqtt-auth", "--out", str(auth), "--node", "e1", "--fetch-key", fetch_key]
        assert collab_main([*argv, "--python-hash"]) == 0
        issued = auth / "credentials" / "e1.fetch"
        assert issued.stat().st_mode & 0o777 == 0o600
        fetch_bundle(
            c.fetch, version, dest, sizes=_sizes(bundle), node_id="e1", token=fetch_token(issued)
        )
        assert load_bundle(dest).version == version


def test_idle_fetch_streams_do_not_block_the_operator_api(broker: Broker, tmp_path: Path) -> None:
    big, small = big_bundle(tmp_path / "big", mib=2), tiny_bundle(tmp_path / "small")
    with coordinator(broker, tmp_path, "--fetch-stream-timeout", "6") as c:
        with CoordinatorClient(c.operator) as op:
            version = op.upload(big).version
        key = c.key
        # a reader that never widens its flow-control window (as a raw HTTP/2 client that
        # sends no WINDOW_UPDATE): the server's send blocks once the window is full
        ch = grpc.insecure_channel(c.fetch, options=[("grpc.http2.bdp_probe", 0)])
        stub = pb_grpc.BundleServiceStub(ch)

        def fetch(node_id: str) -> Any:  # started, never read
            req = pb.FetchRequest(version=version, node_id=node_id)
            return stub.Fetch(req, timeout=60, metadata=bearer(key.token_for(node_id)))

        def hold(node_id: str) -> Any | None:
            """A stream the server admitted (its first chunk read, then never another)."""
            call = fetch(node_id)
            try:
                next(call)
            except grpc.RpcError as e:
                assert e.code() == _S.RESOURCE_EXHAUSTED, e  # type: ignore[attr-defined]
                return None
            return call

        held = [hold("greedy"), hold("greedy")]
        assert hold("greedy") is None  # one node holds at most 2 streams
        held += [hold(f"n{i // 2}") for i in range(18)]  # 20 idle streams from 10 node ids
        assert sum(h is not None for h in held) == 16  # every fetch worker pinned, 4 refused
        probe = pb.FetchRequest(version=version, node_id="probe")
        md = bearer(key.token_for("probe"))
        time.sleep(1.0)  # and they stay pinned: nobody reads them
        assert code_of(lambda: next(stub.Fetch(probe, timeout=5, metadata=md))) == (
            _S.RESOURCE_EXHAUSTED
        )
        t0 = time.monotonic()
        with CoordinatorClient(c.operator, timeout=5) as op:  # answers within its deadline
            assert op.upload(small).version == load_bundle(small).version
        assert time.monotonic() - t0 < 5

        # each stream has a deadline: the stalled ones are cancelled and the workers come back
        def fetched() -> bool:
            dest = Path(tempfile.mkdtemp(dir=tmp_path))
            small_version = load_bundle(small).version
            try:
                fetch_bundle(
                    c.fetch,
                    small_version,
                    dest,
                    sizes=_sizes(small),
                    node_id="late",
                    token=key.token_for("late"),
                )
            except TransportError:  # RESOURCE_EXHAUSTED while the streams are still held
                return False
            return load_bundle(dest).version == small_version

        wait_until(fetched, 15, "a fetch once the idle streams timed out")
        for call in held:
            if call is not None:
                call.cancel()
        ch.close()


def test_failed_uploads_leave_no_staging(broker: Broker, tmp_path: Path) -> None:
    big = big_bundle(tmp_path / "big", mib=4)
    release = threading.Event()

    def half_then_wait() -> Iterator[pb.BundleChunk]:
        for i, chunk in enumerate(iter_bundle_chunks(big)):
            if i == 4:
                release.wait(30)
                return
            yield chunk

    with coordinator(broker, tmp_path) as c:
        call = operator_stub(c).Upload.future(half_then_wait(), timeout=30)
        wait_until(c.staging, 10, "the upload being staged")
        call.cancel()  # the operator's side dies mid-upload
        wait_until(lambda: not c.staging(), 10, "staging removed after the cancelled upload")
        assert not any((c.root / "bundles").iterdir())
        # the coordinator itself dies mid-upload: the next start removes the leftovers
        call = operator_stub(c).Upload.future(half_then_wait(), timeout=30)
        wait_until(c.staging, 10, "the second upload being staged")
        c.proc.kill()
        c.proc.wait(10)
        assert c.staging()
        release.set()
    with coordinator(broker, tmp_path):
        assert not c.staging() and not any((c.root / "bundles").iterdir())
