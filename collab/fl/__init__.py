"""Federated learning: weighted FedAvg (+FedProx/FedAdam), client-level DP with
client-side noise shares and an RDP accountant, and CKKS aggregation under a public
context. See docs/fl.md for the protocol and trust model.

Exports are lazy: loading a config (``collab.fl.config``) needs no FL extra.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "FLConfig": "collab.fl.config",
    "load_config": "collab.fl.config",
    "RdpAccountant": "collab.fl.accountant",
    "compute_rdp": "collab.fl.accountant",
    "get_privacy_spent": "collab.fl.accountant",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'collab.fl' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)
