"""One rule for which errors clients read: HTTP's statuses and the job queue's results agree."""

from __future__ import annotations

from inferline.api.app import status_of
from inferline.errors import (
    REFUSALS,
    DeadlineExceeded,
    EngineError,
    InferlineError,
    InvalidInput,
    ModelBuildError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UpstreamError,
)


def test_refusals_are_what_http_answers_with_their_own_words() -> None:
    refused: list[InferlineError] = [
        InvalidInput("x"),
        PayloadTooLarge("x"),
        Unauthorized("x"),
        NotFound("x"),
        Overloaded("x", retry_after=1.0),
        Unavailable("x"),
        DeadlineExceeded("x"),
    ]
    failed: list[InferlineError] = [
        EngineError("x"),
        UpstreamError(500, b"", None, "x"),
        ModelBuildError("x"),
    ]
    assert all(isinstance(e, REFUSALS) and status_of(e) != 500 for e in refused)
    assert all(not isinstance(e, REFUSALS) and status_of(e) == 500 for e in failed)
