"""Every request of the client, built and parsed once for both the sync and the async client.

Each method returns an operation (see ``steps``): nothing happens until a driver runs it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from service.client.errors import ConnectionFailed, problem_from_body
from service.client.models import Appended, BatchItemResult, Reset, Snapshot, StreamItem
from service.client.retry import RetryPolicy, exchange, retry_after
from service.client.sse import Decoder, Message
from service.client.steps import Close, Emit, Feed, Op, Read, Send, Sleep, read_body
from service.domain.models import (
    BatchItem,
    Event,
    EventPage,
    EventType,
    Task,
    TaskPage,
    TaskStatus,
)

USER_AGENT = "taskstream-python"
NDJSON = "application/x-ndjson"
TERMINAL_TYPES = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})
TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})

Filter = str | Sequence[str] | None
"""One value or several of a repeatable query parameter."""
Data = Mapping[str, Any] | BaseModel | None
"""Event data: a mapping, or a model such as ``ProgressData`` (``None`` members left out)."""
Moment = datetime | str | None
Query = list[tuple[str, str | int | float | bool | None]]


class _BatchAnswer(BaseModel):
    results: list[BatchItemResult]


@dataclass(frozen=True, slots=True)
class TrackOptions:
    """What ``track()`` was asked for; see ``tracking.Tracking``."""

    kind: str
    title: str | None
    metadata: Mapping[str, Any] | None
    id: str | None
    lease_seconds: int | None
    progress_interval: float
    raise_on_cancel: bool


def new_key() -> str:
    """A fresh idempotency key: one per logical write, reused by all its retries."""
    return str(uuid.uuid4())


def event_data(data: Data) -> dict[str, Any]:
    if data is None:
        return {}
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json", exclude_none=True)
    return dict(data)


def _segment(task_id: str) -> str:
    return quote(task_id, safe="")


def _many(value: Filter) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _moment(value: Moment) -> str | None:
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; give an aware datetime")
    return value.isoformat()


def _query(**params: Any) -> Query:
    """Query parameters without the ``None`` ones; lists become repeated parameters."""
    query: Query = []
    for name, value in params.items():
        values = value if isinstance(value, list) else [value]
        query.extend((name, item) for item in values if item is not None)
    return query


def _appended(response: httpx.Response) -> Appended:
    return Appended(
        event=Event.model_validate_json(response.content),
        replayed=response.status_code == 200,
        cancel_requested=response.headers.get("cancel-requested", "").lower() == "true",
    )


def _stream_item(message: Message) -> StreamItem:
    if message.event == "snapshot":
        return Snapshot(seq=int(message.id), task=Task.model_validate_json(message.data))
    if message.event == "reset":
        return Reset.model_validate({**json.loads(message.data), "seq": int(message.id)})
    return Event.model_validate_json(message.data)


def _ends_task_stream(item: StreamItem) -> bool:
    """The service ends a task's stream after these: the task is finished."""
    if isinstance(item, Event):
        return item.type in TERMINAL_TYPES
    return isinstance(item, Snapshot) and item.task.status in TERMINAL_STATUSES


class Operations:
    """The service's HTTP API as operations; holds where it is and how to ask it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float,
        stream_timeout: float | None,
        retry: RetryPolicy,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT}
        self._timeout = httpx.Timeout(timeout).as_dict()
        # A stream is silent between events; the service's keep-alive comments (every 15 s
        # by default) keep a healthy one below this, so a longer silence means it is dead.
        self._stream_timeout = httpx.Timeout(timeout, read=stream_timeout).as_dict()

    # ------------------------------------------------------------------ plumbing

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Query | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Request:
        return httpx.Request(
            method,
            self.base_url + path,
            params=params,
            json=body,
            headers={**self._headers, **(headers or {})},
            extensions={"timeout": self._stream_timeout if stream else self._timeout},
        )

    def call(self, method: str, path: str, **options: Any) -> Op[httpx.Response]:
        """A request, retried by the policy; a refusal raises its ``ProblemError``."""
        response = yield from exchange(self.request(method, path, **options), self.retry)
        if not response.is_success:
            raise problem_from_body(response.status_code, response.content, retry_after(response))
        return response

    def open(self, request: httpx.Request) -> Op[httpx.Response]:
        """A streamed response, retried by the policy; a refusal raises."""
        response = yield from exchange(request, self.retry, stream=True)
        if not response.is_success:
            body = yield from read_body(response)
            raise problem_from_body(response.status_code, body, retry_after(response))
        return response

    # ------------------------------------------------------------------ tasks

    def create_task(
        self,
        kind: str,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
        lease_seconds: int | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Op[Task]:
        """Create a task (the service appends its ``created`` event).

        Safe to retry: the request carries an ``Idempotency-Key`` (a new one unless given),
        so a retry after a lost answer gets the same task back instead of a second one.
        """
        body: dict[str, Any] = {"kind": kind, "title": title, "metadata": metadata, "id": id}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        headers = {"Idempotency-Key": idempotency_key or new_key()}
        response = yield from self.call(
            "POST",
            "/v1/tasks",
            body={k: v for k, v in body.items() if v is not None},
            headers=headers,
        )
        return Task.model_validate_json(response.content)

    def get_task(self, task_id: str) -> Op[Task]:
        """The task as it is now."""
        response = yield from self.call("GET", f"/v1/tasks/{_segment(task_id)}")
        return Task.model_validate_json(response.content)

    def list_tasks_page(
        self,
        status: Filter = None,
        kind: Filter = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Op[TaskPage]:
        """One page of tasks, newest first; pass ``next_cursor`` on for the next."""
        params = _query(status=_many(status), kind=_many(kind), cursor=cursor, limit=limit)
        response = yield from self.call("GET", "/v1/tasks", params=params)
        return TaskPage.model_validate_json(response.content)

    def list_tasks(
        self, status: Filter = None, kind: Filter = None, page_size: int | None = None
    ) -> Feed[Task]:
        """Every task, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = yield from self.list_tasks_page(status, kind, cursor, page_size)
            for task in page.items:
                yield Emit(task)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # ------------------------------------------------------------------ appending

    def append(
        self,
        task_id: str,
        type: EventType | str,
        data: Data = None,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Op[Appended]:
        """Append one event. Safe to retry, as ``create_task``: a replay answers
        ``replayed=True`` with the event the first attempt appended."""
        body: dict[str, Any] = {"type": str(type), "data": event_data(data)}
        if expected_version is not None:
            body["expected_version"] = expected_version
        response = yield from self.call(
            "POST",
            f"/v1/tasks/{_segment(task_id)}/events",
            body=body,
            headers={"Idempotency-Key": idempotency_key or new_key()},
        )
        return _appended(response)

    def append_batch(
        self, items: Sequence[BatchItem | Mapping[str, Any]]
    ) -> Op[list[BatchItemResult]]:
        """Append up to 1000 events in one request, in order; each item succeeds or fails on
        its own (see ``BatchItemResult.exception``). Every item without an
        ``idempotency_key`` gets a fresh one, so retrying the whole batch is safe."""
        events = []
        for item in items:
            event = (
                item.model_dump(mode="json", exclude_none=True)
                if isinstance(item, BaseModel)
                else dict(item)
            )
            event.setdefault("idempotency_key", new_key())
            events.append(event)
        response = yield from self.call("POST", "/v1/events/batch", body={"events": events})
        return _BatchAnswer.model_validate_json(response.content).results

    def cancel(self, task_id: str, reason: str | None = None) -> Op[Appended]:
        """Ask for the task to be cancelled (its worker learns it from its next append).
        A repeat while the request is pending answers ``replayed=True``."""
        body = {} if reason is None else {"reason": reason}
        response = yield from self.call("POST", f"/v1/tasks/{_segment(task_id)}/cancel", body=body)
        return _appended(response)

    # ------------------------------------------------------------------ history

    def history(
        self, task_id: str, after: int | None = None, page_size: int | None = None
    ) -> Feed[Event]:
        """Every event of a task after ``after``, ascending by ``seq``, page after page."""
        path = f"/v1/tasks/{_segment(task_id)}/events"
        yield from self._every_event(path, _query(limit=page_size), after)

    def events(
        self,
        task_id: Filter = None,
        type: Filter = None,
        kind: Filter = None,
        after: int | None = None,
        since: Moment = None,
        until: Moment = None,
        page_size: int | None = None,
    ) -> Feed[Event]:
        """Every event of the tenant's selection (scope ``events:read``), ascending by
        ``seq``, page after page."""
        params = self._selection(task_id, type, kind, None, since, until)
        yield from self._every_event("/v1/events", params + _query(limit=page_size), after)

    def _every_event(self, path: str, params: Query, after: int | None) -> Feed[Event]:
        while True:
            response = yield from self.call("GET", path, params=params + _query(after=after))
            page = EventPage.model_validate_json(response.content)
            for event in page.items:
                yield Emit(event)
            if page.next_after is None:
                return
            after = page.next_after

    def export(
        self,
        task_id: Filter = None,
        type: Filter = None,
        kind: Filter = None,
        after: int | None = None,
        since: Moment = None,
        until: Moment = None,
    ) -> Feed[Event]:
        """The whole selection as one streamed answer (NDJSON), in constant memory: what was
        committed when the export started. A connection lost midway raises
        ``ConnectionFailed``; ``events(after=<last seq>)`` picks up from there."""
        params = self._selection(task_id, type, kind, after, since, until)
        request = self.request(
            "GET", "/v1/events", params=params, headers={"Accept": NDJSON}, stream=True
        )
        response = yield from self.open(request)
        last = after
        rest = b""
        try:
            while chunk := (yield Read(response)):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    event = Event.model_validate_json(line)
                    last = event.seq
                    yield Emit(event)
        except httpx.TransportError as error:
            raise ConnectionFailed(f"the export was cut off after seq {last}") from error
        if rest.strip():
            yield Emit(Event.model_validate_json(rest))

    @staticmethod
    def _selection(
        task_id: Filter, type: Filter, kind: Filter, after: int | None, since: Moment, until: Moment
    ) -> Query:
        return _query(
            task_id=_many(task_id),
            type=_many(type),
            kind=_many(kind),
            after=after,
            since=_moment(since),
            until=_moment(until),
        )

    # ------------------------------------------------------------------ streams

    def subscribe(self, task_id: str, last_event_id: int | str | None = None) -> Feed[StreamItem]:
        """A task's events as they happen, until its terminal event.

        Without ``last_event_id`` the first item is a ``Snapshot`` of the task. Reconnects
        by itself with ``Last-Event-ID`` (nothing lost, nothing twice); ends on 204 (the task
        is finished and nothing is left after ``last_event_id``).
        """
        resume = None if last_event_id is None else str(last_event_id)
        yield from self._follow(f"/v1/tasks/{_segment(task_id)}/stream", [], resume, True)

    def subscribe_all(
        self,
        task_id: Filter = None,
        type: Filter = None,
        kind: Filter = None,
        last_event_id: int | str | None = None,
    ) -> Feed[StreamItem]:
        """The tenant's events (and ``Reset``) as they happen, optionally filtered; never ends
        by itself.

        Without ``last_event_id`` it starts from the newest position now, read first so that
        a connection lost before the first event still resumes without a gap.
        """
        if last_event_id is None:
            page = yield from self.list_tasks_page(limit=1)
            last_event_id = page.as_of_seq
        params = _query(task_id=_many(task_id), type=_many(type), kind=_many(kind))
        yield from self._follow("/v1/stream", params, str(last_event_id), False)

    def _follow(
        self,
        path: str,
        params: Query,
        last_event_id: str | None,
        one_task: bool,
    ) -> Feed[StreamItem]:
        """Read a stream, reconnecting as an EventSource does: after the ``retry:`` delay,
        with ``Last-Event-ID``, when the connection drops or the service ends the answer early
        (200 then the end: not ready). Failures in a row back off; the first connection gets
        the retry policy's attempts, after that it keeps trying. 204 ends it; another refusal
        raises."""
        decoder = Decoder(last_event_id or "")
        failures = 0
        connected = False
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if decoder.last_event_id:
                headers["Last-Event-ID"] = decoder.last_event_id
            request = self.request("GET", path, params=params, headers=headers, stream=True)
            delivered = False
            cause: Exception | None = None
            response: httpx.Response | None = None
            try:
                response = yield Send(request, stream=True)
                assert response is not None
                if response.status_code == 204:
                    return
                if response.status_code != 200:
                    body = yield from read_body(response)
                    refusal = problem_from_body(response.status_code, body, retry_after(response))
                    if response.status_code < 500:
                        raise refusal
                    cause = refusal
                else:
                    connected = True
                    decoder.restart()
                    while chunk := (yield Read(response)):
                        for message in decoder.feed(chunk):
                            item = _stream_item(message)
                            delivered = True
                            yield Emit(item)
                            if one_task and _ends_task_stream(item):
                                return
            except httpx.TransportError as error:
                cause = error
            if response is not None:
                yield Close(response)
            failures = 0 if delivered else failures + 1
            if not connected and failures > self.retry.retries:
                raise ConnectionFailed(
                    f"GET {request.url}: no stream after {failures} attempts"
                ) from cause
            yield Sleep(self._reconnect_delay(decoder.retry_ms, failures))

    def _reconnect_delay(self, retry_ms: int | None, failures: int) -> float:
        """The service's ``retry:`` after a stream that delivered; backoff on top of it after
        failures in a row."""
        told = 0.0 if retry_ms is None else retry_ms / 1000
        return told if failures == 0 else max(told, self.retry.backoff_delay(failures))

    # ------------------------------------------------------------------ tracking

    def track(
        self,
        kind: str,
        title: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
        lease_seconds: int | None = None,
        *,
        progress_interval: float = 0.5,
        raise_on_cancel: bool = False,
    ) -> TrackOptions:
        """A task around a block of code: created and ``started`` on entry, ``succeeded`` on a
        normal exit (with ``result`` if set), ``failed`` when the block raises, ``cancelled``
        when it raises ``CancelRequested``. Progress is sent coalesced, at most once per
        ``progress_interval`` seconds; a lease is kept alive while the block runs. See
        ``docs/client.md``."""
        return TrackOptions(
            kind, title, metadata, id, lease_seconds, progress_interval, raise_on_cancel
        )
