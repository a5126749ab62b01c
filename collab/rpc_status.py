"""The one mapping from the error tree to gRPC status codes, used by every servicer.

A servicer stays thin: it calls its handler and hands whatever escapes to :func:`abort`.
A domain error is answered with the status of the nearest class in its MRO that
:data:`STATUS` lists, and its message, which is written for the peer. Anything else is a
bug: INTERNAL, the traceback in the log and nothing of it on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NoReturn

import grpc

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
    OverloadedError,
    RoundMismatch,
    SplitError,
    TooLargeError,
    TransportError,
    UpdateRejected,
)
from collab.log import RateLimited, logger

_S = grpc.StatusCode

# CollabError itself is absent on purpose: every class must be placed here, directly or
# through an ancestor (tests/test_errors.py walks the tree).
STATUS: Mapping[type[CollabError], grpc.StatusCode] = {
    # the caller's request is at fault: retrying it unchanged cannot help
    ConfigError: _S.INVALID_ARGUMENT,
    BadRequestError: _S.INVALID_ARGUMENT,
    CodecError: _S.INVALID_ARGUMENT,
    BundleError: _S.INVALID_ARGUMENT,  # an uploaded bundle that does not verify
    MalformedMessage: _S.INVALID_ARGUMENT,
    UpdateRejected: _S.INVALID_ARGUMENT,
    NotFoundError: _S.NOT_FOUND,
    TooLargeError: _S.RESOURCE_EXHAUSTED,
    AuthError: _S.UNAUTHENTICATED,
    NotSampled: _S.PERMISSION_DENIED,
    DuplicateUpdate: _S.ALREADY_EXISTS,
    # the server's state does not allow it now: later, or elsewhere, it may succeed
    ControlPlaneError: _S.FAILED_PRECONDITION,
    RoundMismatch: _S.FAILED_PRECONDITION,
    OverloadedError: _S.RESOURCE_EXHAUSTED,  # the node is full, not the request too big
    ClosedError: _S.UNAVAILABLE,
    TransportError: _S.UNAVAILABLE,  # a peer this node depends on failed
    # time ran out, or the caller left
    DeadlineError: _S.DEADLINE_EXCEEDED,
    CancelledError: _S.CANCELLED,
    # the server failed; the message still describes what
    SplitError: _S.INTERNAL,
    InferenceError: _S.INTERNAL,
    FLError: _S.INTERNAL,
}

INTERNAL_MESSAGE = "internal error (see the server log)"
#: trailing-metadata key of the hint an error with ``retry_after_ms`` carries: milliseconds
#: (an integer, >= 1) before the peer should send this node more work
RETRY_AFTER_KEY = "retry-after-ms"
_failures = RateLimited()  # a request that fails the same way in a loop logs once a minute


def status_for(e: BaseException) -> grpc.StatusCode:
    """The status ``e`` is answered with: that of the nearest listed class, else INTERNAL."""
    for cls in type(e).__mro__:
        code = STATUS.get(cls)
        if code is not None:
            return code
    return _S.INTERNAL


def _raised_at(e: BaseException) -> str:
    """file:line where ``e`` was raised: one bug is one cause, whatever its message."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def abort(context: grpc.ServicerContext, e: Exception, method: str) -> NoReturn:
    """End the RPC with the status of ``e``; logs server failures with their traceback."""
    code = status_for(e)
    cause = f"{method}:{type(e).__name__}:{_raised_at(e)}"
    if not isinstance(e, CollabError):
        _failures.log(
            logging.ERROR, cause, "%s: unexpected %s", method, type(e).__name__, exc_info=e
        )
        message = INTERNAL_MESSAGE
    elif code == _S.INTERNAL:
        _failures.warning(cause, "%s failed: %s", method, e, exc_info=e)
        message = str(e)
    else:
        logger.debug("%s rejected (%s): %s", method, code.name, e)
        message = str(e)
    retry_after = getattr(e, "retry_after_ms", None)
    if retry_after is not None:
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(max(1, round(retry_after)))),))
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises
