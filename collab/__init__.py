"""edgecollab: edge-cloud collaborative inference.

The public SDK is exported lazily (``import collab`` stays cheap and never imports
torch on an edge device); see ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import Any

from collab.errors import (
    AuthError,
    BadRequestError,
    BundleError,
    CancelledError,
    ClosedError,
    CodecError,
    CollabError,
    ConfigError,
    ControlPlaneError,
    DeadlineError,
    DuplicateUpdate,
    FLError,
    InferenceError,
    MalformedMessage,
    NotFoundError,
    NotSampled,
    PrivacyBudgetExceeded,
    RoundMismatch,
    SplitError,
    TooLargeError,
    TransportError,
    UpdateRejected,
    UploadRefused,
)

__version__ = "0.1.0"

# public name -> defining module
_LAZY: dict[str, str] = {
    "Bundle": "collab.bundle",
    "Manifest": "collab.bundle",
    "SplitPoint": "collab.bundle",
    "load_bundle": "collab.bundle",
    "split_model": "collab.split",
    "Codec": "collab.codec",
    "encode": "collab.codec",
    "decode": "collab.codec",
    "Client": "collab.edge.client",
    "ClientConfig": "collab.edge.config",
    "InferenceResult": "collab.edge.config",
}

__all__ = [
    "AuthError",
    "BadRequestError",
    "BundleError",
    "CancelledError",
    "ClosedError",
    "CodecError",
    "CollabError",
    "ConfigError",
    "ControlPlaneError",
    "DeadlineError",
    "DuplicateUpdate",
    "FLError",
    "InferenceError",
    "MalformedMessage",
    "NotFoundError",
    "NotSampled",
    "PrivacyBudgetExceeded",
    "RoundMismatch",
    "SplitError",
    "TooLargeError",
    "TransportError",
    "UpdateRejected",
    "UploadRefused",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'collab' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
