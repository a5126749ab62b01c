"""Federated learning: weighted FedAvg (+FedProx/FedAdam), client-level DP with
client-side noise shares and an RDP accountant, and CKKS aggregation under a public
context. See docs/fl.md for the protocol and trust model."""

from __future__ import annotations

from collab.fl.accountant import RdpAccountant, compute_rdp, get_privacy_spent
from collab.fl.config import FLConfig, load_config

__all__ = ["FLConfig", "RdpAccountant", "compute_rdp", "get_privacy_spent", "load_config"]
