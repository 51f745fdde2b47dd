"""Tasks: create, read, list."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.response.base import ASGIResponse

from service.api.auth import READ, WRITE, identity, requires
from service.api.requests import idempotency_key, json_body, negotiate
from service.api.responses import JSON, json_response
from service.api.services import Services
from service.domain.models import CreatedData, CreateTask, TaskStatus, is_task_id
from service.domain.payload import validate
from service.domain.problems import PayloadTooLarge, Problem, TaskNotFound
from service.domain.wire import encode, fingerprint, task_object
from service.store import appender

CREATED_MEMBERS = ("kind", "title", "metadata")


def task_location(task_id: str) -> str:
    return f"/v1/tasks/{task_id}"


class TaskController(Controller):
    path = "/v1/tasks"
    tags = ("tasks",)

    @post("/", opt=requires(WRITE), summary="Create a task")
    async def create(self, request: Request[Any, Any, Any], services: Services) -> ASGIResponse:
        """Appends the task's ``created`` event. With ``Idempotency-Key``, a retry answers 200."""
        caller = identity(request)
        settings = services.settings
        if services.limiter is not None:
            services.limiter.take(caller.sub)
        body = await json_body(request, settings.max_body_bytes)
        key = idempotency_key(request)
        # The created event's data, encoded once: sized before validation (413 comes before
        # 422) and stored as is once the body is valid (strict validation changes no value).
        created_json = (
            encode({name: body.get(name) for name in CREATED_MEMBERS})
            if isinstance(body, dict)
            else b""
        )
        if len(created_json) > settings.max_event_bytes:
            raise PayloadTooLarge(
                f"the created event is {len(created_json)} bytes encoded, the limit is"
                f" {settings.max_event_bytes}"
            )
        spec = validate(CreateTask, body)
        data = CreatedData(kind=spec.kind, title=spec.title, metadata=spec.metadata)
        task_id = spec.id or f"task-{uuid.uuid4().hex}"
        command = appender.CreateTask(
            tenant=caller.tenant,
            task_id=task_id,
            data=data,
            data_json=created_json.decode(),
            idempotency_key=key,
            fingerprint=fingerprint(body) if key else None,
            lease_seconds=spec.lease_seconds,
        )
        [outcome] = await services.appender.submit([command], "create")
        if isinstance(outcome, Problem):
            raise outcome
        assert outcome.task is not None
        return json_response(
            encode(task_object(outcome.task)),
            status=200 if outcome.replayed else 201,
            headers={"Location": task_location(outcome.task.id)},
        )

    @get("/{task_id:str}", opt=requires(READ), summary="Read a task")
    async def read(
        self, request: Request[Any, Any, Any], services: Services, task_id: str
    ) -> ASGIResponse:
        negotiate(request, [JSON])
        if not is_task_id(task_id):
            raise TaskNotFound(f"task {task_id!r} does not exist")
        task = await services.reader.task(identity(request).tenant, task_id)
        return json_response(encode(task_object(task)))

    @get("/", opt=requires(READ), summary="List tasks, newest first")
    async def list(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        status: list[TaskStatus] | None = None,
        kind: list[str] | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> ASGIResponse:
        negotiate(request, [JSON])
        page = await services.reader.tasks(
            identity(request).tenant,
            status=[s.value for s in status or []],
            kind=kind or [],
            cursor=cursor,
            limit=limit,
        )
        body = {
            "items": [task_object(task) for task in page.items],
            "next_cursor": page.next_cursor,
            "as_of_seq": page.as_of_seq,
        }
        return json_response(encode(body))
