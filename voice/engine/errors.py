"""The engine's one error type, shaped like OpenAI's error envelope.

HTTP views turn it into `{"error": {...}}` with its status; the data channel turns it
into an `error` event carrying the offending client `event_id`.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """A request the engine refuses, with what the client needs to fix it."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


def unauthorized(message: str, *, code: str = "invalid_api_key") -> EngineError:
    return EngineError(message, status=401, code=code)
