"""The edge watchdog's settings (part of ``collab edge``'s one config, ``EdgeConfig.watchdog``;
edge_node.cli derives one flag per field)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collab.settings import check_bounds, setting


@dataclass(frozen=True, kw_only=True)
class WatchdogConfig:
    enabled: bool = setting(
        True, help="run the self-healing watchdog (edge_node.watchdog)", flag="--watchdog"
    )
    check_interval_s: float = setting(
        0.5,
        help="seconds between memory and latency checks",
        lo=0,
        lo_open=True,
        flag="--watchdog-interval",
        metavar="S",
    )
    memory_budget_mb: float | None = setting(
        None,
        help="the device's memory budget for this daemon in MiB (None: the cgroup limit, "
        "else physical memory)",
        lo=0,
        lo_open=True,
        flag="--memory-budget",
        metavar="MIB",
    )
    memory_threshold: float = setting(
        0.85,
        help="restart the inference runtime when RSS exceeds this share of the budget",
        lo=0,
        hi=1,
        lo_open=True,
    )
    restart_cooldown_s: float = setting(
        10.0,
        help="seconds after a runtime restart before another one (a leak outside the runtime "
        "must not restart it in a loop)",
        lo=0,
        flag="--restart-cooldown",
        metavar="S",
    )
    escalate_after: int = setting(
        3,
        help="runtime restarts in a row that leave RSS over the threshold before collab edge "
        "exits for its supervisor to restart it (exit code 75; 0 = never)",
        lo=0,
    )
    latency_budget: float = setting(
        1.0,
        help="the FP32 model's edge compute may take this fraction of a request's deadline",
        lo=0,
        lo_open=True,
    )
    latency_window_s: float = setting(
        2.0,
        help="latency must stay over budget this long before the lightest variant takes over, "
        "and below --latency-recover as long before FP32 returns (hysteresis)",
        lo=0,
        lo_open=True,
        flag="--latency-window",
        metavar="S",
    )
    latency_recover: float = setting(
        0.7,
        help="return to FP32 once its predicted compute is below this fraction of the budget",
        lo=0,
        hi=1,
        lo_open=True,
    )
    latency_min_samples: int = setting(
        5, help="requests a latency window needs before it is judged", lo=1
    )
    integrity_interval_s: float = setting(
        60.0,
        help="seconds between re-hashes of the bundle's files on disk",
        lo=0,
        lo_open=True,
        flag="--integrity-interval",
        metavar="S",
    )
    reachability_interval_s: float = setting(
        1.0,
        help="seconds between checks of the cloud and broker links (offline mode)",
        lo=0,
        lo_open=True,
        flag="--reachability-interval",
        metavar="S",
    )
    telemetry_queue: int = setting(
        64, help="telemetry intervals kept while the broker is down (oldest dropped)", lo=1
    )
    fault_injection: Path | None = setting(
        None,
        help="DEBUG, tests only: a directory whose files inject faults into this daemon "
        "(leak_mb, slowdown; see docs/control-plane.md). Off unless given",
        metavar="DIR",
    )
    log_interval_s: float = setting(
        30.0,
        help="a repeated watchdog log line at most this often",
        lo=0,
        flag="--watchdog-log-interval",
        metavar="S",
    )

    def __post_init__(self) -> None:
        check_bounds(self)
