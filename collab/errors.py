"""The one exception tree of edgecollab.

Every error the library raises on purpose derives from :class:`CollabError`, so
callers can catch one type. Third-party errors (grpc, paho, onnxruntime, torch)
are wrapped where they enter the library, with the original kept as ``__cause__``.

CollabError
├── ConfigError        invalid user input: flags, config/scenario files, arguments
├── SplitError         a model cannot be traced, split or exported
├── BundleError        a bundle is missing, incomplete, tampered or unsigned
├── CodecError         a feature frame cannot be encoded or decoded
├── TransportError     a remote peer failed (gRPC / MQTT), wraps the library error
│   └── DeadlineError  a request could not be answered before its deadline
├── ControlPlaneError  coordinator / registry / rollout failures
└── FLError            federated-learning failures (bad update, budget exhausted)
    └── PrivacyBudgetExceeded
"""

from __future__ import annotations


class CollabError(Exception):
    """Base class of every error edgecollab raises on purpose."""


class ConfigError(CollabError, ValueError):
    """Invalid user input (flags, files, arguments); raised before work starts."""


class SplitError(CollabError):
    """A model cannot be traced, cut or exported."""


class BundleError(CollabError):
    """A bundle directory is missing files, was modified, or fails verification."""


class CodecError(CollabError, ValueError):
    """A frame cannot be encoded or decoded; the only error the decoder raises."""


class TransportError(CollabError):
    """A remote call failed; wraps grpc/paho errors."""


class DeadlineError(TransportError, TimeoutError):
    """The request cannot be answered within its deadline on any path."""


class ControlPlaneError(CollabError):
    """Coordinator, registry or rollout failure."""


class FLError(CollabError):
    """Federated-learning failure: malformed or late update, bad round config."""


class PrivacyBudgetExceeded(FLError):
    """Running another round would exceed the configured (epsilon, delta) budget."""


__all__ = [
    "BundleError",
    "CodecError",
    "CollabError",
    "ConfigError",
    "ControlPlaneError",
    "DeadlineError",
    "FLError",
    "PrivacyBudgetExceeded",
    "SplitError",
    "TransportError",
]
