"""Every failure the server reports, mapped to an HTTP status and an OpenAI error ``type``."""

from __future__ import annotations

import asyncio

from lmfuse.serve.fusion import FusionFailed, RequestError
from lmfuse.serve.limits import QueueFull


class APIError(Exception):
    """An error with its HTTP status and OpenAI error type, raised by the HTTP layer."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


KIND_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                  404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                  429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable",
                  504: "timeout_error"}  # fmt: skip


def kind_of(status: int) -> str:
    return KIND_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


def classify(exc: BaseException) -> tuple[int, str, str]:
    """``(status, type, message)`` for an exception raised while answering a request."""
    if isinstance(exc, APIError):
        return exc.status, exc.kind, exc.message
    if isinstance(exc, RequestError):
        return 400, "invalid_request_error", str(exc)
    if isinstance(exc, FusionFailed):
        return 502, "upstream_error", str(exc)
    if isinstance(exc, QueueFull):
        return 429, "rate_limit_error", str(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return 504, "timeout_error", "the request took longer than the server's timeout"
    return 500, "server_error", f"internal error ({type(exc).__name__}); see the server log"
