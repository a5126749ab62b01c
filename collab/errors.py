"""The one exception tree of edgecollab.

Every error the library raises on purpose derives from :class:`CollabError`, so
callers can catch one type. Third-party errors (grpc, paho, onnxruntime, torch)
are wrapped where they enter the library, with the original kept as ``__cause__``.
A servicer answers each class with the gRPC status of :mod:`collab.rpc_status`
(this module stays free of grpc: an edge device imports it without a server).

CollabError
├── ConfigError             invalid user input: flags, files, arguments, a request's input
│   ├── MissingExtraError   (collab.extras) a command needs an extra that is not installed
│   └── FieldError          (collab.yamlcfg) a config file's field is wrong: names file:line
├── BadRequestError         a peer's request does not fit: wrong shape, dtype, batch, size
├── NotFoundError           unknown model, version, split point, bundle, rollout, federation
├── TooLargeError           a request asks for more than the node's limits allow
├── OverloadedError         the node's queue is full: retry after ``retry_after_ms``
├── ClosedError             the client or node was closed (or is draining): no new work
├── AuthError               a caller presented a missing or wrong credential
├── SplitError              a model cannot be traced, split or exported
├── BundleError             a bundle is missing, incomplete, tampered or unsigned
├── CodecError              a feature frame cannot be encoded or decoded
├── InferenceError          ONNX Runtime rejected an input or failed while running
├── TransportError          a remote peer failed (gRPC / MQTT), wraps the library error
│   ├── DeadlineError       a request could not be answered before its deadline
│   │   └── LateError       the queue ahead makes it late: refused before queueing
│   ├── CancelledError      the caller cancelled its RPC (went away) before the answer
│   └── RpcError            (collab.transport) a failed RPC, with the peer's status code
│       └── RpcDeadlineError   (collab.transport) DEADLINE_EXCEEDED; also a DeadlineError
├── ControlPlaneError       coordinator / registry / rollout failures
│   └── MalformedMessage    a control-plane payload does not parse or breaks the schema
└── FLError                 federated-learning failures (round config, HE, accounting)
    ├── PrivacyBudgetExceeded  another round would exceed the (epsilon, delta) budget
    ├── UploadRefused       (client side) the aggregator refused an upload
    └── UpdateRejected      the round refuses an upload's content: garbage, length, NaN
        ├── RoundMismatch   no open round, a closed/future one, other base version or context
        ├── NotSampled      the client was not sampled in this round
        └── DuplicateUpdate the client already reported in this round
"""

from __future__ import annotations


class CollabError(Exception):
    """Base class of every error edgecollab raises on purpose."""


class ConfigError(CollabError, ValueError):
    """Invalid user input (flags, files, arguments, a request's input); raised before work
    starts."""


class BadRequestError(CollabError):
    """A request that does not fit: a frame of the wrong shape, dtype or batch, a negative
    size."""


class NotFoundError(CollabError):
    """The named model, version, split point, bundle, rollout or federation is unknown."""


class TooLargeError(CollabError):
    """A request asks for more than the node's limits allow."""


class OverloadedError(CollabError):
    """The node's queue is full (its predicted wait is over the bound): the node's state,
    not the request, is at fault; ``retry_after_ms`` is when the queued work is done."""

    def __init__(self, message: str, *, retry_after_ms: float) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class ClosedError(CollabError):
    """The client or node was closed, or is draining, and accepts no new work."""


class AuthError(CollabError):
    """A caller presented a missing or wrong credential."""


class SplitError(CollabError):
    """A model cannot be traced, cut or exported."""


class BundleError(CollabError):
    """A bundle directory is missing files, was modified, or fails verification."""


class CodecError(CollabError, ValueError):
    """A frame cannot be encoded or decoded; the only error the decoder raises."""


class InferenceError(CollabError):
    """ONNX Runtime rejected an input or failed while running a model."""


class TransportError(CollabError):
    """A remote call failed; wraps grpc/paho errors."""


class DeadlineError(TransportError, TimeoutError):
    """The request cannot be answered within its deadline on any path."""


class LateError(DeadlineError):
    """The work queued ahead makes the request miss its deadline: refused at once, never
    computed, so the caller can still finish it elsewhere; ``retry_after_ms`` is when
    that queue is predicted to be done (None: the deadline had passed on arrival)."""

    def __init__(self, message: str, *, retry_after_ms: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class CancelledError(TransportError):
    """The caller cancelled its RPC (went away) before it was answered; not computed."""


class ControlPlaneError(CollabError):
    """Coordinator, registry or rollout failure."""


class MalformedMessage(ControlPlaneError):
    """A payload that does not parse or violates the schema's invariants."""


class FLError(CollabError):
    """Federated-learning failure: malformed or late update, bad round config."""


class PrivacyBudgetExceeded(FLError):
    """Running another round would exceed the configured (epsilon, delta) budget."""


class UploadRefused(FLError):
    """The aggregator rejected an upload; ``status`` is the gRPC status name."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class UpdateRejected(FLError):
    """An upload the round refuses for its content (garbage, wrong length, NaN, encoding);
    the subclasses name the other reasons."""


class RoundMismatch(UpdateRejected):
    """The upload is for no open round, a closed or future one, another base version or
    another HE context."""


class NotSampled(UpdateRejected):
    """The uploading client was not sampled in this round."""


class DuplicateUpdate(UpdateRejected):
    """The client already reported in this round."""


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
    "LateError",
    "MalformedMessage",
    "NotFoundError",
    "NotSampled",
    "OverloadedError",
    "PrivacyBudgetExceeded",
    "RoundMismatch",
    "SplitError",
    "TooLargeError",
    "TransportError",
    "UpdateRejected",
    "UploadRefused",
]
