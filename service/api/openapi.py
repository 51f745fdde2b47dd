"""The OpenAPI document: Litestar's, plus the bodies handlers decode themselves.

Handlers read their bodies with ``requests.json_body`` (size, media type and depth checks come
before any parsing), so Litestar cannot see their models; the same pydantic models are added to
the document here.
"""

from __future__ import annotations

import copy
from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.domain.models import (
    AppendEvent,
    Batch,
    BatchResults,
    CancelTask,
    CreateTask,
    Event,
    EventPage,
    Task,
    TaskPage,
)

REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("/v1/tasks", "post"): CreateTask,
    ("/v1/tasks/{task_id}/events", "post"): AppendEvent,
    ("/v1/events/batch", "post"): Batch,
    ("/v1/tasks/{task_id}/cancel", "post"): CancelTask,
}
OPTIONAL_BODIES = {("/v1/tasks/{task_id}/cancel", "post")}
ANSWERS: dict[tuple[str, str], dict[str, type[BaseModel]]] = {
    ("/v1/tasks", "post"): {"201": Task, "200": Task},
    ("/v1/tasks", "get"): {"200": TaskPage},
    ("/v1/tasks/{task_id}", "get"): {"200": Task},
    ("/v1/tasks/{task_id}/events", "post"): {"201": Event, "200": Event},
    ("/v1/tasks/{task_id}/cancel", "post"): {"201": Event, "200": Event},
    ("/v1/tasks/{task_id}/events", "get"): {"200": EventPage},
    ("/v1/events/batch", "post"): {"200": BatchResults},
    ("/v1/events", "get"): {"200": EventPage},
}
CANCEL_REQUESTED = {
    "Cancel-Requested": {
        "description": "`true` while a cancel request for the task is pending: the worker"
        " should stop and append `cancelled`",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
"""Append answers tell a worker of a cancel request (it holds no scope to read the task)."""
TELLS_OF_CANCEL = {("/v1/tasks/{task_id}/events", "post"), ("/v1/tasks/{task_id}/cancel", "post")}
PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _reference(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def document(litestar_schema: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(litestar_schema)
    models = {*REQUEST_BODIES.values(), *(m for a in ANSWERS.values() for m in a.values())}
    _, definitions = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(definitions.get("$defs", {}))
    components["Problem"] = PROBLEM
    problem = {"application/problem+json": {"schema": _reference("Problem")}}
    for (path, method), operation in _operations(schema):
        if (body := REQUEST_BODIES.get((path, method))) is not None:
            operation["requestBody"] = {
                "required": (path, method) not in OPTIONAL_BODIES,
                "content": {"application/json": {"schema": _reference(body.__name__)}},
            }
        responses = operation.setdefault("responses", {})
        for status, model in ANSWERS.get((path, method), {}).items():
            responses[status] = {
                "description": responses.get(status, {}).get("description", "OK"),
                "content": {"application/json": {"schema": _reference(model.__name__)}},
            }
            if (path, method) in TELLS_OF_CANCEL:
                responses[status]["headers"] = CANCEL_REQUESTED
        if path.startswith("/v1/"):
            for status in _refusals(path, method):
                responses.setdefault(status, {"description": REFUSALS[status]})
        for status, response in responses.items():
            if status[0] in "45":
                response["content"] = problem
    return schema


REFUSALS = {
    "401": "Missing, malformed, badly signed or expired token",
    "403": "The token lacks the scope",
    "404": "No such task for this tenant",
    "406": "The Accept header names nothing this endpoint serves",
    "409": "Task exists, invalid transition or version conflict",
    "413": "Body or event data over the size limit",
    "415": "The body is not application/json",
    "400": "Malformed JSON",
    "422": "The request breaks a rule; `errors` names the fields",
    "503": "The database is unreachable",
}


def _refusals(path: str, method: str) -> list[str]:
    statuses = ["401", "403", "422", "503"]
    if "{task_id}" in path:
        statuses.append("404")
    if method == "post":
        statuses += ["400", "409", "413", "415"]
    else:
        statuses.append("406")
    return statuses


def _operations(schema: dict[str, Any]) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    return [
        ((path, method), operation)
        for path, item in schema.get("paths", {}).items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]


class DocumentedJsonPlugin(JsonRenderPlugin):
    _rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            self._rendered = self.render_json(request, document(openapi_schema))
        return self._rendered
