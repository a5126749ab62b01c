#!/usr/bin/env python3
"""Self-healing edge daemon: every fault of tests/test_edge_watchdog.py in one run, as a timeline.

    .venv/bin/python benchmarks/watchdog.py [--png docs/images/watchdog-timeline.png] [--json F]

One fleet edge daemon (real coordinator, cloud node and Mosquitto processes; the edge's
links to the cloud and to the broker run through the link emulator) serving the digits
bundle with a distilled student (``collab optimize --distill 0.5``), and two request
streams back to back: one with the daemon's policy (auto, which is edge-only for this
small model) and one asking for cloud_only. The faults in turn, each injected from
outside the daemon: a 300 MiB leak (budget 400 MiB), the runtime slowed so that FP32 takes
1.3x its latency budget (half the 20 ms deadline) for 4 s, a flipped byte in a model
file on disk, a 3 s link cut. Printed: the time from each injection to the watchdog's
action and to the recovery, and requests answered / failed; the PNG shows every
request's latency over time (colour = path), the fault windows and the actions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collab.bundle import load_bundle  # noqa: E402
from collab.cli import main as collab_main  # noqa: E402
from collab.procs import collab_process, free_port, mosquitto  # noqa: E402
from collab.split.examples import example_bundle  # noqa: E402
from coordinator.auth import write_fetch_tokens  # noqa: E402
from coordinator.operator_client import CoordinatorClient  # noqa: E402
from edge_node.watchdog import ACTIONS  # noqa: E402
from tests.helpers import faultload as fl  # noqa: E402

NODE = "bench-edge"


class Actions:
    """Polls the daemon's action counters (every 50 ms): when each one went up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[tuple[float, str]] = []
        self._last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                m = fl.metrics(self.port)
            except OSError:
                continue
            for kind in ACTIONS:
                v = m.get(f"collab_edge_watchdog_actions_total{{kind={kind}}}", 0.0)
                if v > self._last.get(kind, 0.0):
                    self.seen.append((time.monotonic(), kind))
                self._last[kind] = v

    def __enter__(self) -> Actions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _first(self, kind: str, after: float) -> float | None:
        return next((t for t, k in list(self.seen) if k == kind and t >= after), None)

    def first(self, kind: str, after: float) -> float:
        """When ``kind`` first went up after ``after`` (waits for it)."""
        fl.until(lambda: self._first(kind, after) is not None, 30, kind)
        t = self._first(kind, after)
        assert t is not None
        return t


def _variant_bundle(work: Path) -> Path:
    out = work / "digits-distilled"
    args = ["optimize", str(example_bundle("digits")), "--out", str(out)]
    args += ["--calibration", "example:digits", "--distill", "0.5", "--splits", "none"]
    if collab_main([*args, "--no-progress"]) != 0:
        raise SystemExit("collab optimize failed")
    return out


def run(work: Path) -> dict[str, object]:
    served = work / "served"
    shutil.copytree(_variant_bundle(work), served)
    m = load_bundle(served).manifest
    version = load_bundle(served).version
    faults = work / "faults"
    faults.mkdir()
    budget_ms = 0.5 * fl.DEADLINE_MS
    factor = 1.3 * budget_ms / m.full_ms
    cport, port, oport, eport, mport = (free_port() for _ in range(5))
    events: list[tuple[str, float, float]] = []  # fault, start, end (monotonic)
    times: dict[str, float] = {}
    with ExitStack() as st:
        broker = st.enter_context(mosquitto())
        coord = ["coordinator", "--broker", broker.url, "--db", str(work / "coord" / "r.db")]
        coord += ["--listen", f"127.0.0.1:{port}", "--operator-listen", f"127.0.0.1:{oport}"]
        st.enter_context(collab_process(coord, port=port, log=work / "coordinator.log"))
        cloud_link = st.enter_context(fl.through_link(("127.0.0.1", cport)))
        mqtt_link = st.enter_context(fl.through_link((broker.host, broker.port)))
        cloud = ["cloud", "--bundle", str(served), "--listen", f"127.0.0.1:{cport}"]
        cloud += ["--broker", broker.url, "--node-id", "bench-cloud"]
        cloud += ["--advertise", f"127.0.0.1:{cloud_link.port}"]
        st.enter_context(collab_process(cloud, port=cport, log=work / "cloud.log"))
        write_fetch_tokens(work / "coord" / "coordinator.fetch-key", work / "tok", [NODE])
        args = ["edge", "--bundle", str(served), "--listen", f"127.0.0.1:{eport}"]
        args += ["--metrics-port", str(mport), "--fault-injection", str(faults)]
        args += ["--deadline-ms", str(fl.DEADLINE_MS), "--latency-budget", "0.5"]
        args += ["--latency-window", "1", "--watchdog-interval", "0.2"]
        args += ["--memory-budget", "400", "--integrity-interval", "1"]
        args += ["--reachability-interval", "0.25", "--probe-interval", "0.2"]
        args += ["--broker", f"mqtt://127.0.0.1:{mqtt_link.port}", "--node-id", NODE]
        args += ["--trusted-key", str(work / "coord" / "coordinator.ed25519.pub")]
        args += ["--fetch-token-file", str(work / "tok" / f"{NODE}.fetch")]
        args += ["--work-dir", str(work / "edge")]
        edge = st.enter_context(collab_process(args, port=eport, log=work / "edge.log"))
        x = np.zeros(m.input_shape, np.float32)
        load = st.enter_context(fl.Load(eport, x, policies=("", "cloud_only")).running())
        acts = st.enter_context(Actions(mport))
        fl.until(lambda: any(a.path == "cloud_only" for a in load.answers), 30, "cloud path")
        with CoordinatorClient(f"127.0.0.1:{oport}") as c:  # the signed directive a re-fetch needs
            c.upload(served)
            c.start(version)
            fl.until(
                lambda: any(n.node_id == NODE and n.state == "acked" for n in c.status().nodes),
                30,
                "ack",
            )
        t_start = time.monotonic()
        time.sleep(1.0)
        with tqdm(total=4, desc="faults") as bar:
            t0 = fl.inject(faults, "leak_mb", "300")
            times["leak: runtime restart"] = acts.first("runtime_restart", t0) - t0
            events.append(("leak 300 MiB", t0, t0 + times["leak: runtime restart"]))
            bar.update()
            time.sleep(1.5)
            t0 = fl.inject(faults, "slowdown", f"{factor:.1f}")
            times["slow: variant switch"] = acts.first("variant_switch", t0) - t0
            time.sleep(max(4.0 - times["slow: variant switch"], 0.5))
            t1 = fl.inject(faults, "slowdown", None)
            times["slow: FP32 back after the fault"] = acts.first("variant_restore", t1) - t1
            events.append((f"runtime x{factor:.0f}", t0, t1))
            bar.update()
            time.sleep(1.5)
            t0 = time.monotonic()
            fl.flip_byte(served / m.full_paths()[0])
            times["byte flip: detected"] = acts.first("integrity_fail", t0) - t0
            times["byte flip: re-fetched"] = acts.first("refetch", t0) - t0
            events.append(("flipped byte", t0, t0 + times["byte flip: re-fetched"]))
            bar.update()
            time.sleep(1.5)
            t0 = time.monotonic()
            cloud_link.cut(True)
            mqtt_link.cut(True)
            times["cut: offline mode"] = acts.first("offline_enter", t0) - t0
            time.sleep(max(3.0 - times["cut: offline mode"], 0.5))
            t1 = time.monotonic()
            cloud_link.cut(False)
            mqtt_link.cut(False)
            times["cut: cloud back after the link"] = acts.first("offline_exit", t1) - t1
            times["cut: broker back after the link"] = acts.first("broker_back", t1) - t1
            events.append(("link cut", t0, t1))
            bar.update()
        time.sleep(1.5)
        t_end = time.monotonic()
        answers = list(load.answers)
        seen = list(acts.seen)
    failed = [a for a in answers if not a.ok]
    return {
        "times_s": times,
        "answered": len(answers) - len(failed),
        "failed": len(failed),
        "errors": sorted({a.error for a in failed})[:5],
        "edge_returncode": edge.returncode,
        "factor": factor,
        "budget_ms": budget_ms,
        "events": [(n, a - t_start, b - t_start) for n, a, b in events],
        "actions": [(t - t_start, k) for t, k in seen if t_start <= t <= t_end],
        "answers": [
            (a.at - t_start, a.latency_ms, a.edge_ms, a.path, a.policy)
            for a in answers
            if a.ok and t_start <= a.at <= t_end
        ],
    }


def plot(r: dict[str, object], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.2))
    answers = r["answers"]
    assert isinstance(answers, list)
    colors = {"edge_only": "tab:green", "cloud_only": "tab:blue", "split": "tab:purple"}
    for path, color in colors.items():
        pts = [(t, ms) for t, ms, _, p, _ in answers if p == path]
        if pts:
            t, ms = zip(*pts, strict=True)
            ax.scatter(t, ms, s=3, color=color, label=f"answered {path}", alpha=0.6)
    for i, (name, a, b) in enumerate(r["events"]):  # type: ignore[attr-defined]
        ax.axvspan(a, max(b, a + 0.05), color="tab:red", alpha=0.12)
        ax.text(a, 0.97 - 0.07 * (i % 2), name, transform=ax.get_xaxis_transform(), fontsize=8)
    for t, kind in r["actions"]:  # type: ignore[attr-defined]
        ax.axvline(t, color="0.4", lw=0.6, ls=":")
        ax.text(t, 0.02, kind, rotation=90, fontsize=6, transform=ax.get_xaxis_transform())
    ax.axhline(r["budget_ms"], color="tab:orange", ls="--", lw=0.8, label="latency budget")
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("request latency (ms)")
    ax.set_title(
        f"edge watchdog: {r['answered']} requests answered, {r['failed']} failed "
        "(red: fault until recovered; dotted: watchdog actions)"
    )
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "watchdog-timeline.png")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="collab-watchdog-") as tmp:
        r = run(Path(tmp))
    for what, s in r["times_s"].items():  # type: ignore[attr-defined]
        print(f"{what:<36} {s * 1000:7.0f} ms")
    print(f"requests answered {r['answered']}, failed {r['failed']} {r['errors']}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    plot(r, args.png)
    print(f"timeline: {args.png}")
    return 0 if r["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
