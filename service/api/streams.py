"""The two Server-Sent Events endpoints.

Litestar routes, authenticates and documents them like every other endpoint; what they return
is an ASGI app of their own (:class:`StreamAnswer`), so an open stream costs no response
object, task group or disconnect listener of Litestar's, and its live part can bypass ASGI
``send`` altogether (stream/transport.py). Refusals raised before the answer starts become
problem responses as usual, in the contract's order: 429, then 400, 422, 404.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from litestar import Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from service.api.auth import READ, TOKEN_IN_QUERY, identity, raw_header, requires
from service.api.services import Services
from service.domain.models import INT64_MAX, is_task_id
from service.domain.problems import MalformedRequest, TaskNotFound, invalid
from service.domain.state import OPEN
from service.store.database import UNAVAILABLE
from service.stream.frames import snapshot_frame
from service.stream.hub import Selection

MAX_TASK_IDS = 100
OPTIONS = {**requires(READ), TOKEN_IN_QUERY: True}
# The Last-Event-ID header is read from the scope rather than declared as a parameter, so
# that no parsed copy of the headers lives as long as the stream (auth.raw_header).
DESCRIPTION = (
    "Server-Sent Events. Resume with the `Last-Event-ID` header (or `last_event_id`), which"
    " sends every event after it, then live events, with no gap and no duplicate. The token may"
    " also come as `access_token`, since a browser EventSource cannot set headers."
)

LastEventIdQuery = Annotated[
    str | None, Parameter(description="Resume after this seq, when the header is absent")
]
AccessToken = Annotated[
    str | None, Parameter(description="The bearer token, for clients that cannot set headers")
]
ProgressOption = Annotated[
    Literal["all", "latest"],
    Parameter(
        description="`latest`: when this client falls behind, the server may drop `progress`"
        " events that a later `progress` event of the same task supersedes (it carries every"
        " member again), instead of disconnecting it. No other event is ever dropped."
    ),
]


class StreamAnswer(ASGIResponse):
    """A handler's answer that runs a stream (or a refusal of one) when Litestar sends it."""

    __slots__ = ("_run",)

    def __init__(self, run: Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]) -> None:
        super().__init__()
        self._run = run

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        # Not a coroutine of its own: one frame fewer held for as long as the stream is open.
        return self._run(scope, receive, send)


def resume_position(header: str | None, query: str | None) -> int | None:
    """``Last-Event-ID``, else ``?last_event_id=``; 400 unless a non-negative integer."""
    field, value = ("Last-Event-ID", header) if header is not None else ("last_event_id", query)
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > INT64_MAX:
        message = "must be a non-negative integer: the id of the last event received"
        raise MalformedRequest(f"{field} {message}", errors=[{"field": field, "message": message}])
    return int(value)


def _stream_route(path: str, summary: str, description: str) -> HTTPRouteHandler:
    return get(
        path,
        opt=OPTIONS,
        tags=["streams"],
        summary=summary,
        description=f"{DESCRIPTION} {description}",
        media_type="text/event-stream",
    )


@_stream_route(
    "/v1/tasks/{task_id:str}/stream",
    "Follow one task",
    "Without a resume position the stream starts with an `event: snapshot` (the Task); it ends"
    " after the task's terminal event. A finished task with nothing after the resume position"
    " answers 204.",
)
async def task_stream(
    request: Request[Any, Any, Any],
    services: Services,
    task_id: str,
    last_event_id: LastEventIdQuery = None,
    access_token: AccessToken = None,
    progress: ProgressOption = "all",
) -> ASGIResponse:
    streams, who = services.streams, identity(request)

    async def run(scope: Scope, receive: Receive, send: Send) -> None:
        with streams.slot(who.sub):
            after = resume_position(raw_header(scope, b"last-event-id"), last_event_id)
            resumed = after is not None
            if not streams.ready:
                await streams.not_ready(send)
                return
            if not is_task_id(task_id):
                raise TaskNotFound(f"task {task_id!r} does not exist")
            try:
                task = await streams.reader.task(who.tenant, task_id)
            except UNAVAILABLE:
                await streams.not_ready(send)
                return
            finished = task.status not in OPEN
            if after is None:
                first = streams.retry + snapshot_frame(task)
                if finished:
                    await streams.answer(send, first)
                    return
                after = task.last_seq
            elif finished and task.last_seq <= after:
                await streams.no_content(send)
                return
            else:
                first = streams.retry
            selection = Selection(who.tenant, task_ids=frozenset({task_id}))
            subscriber = streams.subscriber(
                selection,
                after=after,
                resumed=resumed,
                task=True,
                latest_progress=progress == "latest",
            )
            await streams.run(subscriber, first, scope, receive, send)

    return StreamAnswer(run)


@_stream_route(
    "/v1/stream",
    "Follow every task of the tenant",
    "Without a resume position the stream starts with the events appended after it opens."
    " Filters may repeat; task ids that do not exist (yet) are fine.",
)
async def tenant_stream(
    request: Request[Any, Any, Any],
    services: Services,
    task_id: Annotated[list[str] | None, Parameter(description="At most 100")] = None,
    event_type: Annotated[list[str] | None, Parameter(query="type")] = None,
    kind: list[str] | None = None,
    last_event_id: LastEventIdQuery = None,
    access_token: AccessToken = None,
    progress: ProgressOption = "all",
) -> ASGIResponse:
    streams, who = services.streams, identity(request)

    async def run(scope: Scope, receive: Receive, send: Send) -> None:
        with streams.slot(who.sub):
            after = resume_position(raw_header(scope, b"last-event-id"), last_event_id)
            resumed = after is not None
            if task_id is not None and len(task_id) > MAX_TASK_IDS:
                raise invalid("task_id", f"at most {MAX_TASK_IDS} task ids")
            selection = Selection(
                who.tenant,
                task_ids=frozenset(task_id or ()),
                types=frozenset(event_type or ()),
                kinds=frozenset(kind or ()),
            )
            if not streams.ready:
                await streams.not_ready(send)
                return
            if after is None:
                try:
                    after = await streams.reader.newest_seq()
                except UNAVAILABLE:
                    await streams.not_ready(send)
                    return
            subscriber = streams.subscriber(
                selection,
                after=after,
                resumed=resumed,
                task=False,
                latest_progress=progress == "latest",
            )
            await streams.run(subscriber, streams.retry, scope, receive, send)

    return StreamAnswer(run)
