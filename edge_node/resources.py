"""What the watchdog measures of this process and this device: resident memory and the
memory budget it is held to (Linux /proc and cgroup files; no extra dependency)."""

from __future__ import annotations

import os
from pathlib import Path

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
_NO_LIMIT = 1 << 60  # cgroup v1 reports "no limit" as a huge number


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_memory_bytes() -> int:
    """The container's memory limit when it has one, else the machine's physical memory."""
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for p in _CGROUP_LIMITS:
        try:
            text = p.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < min(_NO_LIMIT, physical):
            return int(text)
    return physical
