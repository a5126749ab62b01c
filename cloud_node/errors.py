"""Domain errors of the cloud node; the servicer maps each to one gRPC status code."""

from __future__ import annotations

from collab.errors import CollabError


class NotServedError(CollabError):
    """Unknown model, version or split point (NOT_FOUND)."""


class BadRequestError(CollabError):
    """A frame that does not fit the model: wrong shape, dtype or batch (INVALID_ARGUMENT)."""


class TooLargeError(CollabError):
    """A request asks for more than the node's limits allow (RESOURCE_EXHAUSTED)."""


class ShuttingDownError(CollabError):
    """The node is draining and accepts no new work (UNAVAILABLE)."""
