"""The partitioner: cut a PyTorch model into head/tail ONNX pieces at every valid point.

``split_model`` is imported lazily so ``collab inspect`` (and this package) stay torch-free.
"""

from __future__ import annotations

from typing import Any

__all__ = ["split_model"]


def __getattr__(name: str) -> Any:
    if name == "split_model":
        from collab.split.api import split_model

        return split_model
    raise AttributeError(f"module 'collab.split' has no attribute {name!r}")
