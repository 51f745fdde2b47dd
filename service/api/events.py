"""Events: append one, append a batch, read a task's history, query and export a tenant's."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse

from service.api.auth import CANCEL, EVENTS_READ, READ, WRITE, identity, requires
from service.api.requests import idempotency_key, json_body, negotiate
from service.api.responses import JSON, json_response
from service.api.services import Services
from service.domain.models import (
    INT64_MAX,
    AppendEvent,
    Batch,
    BatchItem,
    CancelTask,
    EventType,
    is_task_id,
)
from service.domain.payload import check, check_event, refuse_oversized_data, validate
from service.domain.problems import Problem, TaskNotFound, invalid
from service.domain.state import StoredEvent
from service.domain.wire import CSV_COLUMNS, encode, event_object, parse_timestamp, timestamp
from service.store import appender
from service.store.reader import EventFilter, EventPage

CANCEL_REQUESTED = "Cancel-Requested"
NDJSON = "application/x-ndjson"
CSV = "text/csv"

After = Annotated[int, Parameter(ge=0, le=INT64_MAX, description="Only events with seq above this")]
HistoryLimit = Annotated[int, Parameter(ge=1, le=10000)]


def event_location(event: StoredEvent) -> str:
    return f"/v1/tasks/{event.task_id}/events?after={event.seq - 1}&limit=1"


def _page_body(page: EventPage) -> bytes:
    return encode({"items": [event_object(e) for e in page.items], "next_after": page.next_after})


class EventController(Controller):
    tags = ("events",)

    @post("/v1/tasks/{task_id:str}/events", opt=requires(WRITE), summary="Append an event")
    async def append(
        self, request: Request[Any, Any, Any], services: Services, task_id: str
    ) -> ASGIResponse:
        """201 with the event; a retry with the same ``Idempotency-Key`` answers 200."""
        settings = services.settings
        if services.limiter is not None:
            services.limiter.take(identity(request).sub)
        body = await json_body(request, settings.max_body_bytes)
        data_json = refuse_oversized_data(body, settings.max_event_bytes)
        key = idempotency_key(request)
        spec = validate(AppendEvent, body)
        checked = check_event(spec.type, spec.data, settings.max_event_bytes, data_json)
        if not is_task_id(task_id):
            raise TaskNotFound(f"task {task_id!r} does not exist")
        command = appender.AppendEvent(
            identity(request).tenant, task_id, checked, spec.expected_version, key
        )
        return await _answer(services, command, "single")

    @post(
        "/v1/tasks/{task_id:str}/cancel",
        opt=requires(WRITE, CANCEL),
        summary="Request a task's cancellation",
        description="Appends `cancel_requested`; the status is unchanged until the task's worker"
        " appends `cancelled`. A repeat while the request is pending answers 200 with the first"
        ' request\'s event. The body (`{"reason"?}`) is optional.',
    )
    async def cancel(
        self, request: Request[Any, Any, Any], services: Services, task_id: str
    ) -> ASGIResponse:
        settings = services.settings
        if services.limiter is not None:
            services.limiter.take(identity(request).sub)
        body = await json_body(request, settings.max_body_bytes, optional=True)
        reason = validate(CancelTask, body).reason
        data = {} if reason is None else {"reason": reason}
        checked = check_event(EventType.CANCEL_REQUESTED, data, settings.max_event_bytes)
        if not is_task_id(task_id):
            raise TaskNotFound(f"task {task_id!r} does not exist")
        command = appender.AppendEvent(identity(request).tenant, task_id, checked)
        return await _answer(services, command, "cancel")

    @post("/v1/events/batch", opt=requires(WRITE), status_code=200, summary="Append many")
    async def batch(self, request: Request[Any, Any, Any], services: Services) -> ASGIResponse:
        """Items apply in order and succeed or fail on their own; one result per item."""
        settings = services.settings
        caller = identity(request)
        if services.limiter is not None:
            services.limiter.admit(caller.sub)  # 429 comes before 413: nothing read yet
        body = await json_body(request, settings.max_body_bytes, checked=False)
        envelope = validate(Batch, body)
        if services.limiter is not None:
            services.limiter.charge(caller.sub, len(envelope.events))
        tenant = caller.tenant
        results: list[dict[str, Any] | None] = [None] * len(envelope.events)
        commands: list[appender.Command] = []
        positions: list[int] = []
        for index, item in enumerate(envelope.events):
            try:
                check(item, depth=2)  # an item sits two levels below the body
                data_json = refuse_oversized_data(item, settings.max_event_bytes)
                spec = validate(BatchItem, item)
                checked = check_event(spec.type, spec.data, settings.max_event_bytes, data_json)
            except Problem as problem:
                results[index] = {"status": problem.status, "error": problem.body()}
                continue
            commands.append(
                appender.AppendEvent(
                    tenant, spec.task_id, checked, spec.expected_version, spec.idempotency_key
                )
            )
            positions.append(index)
        outcomes = await services.appender.submit(commands, "batch") if commands else []
        for index, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, Problem):
                results[index] = {"status": outcome.status, "error": outcome.body()}
            else:
                result = {
                    "status": 200 if outcome.replayed else 201,
                    "event": event_object(outcome.event),
                }
                if outcome.cancel_pending:
                    result["cancel_requested"] = True
                results[index] = result
        return json_response(encode({"results": results}))

    @get("/v1/tasks/{task_id:str}/events", opt=requires(READ), summary="A task's history")
    async def history(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        task_id: str,
        after: After = 0,
        limit: HistoryLimit = 100,
    ) -> ASGIResponse:
        negotiate(request, [JSON])
        if not is_task_id(task_id):
            raise TaskNotFound(f"task {task_id!r} does not exist")
        page = await services.reader.task_history(
            identity(request).tenant, task_id, after=after, limit=limit
        )
        return json_response(_page_body(page))

    @get(
        "/v1/events",
        opt=requires(EVENTS_READ),
        summary="Query or export the tenant's events",
        description="JSON pages by default; `Accept: application/x-ndjson` or `text/csv` streams"
        " the whole selection (ignoring `limit`).",
    )
    async def query(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        task_id: list[str] | None = None,
        event_type: Annotated[list[str] | None, Parameter(query="type")] = None,
        kind: list[str] | None = None,
        after: After = 0,
        since: Annotated[str | None, Parameter(description="RFC 3339, inclusive")] = None,
        until: Annotated[str | None, Parameter(description="RFC 3339, exclusive")] = None,
        limit: HistoryLimit = 100,
    ) -> ASGIResponse:
        media_type = negotiate(request, [JSON, NDJSON, CSV])
        selection = EventFilter(
            tenant=identity(request).tenant,
            after=after,
            # Ids outside the pattern cannot exist; "" stands for "matches nothing".
            task_id=[t for t in task_id if is_task_id(t)] or [""] if task_id else [],
            type=event_type or [],
            kind=kind or [],
            since=rfc3339("since", since),
            until=rfc3339("until", until),
        )
        if media_type == NDJSON:
            return ASGIStreamingResponse(
                iterator=_ndjson(services.reader.export(selection)), media_type=NDJSON
            )
        if media_type == CSV:
            return ASGIStreamingResponse(
                iterator=_csv(services.reader.export(selection)), media_type=CSV
            )
        page = await services.reader.events(selection, limit=limit)
        return json_response(_page_body(page))


async def _answer(services: Services, command: appender.AppendEvent, endpoint: str) -> ASGIResponse:
    """201 with the event, 200 with the original one for a retry; a worker learns of a pending
    cancel request from ``Cancel-Requested``, as it holds no scope to read the task."""
    [outcome] = await services.appender.submit([command], endpoint)
    if isinstance(outcome, Problem):
        raise outcome
    headers = {"Location": event_location(outcome.event)}
    if outcome.cancel_pending:
        headers[CANCEL_REQUESTED] = "true"
    return json_response(
        encode(event_object(outcome.event)),
        status=200 if outcome.replayed else 201,
        headers=headers,
    )


def rfc3339(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = parse_timestamp(value)
    if moment is None:
        raise invalid(name, "expected an RFC 3339 date-time with offset, e.g. 2026-11-28T01:02:03Z")
    return moment


async def _ndjson(chunks: AsyncIterator[list[StoredEvent]]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield b"".join(encode(event_object(event)) + b"\n" for event in chunk)


async def _csv(chunks: AsyncIterator[list[StoredEvent]]) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue().encode()
    async for chunk in chunks:
        buffer.seek(0)
        buffer.truncate()
        for event in chunk:
            writer.writerow(
                (
                    event.seq,
                    event.task_id,
                    event.tenant,
                    event.version,
                    event.type,
                    event.data,
                    timestamp(event.time),
                )
            )
        yield buffer.getvalue().encode()
