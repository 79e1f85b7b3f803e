"""Errors the API returns, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Clients (the openai SDK, LangChain, lm-eval) map the HTTP status to an exception class and read
`error.message`, so every failure, including ones raised by the framework itself, goes through
`APIError` and `error_body`.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A failure answered with `status` and the OpenAI error envelope."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


class BadRequest(APIError):
    status = 400


class ContextLengthExceeded(APIError):
    status = 400
    code = "context_length_exceeded"


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(APIError):
    status = 404
    code = "model_not_found"


class PayloadTooLarge(APIError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(APIError):
    status = 408
    type = "timeout_error"
    code = "request_timeout"


class Overloaded(APIError):
    """Too many requests in flight or queued: the client should retry after a short while."""

    status = 429
    type = "rate_limit_error"
    code = "server_overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServerError(APIError):
    status = 500
    type = "server_error"
    code = "internal_error"


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def short(value: object, limit: int = 60) -> str:
    """A value quoted for an error message, cut so that a 10 kB field never comes back whole."""
    text = repr(value) if not isinstance(value, str) else value
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."
