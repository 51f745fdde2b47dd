"""Exceptions: one hierarchy, each refusal carrying the service's RFC 9457 problem."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class TaskstreamError(Exception):
    """Anything the client raises about the service."""


class ConnectionFailed(TaskstreamError):
    """No answer from the service, even after the retries."""


class ProblemError(TaskstreamError):
    """The service refused: ``status``, ``code``, ``detail`` and ``errors`` say why."""

    def __init__(self, problem: Mapping[str, Any], status: int) -> None:
        self.problem = dict(problem)
        self.status = status
        self.code: str | None = problem.get("code")
        self.title: str | None = problem.get("title")
        self.detail: str | None = problem.get("detail")
        errors = problem.get("errors")
        self.errors: list[dict[str, Any]] = errors if isinstance(errors, list) else []
        super().__init__(f"{status} {self.code or 'error'}: {self.detail or self.title or ''}")


class ValidationError(ProblemError):
    """400/422: the request broke the rules; ``errors`` names the fields."""


class Unauthorized(ProblemError):
    """401: the token is missing, malformed, badly signed or expired."""


class Forbidden(ProblemError):
    """403: the token lacks the scope."""


class NotFound(ProblemError):
    """404: no such task (or it belongs to another tenant), or no such route."""


class Conflict(ProblemError):
    """409."""


class TaskExists(Conflict):
    """409 ``task_exists``: the id is taken."""


class InvalidTransition(Conflict):
    """409 ``invalid_transition``: the event is not allowed in the task's status."""


class VersionConflict(Conflict):
    """409 ``version_conflict``: ``expected_version`` is not the task's version."""


class PayloadTooLarge(ProblemError):
    """413."""


class RateLimited(ProblemError):
    """429 (``rate_limited`` or ``too_many_streams``); ``retry_after`` in seconds if given."""

    retry_after: float | None = None


class ServerError(ProblemError):
    """5xx, still there after the retries."""


class CancelRequested(Exception):
    """Raised by ``progress()`` of a tracker made with ``raise_on_cancel=True`` once the
    service has said that someone asked to cancel the task. Leaving the ``track()`` block
    with it appends ``cancelled``, and the tracker swallows it."""


_BY_CODE: dict[str, type[ProblemError]] = {
    "task_exists": TaskExists,
    "invalid_transition": InvalidTransition,
    "version_conflict": VersionConflict,
}
_BY_STATUS: dict[int, type[ProblemError]] = {
    400: ValidationError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
}


def problem_error(
    status: int, problem: Mapping[str, Any], retry_after: float | None = None
) -> ProblemError:
    """The exception for a refusal, chosen by its ``code``, else by its status."""
    code = problem.get("code")
    kind = _BY_CODE.get(code) if isinstance(code, str) else None
    kind = kind or _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    error = kind(problem, status)
    if isinstance(error, RateLimited):
        error.retry_after = retry_after
    return error


def problem_from_body(status: int, body: bytes, retry_after: float | None = None) -> ProblemError:
    """A refusal from its body; one that is not a problem object (a proxy's page, say) still
    gives an exception of the right class, with the text as ``detail``."""
    try:
        problem = json.loads(body)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"status": status, "detail": body.decode("utf-8", "replace")[:500]}
    return problem_error(status, problem, retry_after)
