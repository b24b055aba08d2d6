"""Errors a user can cause. Each carries a stable code and a message that says what to do."""

from __future__ import annotations

from typing import Any


class MeshError(Exception):
    """An error reported to the caller as ``{"code": ..., "message": ...}``; never a traceback."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            data["details"] = self.details
        return data


class UnknownTarget(MeshError):
    code = "unknown_target"
    http_status = 404


class NotFound(MeshError):
    code = "not_found"
    http_status = 404


class InvalidRequest(MeshError):
    code = "invalid_request"


class TooLarge(MeshError):
    code = "too_large"
    http_status = 413


class Unauthorized(MeshError):
    code = "unauthorized"
    http_status = 401


class Forbidden(MeshError):
    code = "forbidden"
    http_status = 403


class AuthFailed(MeshError):
    """A hello that was refused: ``code`` says why (bad_signature, stale, replayed, malformed)."""

    code = "auth_failed"
    http_status = 401


class RateLimited(MeshError):
    """Over a per-member rate (sends or actions); ``retry_after`` says when one more fits."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: float, **details: Any) -> None:
        super().__init__(message, retry_after=round(retry_after, 3), **details)


class QuotaExceeded(MeshError):
    """Storing this would pass a storage quota; the details name the quota, its limit and what
    is used."""

    code = "quota_exceeded"
    http_status = 413


class TooManyConnections(MeshError):
    """A WebSocket over the hub's cap, per member or in total."""

    code = "too_many_connections"
    http_status = 429


def error_frame(exc: MeshError, call_id: Any = None) -> dict[str, Any]:
    """The WebSocket ``error`` frame of ``exc``, answering the call ``call_id`` if any."""
    frame: dict[str, Any] = {"type": "error", **exc.to_dict()}
    if call_id is not None:
        frame["id"] = call_id
    return frame
