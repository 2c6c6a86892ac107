"""Errors the API answers with an HTTP status and an OpenAI-style body ``{"error": {...}}``."""
from __future__ import annotations

from typing import Optional


class APIError(Exception):
    """An error with the HTTP status and OpenAI error type the client should see."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, param: Optional[str] = None, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param,
                          "code": self.status_code}}


class BadRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(APIError):
    status_code = 401
    error_type = "authentication_error"


class ModelNotFound(APIError):
    status_code = 404
    error_type = "not_found_error"


class Overloaded(APIError):
    """The engine's waiting queue is full: the client should retry later (OpenAI clients do, on 429)."""

    status_code = 429
    error_type = "rate_limit_error"


class Unavailable(APIError):
    """The engine is not running (starting, stopped or failed)."""

    status_code = 503
    error_type = "service_unavailable"
