"""The API's one exception type, mapped to the one wire shape by :mod:`api.app`'s middleware::

    {"error": {"code": "not_found", "message": "lesson 7 does not exist", "details": {}}}

``code`` is stable (clients switch on it), ``message`` is for humans, ``details`` is a JSON
object (e.g. ``{"field": "title", "reason": "..."}`` for validation errors). Never put
exception text from a library or the database in any of them: raise one of the helpers below
with a message written for the client. Anything else that escapes a handler becomes a 500
``internal`` error without details, logged with the request ID.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def bad_request(
    message: str, details: dict[str, Any] | None = None, code: str = "bad_request"
) -> ApiError:
    return ApiError(400, code, message, details)


def unauthorized(message: str = "authentication required", code: str = "unauthorized") -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def forbidden(message: str = "not allowed", code: str = "forbidden") -> ApiError:
    return ApiError(403, code, message)


def not_found(message: str = "not found", code: str = "not_found") -> ApiError:
    return ApiError(404, code, message)


def conflict(
    message: str, details: dict[str, Any] | None = None, code: str = "conflict"
) -> ApiError:
    return ApiError(409, code, message, details)


def too_many(retry_after_s: int, message: str = "too many requests") -> ApiError:
    retry = max(1, int(retry_after_s))
    return ApiError(
        429, "rate_limited", message, {"retry_after_s": retry}, {"Retry-After": str(retry)}
    )


def too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body exceeds {limit} bytes", {"limit": limit})


def request_timeout(timeout_s: float) -> ApiError:
    return ApiError(
        408,
        "request_timeout",
        f"the body did not arrive within {timeout_s:g} s",
        {"timeout_s": timeout_s},
    )


def unavailable(message: str = "a backing service is unavailable") -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": "1"})
