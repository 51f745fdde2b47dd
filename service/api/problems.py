"""One exception handler: every error leaves as ``application/problem+json`` with a ``code``."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from service.domain.problems import (
    FieldError,
    Forbidden,
    InternalError,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    Problem,
    Unauthorized,
    ValidationFailed,
)
from service.domain.wire import encode
from service.store.database import UNAVAILABLE

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def as_problem(error: Exception) -> Problem:
    """Map anything raised while handling a request onto the contract's problems."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, NotAuthorizedException):
        return Unauthorized(error.detail, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(error, PermissionDeniedException):
        return Forbidden(error.detail)
    if isinstance(error, NotFoundException):
        return NotFound(error.detail)
    if isinstance(error, MethodNotAllowedException):
        return MethodNotAllowed(error.detail, headers=dict(error.headers or {}))
    if isinstance(error, RequestEntityTooLarge):
        return PayloadTooLarge("the request body is over the size limit")
    if isinstance(error, ValidationException):
        return _validation(error)
    if isinstance(error, HTTPException) and error.status_code < 500:
        return MalformedRequest(error.detail)
    if isinstance(error, UNAVAILABLE):
        return NotReady(f"database unavailable: {type(error).__name__}")
    log.error("unhandled error", exc_info=error)
    return InternalError("the service failed to handle the request; this is a bug")


def _validation(error: ValidationException) -> Problem:
    """Litestar's parameter parsing: parseable but unacceptable values are 422, naming fields."""
    errors: list[FieldError] = []
    extra: Any = error.extra
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {"field": str(item.get("key", "request")), "message": str(item.get("message"))}
            )
    if not errors:
        errors.append({"field": "request", "message": error.detail})
    return ValidationFailed(
        "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
    )


def problem_response(problem: Problem) -> Response[bytes]:
    return Response(
        content=encode(problem.body()),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def handle(_: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    return problem_response(as_problem(error))
