"""Every refusal the service can give, each with its HTTP status and contract ``code``."""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict


class FieldError(TypedDict):
    field: str
    message: str


class Problem(Exception):
    """An RFC 9457 problem; raising one refuses the request and changes nothing."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}
        super().__init__(self.detail)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:taskstream:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        return body


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Missing or invalid credentials"


class Forbidden(Problem):
    status, code, title = 403, "forbidden", "The token lacks the required scope"


class NotFound(Problem):
    status, code, title = 404, "not_found", "No such resource"


class TaskNotFound(Problem):
    status, code, title = 404, "task_not_found", "Task not found"


class MethodNotAllowed(Problem):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class NotAcceptable(Problem):
    status, code, title = 406, "not_acceptable", "Cannot produce the requested media type"


class TaskExists(Problem):
    status, code, title = 409, "task_exists", "A task with this id already exists"


class InvalidTransition(Problem):
    status, code, title = 409, "invalid_transition", "The event is not allowed in this state"


class VersionConflict(Problem):
    status, code, title = 409, "version_conflict", "The task is not at the expected version"


class PayloadTooLarge(Problem):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(Problem):
    status, code, title = 415, "unsupported_media_type", "The body must be application/json"


class MalformedRequest(Problem):
    status, code, title = 400, "validation_error", "Malformed request"


class ValidationFailed(Problem):
    status, code, title = 422, "validation_error", "The request breaks a rule"


class RateLimited(Problem):
    status, code, title = 429, "rate_limited", "Too many requests"


class TooManyStreams(Problem):
    status, code, title = 429, "too_many_streams", "Too many open streams"


class NotReady(Problem):
    status, code, title = 503, "not_ready", "The service is not ready"


class InternalError(Problem):
    pass


def invalid(field: str, message: str) -> ValidationFailed:
    """The common case of a 422 about one field."""
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])
