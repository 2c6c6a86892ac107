"""Errors the API answers with an HTTP status and an OpenAI-style body ``{"error": {...}}``.

``code`` is a string or null, as in OpenAI's schema (never the HTTP status): clients key on it, e.g.
litellm maps ``context_length_exceeded`` to its ContextWindowExceededError.
"""
from __future__ import annotations

from typing import Optional


class APIError(Exception):
    """An error with the HTTP status, OpenAI error type and code the client should see."""

    status_code = 500
    error_type = "internal_error"
    code: Optional[str] = None

    def __init__(self, message: str, param: Optional[str] = None, headers: Optional[dict[str, str]] = None,
                 code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param,
                          "code": self.code}}


class BadRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(BadRequest):
    """The prompt leaves no room in the context; worded and coded as OpenAI and vLLM do."""

    code = "context_length_exceeded"

    def __init__(self, max_model_len: int, prompt_tokens: int, completion_tokens: int, param: str):
        what = "the input" if param == "input" else f"the {param}"
        super().__init__(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + completion_tokens} tokens ({prompt_tokens} in {what}, {completion_tokens} in the "
            f"completion). Please reduce the length of {what} or completion.", param=param)


class Unauthorized(APIError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(APIError):
    status_code = 404
    error_type = "not_found_error"
    code = "model_not_found"


class Overloaded(APIError):
    """The engine's waiting queue is full: the client should retry later (OpenAI clients do, on 429)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class Unavailable(APIError):
    """The engine is not running (starting, stopped or failed)."""

    status_code = 503
    error_type = "service_unavailable"
