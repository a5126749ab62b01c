"""Accuracy per round, one line per mode (plain / DP / HE), as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def plot_accuracy(
    results: Mapping[str, Sequence[Any]], path: Path, *, title: str = "", note: str = ""
) -> Path:
    """``note``: shown under the title (an insecure deterministic run's "no privacy guarantee")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for mode, pts in results.items():
        if not pts:
            continue
        label = mode
        eps = [p.epsilon for p in pts if p.epsilon is not None]
        if eps:
            label += f" (ε={eps[-1]:.2f})"
        ax.plot(
            [p.round for p in pts], [100 * p.accuracy for p in pts], marker="o", ms=3, label=label
        )
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title((title or "federated learning") + (f"\n{note}" if note else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
