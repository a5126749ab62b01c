#!/usr/bin/env python3
"""Self-healing edge daemon: every fault of tests/test_edge_watchdog.py in one run, as a timeline.

    .venv/bin/python benchmarks/watchdog.py [--png docs/images/watchdog-timeline.png] [--json F]

One fleet edge daemon (real coordinator, cloud node and Mosquitto processes; the edge's
links to the cloud and to the broker run through the link emulator) serving the digits
bundle with a distilled student (``collab optimize --distill 0.5``), and two request
streams back to back, one asking for edge_only and one for cloud_only (auto would move a
slowed edge's requests to the cloud by itself, leaving the watchdog nothing to judge).

The faults in turn, each injected from outside the daemon: a 300 MiB leak (budget
400 MiB); the runtime slowed for 4 s so that FP32 takes 1.3x its latency budget (half the
20 ms deadline); a flipped byte in a model file on disk; a 3 s link cut. Printed: the time
from each injection to the watchdog's action and to the recovery, requests answered and
failed. The PNG: every request's latency (colour = path), the edge-only stream's edge
compute against the budget, the daemon's RSS, the fault windows and the actions.
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
from typing import Any

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


def run(work: Path) -> dict[str, Any]:
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
        load = st.enter_context(fl.Load(eport, x, policies=("edge_only", "cloud_only")).running())
        acts = st.enter_context(Actions(mport))
        rss = st.enter_context(fl.RssSampler(edge.pid))
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
        rss_samples = list(rss.samples)
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
        "rss_mib": [
            (t - t_start, v / 2**20) for t, v in rss_samples[::10] if t_start <= t <= t_end
        ],
        "memory_limit_mib": 0.85 * 400,
        "answers": [
            (a.at - t_start, a.latency_ms, a.edge_ms, a.path, a.policy)
            for a in answers
            if a.ok and t_start <= a.at <= t_end
        ],
    }


def plot(r: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    answers = r["answers"]
    colors = {"edge_only": "tab:green", "cloud_only": "tab:blue", "split": "tab:purple"}
    for path, color in colors.items():
        pts = [(t, ms) for t, ms, _, p, _ in answers if p == path]
        if pts:
            t, ms = zip(*pts, strict=True)
            top.scatter(t, ms, s=3, color=color, label=f"answered {path}", alpha=0.6)
    pts = [(t, e) for t, _, e, p, pol in answers if pol == "edge_only" and e > 0]
    if pts:
        t, e = zip(*pts, strict=True)
        mid.scatter(t, e, s=3, color="tab:green", alpha=0.6, label="edge compute, edge_only stream")
    mid.axhline(r["budget_ms"], color="tab:orange", ls="--", lw=0.8, label="latency budget")
    t, v = zip(*r["rss_mib"], strict=True)
    low.plot(t, v, color="k", lw=1, label="daemon RSS (sampled from /proc)")
    low.axhline(r["memory_limit_mib"], color="tab:orange", ls="--", lw=0.8, label="85 % of budget")
    for ax in (top, mid, low):
        for _name, a, b in r["events"]:
            ax.axvspan(a, max(b, a + 0.05), color="tab:red", alpha=0.12)
        for when, _ in r["actions"]:
            ax.axvline(when, color="0.4", lw=0.6, ls=":")
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
    for i, (name, a, _) in enumerate(r["events"]):
        top.text(a, 0.93 - 0.08 * (i % 2), name, transform=top.get_xaxis_transform(), fontsize=8)
    for i, (when, kind) in enumerate(r["actions"]):
        low.text(
            when, 0.05 + 0.3 * (i % 2), kind, rotation=90, fontsize=6,
            transform=low.get_xaxis_transform(),
        )  # fmt: skip
    top.set_yscale("log")
    mid.set_yscale("log")
    top.set_ylabel("request latency (ms)")
    mid.set_ylabel("edge compute (ms)")
    low.set_ylabel("RSS (MiB)")
    low.set_xlabel("time (s)")
    top.set_title(
        f"edge watchdog: {r['answered']} requests answered, {r['failed']} failed "
        "(red: fault until recovered; dotted: watchdog actions)"
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "watchdog-timeline.png")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="collab-watchdog-") as tmp:
        r = run(Path(tmp))
    for what, s in r["times_s"].items():
        print(f"{what:<36} {s * 1000:7.0f} ms")
    print(f"requests answered {r['answered']}, failed {r['failed']} {r['errors']}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    plot(r, args.png)
    print(f"timeline: {args.png}")
    return 0 if r["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
