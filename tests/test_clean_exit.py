"""Processes using collab.Client exit cleanly, and the warm-up feeds every session what it
declares.

Before the fix the client's warm-up thread (a daemon) was still inside ONNX Runtime at
interpreter exit and the process aborted: exit code 134, "terminate called without an
active exception" on stderr, in 39 of 40 runs of the scripts below. It is racy only in
principle, so each script runs twice per bundle. The scripts run in a subprocess because
the abort happens at interpreter exit.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from collab.edge.client import Client
from collab.edge.runtime import EdgeRuntime
from collab.ort import dummy_inputs, make_session, run
from collab.procs import free_port

REPEAT = 2

_X = "x = np.zeros(c.bundle.manifest.input_shape, np.float32)\n"
SCRIPTS = {
    "edge_only_close": "c = collab.Client(sys.argv[1], policy='edge_only')\n"
    + _X
    + "c.infer(x)\nc.close()\n",
    # sys.argv[2]: a loopback port with nothing listening
    "auto_unreachable_cloud_close": (
        "c = collab.Client(sys.argv[1], cloud=[sys.argv[2]], policy='auto')\n"
        + _X
        + "assert c.infer(x).path == 'edge_only'\nc.close()\n"
    ),
    "never_closed": (
        "c = collab.Client(sys.argv[1], cloud=[sys.argv[2]], policy='auto')\n" + _X + "c.infer(x)\n"
    ),
    "context_manager": (
        "with collab.Client(sys.argv[1], policy='auto') as c:\n    " + _X.strip() + "\n"
        "    c.infer(x)\n"
    ),
}


def _run(body: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys\nimport numpy as np\nimport collab\n" + body
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def _assert_clean(p: subprocess.CompletedProcess[str]) -> None:
    assert p.returncode == 0 and "terminate called" not in p.stderr, (
        f"exit code {p.returncode}, stderr:\n{p.stderr[-3000:]}"
    )


@pytest.mark.parametrize("model", ["digits", "resnet"])
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_process_using_a_client_exits_cleanly(
    script: str, model: str, request: pytest.FixtureRequest
) -> None:
    bundle: Path = request.getfixturevalue(f"{model}_bundle")
    for _ in range(REPEAT):
        _assert_clean(_run(SCRIPTS[script], str(bundle), f"127.0.0.1:{free_port()}"))


def _client_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before`` by the client (all are named collab-*), still alive."""
    return [
        t.name for t in threading.enumerate() if t not in before and t.name.startswith("collab-")
    ]


def test_close_joins_every_thread_the_client_started(resnet_bundle: Path) -> None:
    """Warm-ups (also the swapped-out bundle's), the network monitor and the grace timer of
    a replaced cloud: none is left running once close() returns."""
    before = set(threading.enumerate())
    c = Client(
        resnet_bundle, cloud=[f"127.0.0.1:{free_port()}"], policy="auto", initial_probe=False
    )
    c.infer(np.zeros(c.bundle.manifest.input_shape, np.float32))
    c.set_cloud([f"127.0.0.1:{free_port()}"])  # the old channel closes after a grace period
    c.swap_bundle(resnet_bundle)  # a second warm-up; the first one is told to stop
    assert _client_threads(before)  # something to join (the grace timer waits seconds)
    c.close()
    assert _client_threads(before) == []
    c.close()  # idempotent


class _StopAfter(threading.Event):
    """An Event that reads as set from its (n+1)-th check on."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.checks_left = n

    def is_set(self) -> bool:
        self.checks_left -= 1
        return self.checks_left < 0


def test_warm_up_stops_between_sessions_and_runs(resnet_bundle: Path) -> None:
    stopped = threading.Event()
    stopped.set()
    rt = EdgeRuntime(resnet_bundle)
    assert rt.warm(stop=stopped) is False and rt.loaded() == 0
    assert (
        rt.warm(stop=_StopAfter(1)) is False
    )  # stops between the first session and its warm-up run
    assert rt.loaded() == 1
    assert rt.warm(stop=threading.Event()) is True
    assert rt.loaded() == len(rt.all_paths())


def test_dummy_inputs_follow_every_declared_input(tmp_path: Path) -> None:
    """Every input gets its own dtype and shape; a symbolic dim takes the known shape of
    that input when one is given (same rank), else 1."""
    specs: list[tuple[str, int, list[str | int | None]]] = [
        ("a", TensorProto.FLOAT, ["n", 3, "h"]),
        ("b", TensorProto.INT64, ["n"]),
        ("c", TensorProto.UINT8, [2, "k"]),
        ("d", TensorProto.FLOAT16, ["m", 4]),
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in specs],
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in specs],
        [helper.make_tensor_value_info(f"{n}_out", t, s) for n, t, s in specs],
    )
    path = tmp_path / "multi.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    sess = make_session(path)
    feeds = dummy_inputs(sess, {0: (2, 3, 5), 1: (7, 7)})  # input 1's hint has the wrong rank
    assert {k: (v.dtype, v.shape) for k, v in feeds.items()} == {
        "a": (np.float32, (2, 3, 5)),
        "b": (np.int64, (1,)),
        "c": (np.uint8, (2, 1)),
        "d": (np.float16, (1, 4)),
    }
    assert run(sess, feeds).shape == (2, 3, 5)  # ORT accepts them all


@pytest.fixture(scope="module")
def flatten_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from torch import nn

    from collab.split import split_model

    class FlattenNet(nn.Module):
        """conv -> flatten -> conv -> flatten -> linear at 224x224. The flattens are reshapes
        with a -1 batch: with a dynamic batch, ONNX shape inference loses every other dim,
        so the tails declare inputs like [batch, 'Reshape..._dim_1', ...]."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(4, 4, 3, stride=4, padding=1)
            self.fc = nn.Linear(4 * 14 * 14, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(self.conv(x)).reshape(-1, 4 * 56 * 56)
            y = self.conv2(y.reshape(-1, 4, 56, 56))
            return self.fc(y.reshape(-1, 4 * 14 * 14))

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("flatten") / "bundle"
    return split_model(
        FlattenNet().eval(),
        torch.randn(3, 3, 224, 224),
        out,
        name="flatten224",
        runs=2,
        progress=False,
    ).root


def test_warm_up_of_a_flatten_cut_logs_no_ort_error(flatten_bundle: Path) -> None:
    """Zeros of shape 1 in every symbolic dim made the Conv/Gemm of these tails fail (ORT
    logs that to stderr itself); the warm-up takes the cut shapes from the manifest."""
    rt = EdgeRuntime(flatten_bundle)
    symbolic = [
        i.shape
        for sp in rt.manifest.split_points  # the segment each tail starts with
        for i in rt.session(rt.manifest.tail_paths(sp.name)[0]).get_inputs()
        if any(isinstance(d, str) for d in i.shape[1:])
    ]
    assert symbolic, "the test model no longer has tails with symbolic feature dims"
    p = _run(
        "c = collab.Client(sys.argv[1], policy='edge_only')\n"
        "import threading\n"
        "for t in threading.enumerate():\n"
        "    if t.name == 'collab-warm':\n"
        "        t.join()\n"
        "c.close()\n",
        str(flatten_bundle),
    )
    _assert_clean(p)
    assert "onnxruntime" not in p.stderr and "warm-up" not in p.stderr, p.stderr[-3000:]
