"""Exceptions raised by inferline.

    InferlineError
    +-- InvalidInput          the client sent something unusable      (HTTP 400/422)
    |   +-- PayloadTooLarge   body over the size limit                (HTTP 413)
    +-- Unauthorized          missing or wrong API key                (HTTP 401)
    |   +-- InvalidKey        a key was sent, and is not one configured
    +-- NotFound              unknown model, version or route         (HTTP 404)
    +-- Overloaded            a bounded queue or a key's slots are full (HTTP 429)
    +-- Unavailable           not ready yet, or draining              (HTTP 503)
    +-- DeadlineExceeded      the deadline passed before the model ran (HTTP 504)
    +-- EngineError           the model itself failed                 (HTTP 500, opaque id)
    +-- UpstreamError         a relayed upstream's error answer (the chat relay passes it on)
    +-- ModelBuildError       ``inferline model build`` could not produce a valid model

Only the API layers map these to status codes; the library raises them.
"""

from __future__ import annotations


class InferlineError(Exception):
    """Base class of every error inferline raises on purpose."""


class InvalidInput(InferlineError):
    """The request is malformed or breaks a limit."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class PayloadTooLarge(InvalidInput):
    """The body is larger than the configured limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=413)


class Unauthorized(InferlineError):
    """No API key, or one that is not configured."""


class InvalidKey(Unauthorized):
    """The key sent is not a configured one (RFC 6750's ``invalid_token``)."""


class NotFound(InferlineError):
    """No such model, version or route."""


class Overloaded(InferlineError):
    """The queue is full; ``retry_after`` is a hint in seconds."""

    def __init__(
        self, message: str, *, retry_after: float = 1.0, reason: str = "queue_full"
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason


class Unavailable(InferlineError):
    """The service is starting or shutting down."""


class DeadlineExceeded(InferlineError):
    """The request's deadline passed before the model ran it."""


class NotRun(DeadlineExceeded):
    """A text its lane skipped: the deadline passed, or the caller left, while its batch
    waited for the lane (the batch was cut early so that the lane never idles)."""


class EngineError(InferlineError):
    """The engine failed on a batch, or returned the wrong number of outputs."""


class UpstreamError(InferlineError):
    """A remote upstream answered an error: ``status`` and ``body`` as it sent them, for the
    chat relay to pass on (``api/chat.py``); ``retry_after`` from its Retry-After."""

    def __init__(self, status: int, body: bytes, retry_after: float | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class ModelBuildError(InferlineError):
    """The model directory could not be built or failed its verification."""


# The refusals: their messages are written for the client, on every protocol and in a job's
# result. Any other error is a failure, shown by an error id (its text may hold a path).
REFUSALS = (InvalidInput, Unauthorized, NotFound, Overloaded, Unavailable, DeadlineExceeded)


def reason_of(exc: InferlineError) -> str:
    """The ``reason`` label of ``inferline_rejected_total`` for a refused request."""
    if isinstance(exc, PayloadTooLarge):
        return "too_large"
    if isinstance(exc, InvalidInput) and exc.status == 409:
        return "conflict"
    if isinstance(exc, Overloaded):
        return exc.reason
    for kind, reason in _REASONS.items():
        if isinstance(exc, kind):
            return reason
    return "error"


_REASONS: dict[type[InferlineError], str] = {
    InvalidInput: "invalid",
    Unauthorized: "unauthorized",
    NotFound: "not_found",
    Unavailable: "unavailable",
    DeadlineExceeded: "deadline",
}
