"""Server-Sent Events, clause by clause: a real SSE client (tests/sse.py) over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from tests.conftest import ServiceFactory
from tests.helpers import (
    ALL_SCOPES,
    Service,
    assert_problem,
    assert_problem_body,
    assert_task,
    settled,
)
from tests.sse import ChunkDecoder, Frame, FrameParser, SseClient, wait_ready

STREAM = "/v1/stream"
RETRY_MS = 1234


def task_stream(task_id: str) -> str:
    return f"/v1/tasks/{task_id}/stream"


class Streams:
    """Opens streams for a test and aborts whatever is still open when it ends."""

    def __init__(self) -> None:
        self.clients: list[SseClient] = []
        self.ready: set[str] = set()

    async def open(
        self,
        service: Service,
        path: str,
        *,
        token: str | None = None,
        anonymous: bool = False,
        tenant: str = "t1",
        scopes: str = ALL_SCOPES,
        sub: str = "alice",
        ready: bool = True,
        **kwargs: Any,
    ) -> SseClient:
        if ready and service.base_url not in self.ready:
            await wait_ready(service.client)
            self.ready.add(service.base_url)
        if token is None and not anonymous:
            token = service.token(tenant=tenant, scopes=scopes, sub=sub)
        client = await SseClient.open(service.base_url, path, token=token, **kwargs)
        self.clients.append(client)
        return client

    async def live(self, service: Service, path: str, **kwargs: Any) -> SseClient:
        """A stream that answered 200 and sent its ``retry:`` frame."""
        client = await self.open(service, path, **kwargs)
        await assert_stream_started(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.abort()


@pytest.fixture
async def streams(service_factory: ServiceFactory) -> AsyncIterator[Streams]:
    # Depends on service_factory so that the clients go before the services they talk to.
    opened = Streams()
    yield opened
    opened.close()


async def assert_stream_started(client: SseClient, retry_ms: int | None = None) -> Frame:
    """200, the event-stream headers, and a first frame that is only ``retry:``."""
    if client.status != 200:
        body = await client.read_body()
        raise AssertionError(f"expected 200, got {client.status}: {body[:500]!r}")
    assert (client.header("content-type") or "").startswith("text/event-stream"), client.headers
    frame = await client.next_frame(seconds=2)
    assert frame is not None, "the stream ended before its retry: frame"
    assert frame.retry is not None and not frame.is_event, f"first frame is not retry: {frame}"
    if retry_ms is not None:
        assert frame.retry == retry_ms, frame
    return frame


async def assert_stream_problem(client: SseClient, status: int, code: str) -> dict[str, Any]:
    body = await client.read_body()
    assert client.status == status, f"expected {status}, got {client.status}: {body[:500]!r}"
    content_type = client.header("content-type") or ""
    assert content_type.startswith("application/problem+json"), content_type
    problem: dict[str, Any] = json.loads(body)
    assert_problem_body(problem, status, code)
    return problem


def assert_frame_is(frame: Frame | None, event: dict[str, Any]) -> None:
    """One frame per event: ``id`` is the seq, ``event`` the type, ``data`` the Event on one
    line, equal to the Event the REST API returns."""
    assert frame is not None, f"the stream ended instead of sending {event}"
    assert frame.id == str(event["seq"]), (frame.id, event)
    assert frame.event == event["type"], (frame.event, event)
    assert len(frame.data_lines) == 1, f"data must be one line: {frame.raw!r}"
    assert frame.json() == event, (frame.json(), event)


def ids(frames: list[Frame]) -> list[int]:
    return [int(frame.id or "-1") for frame in frames]


async def fill(service: Service, task_id: str = "job", count: int = 5) -> list[dict[str, Any]]:
    """A running task with ``count`` progress events after ``created`` and ``started``."""
    await service.api.create_task(id=task_id)
    await service.api.event(task_id, "started")
    for n in range(count):
        await service.api.event(task_id, "progress", {"percent": n * 10, "message": f"step {n}"})
    return await service.api.history(task_id)


# ----------------------------------------------------------------------------- the answer


@pytest.mark.parametrize("service", [{"retry_ms": RETRY_MS}], indirect=True)
@pytest.mark.parametrize("path", [STREAM, task_stream("job")])
async def test_stream_answers_200_event_stream_no_cache_no_buffering(
    service: Service, streams: Streams, path: str
) -> None:
    await service.api.create_task(id="job")
    client = await streams.open(service, path)
    assert client.status == 200, await client.read_body()
    assert (client.header("content-type") or "").split(";")[0].strip() == "text/event-stream"
    assert "no-cache" in (client.header("cache-control") or "").lower(), client.headers
    assert (client.header("x-accel-buffering") or "").lower() == "no", client.headers
    await assert_stream_started(client, RETRY_MS)


@pytest.mark.parametrize(
    "service", [{"retry_ms": RETRY_MS, "heartbeat_seconds": 30}], indirect=True
)
@pytest.mark.parametrize("path", [STREAM, task_stream("job")])
async def test_retry_is_the_first_bytes_and_sent_at_once(
    service: Service, streams: Streams, path: str
) -> None:
    await service.api.create_task(id="job")
    client = await streams.open(service, path)
    assert client.status == 200
    # No event will come on /v1/stream and the heartbeat is 30 s away: the retry: frame must
    # not wait for either.
    async with asyncio.timeout(1.0):
        while b"\n" not in client.body:
            assert await client.read_raw() > 0, "the stream ended"
    assert bytes(client.body).startswith(f"retry: {RETRY_MS}\n".encode()), bytes(client.body)
    first = await client.next_frame(seconds=1)
    assert first is not None and first.retry == RETRY_MS and not first.is_event, first


# ----------------------------------------------------------------------------- frames


async def test_each_event_is_one_frame_id_seq_event_type_data_the_rest_event(
    service: Service, streams: Streams
) -> None:
    await service.api.create_task(id="a", title="first")
    client = await streams.live(service, STREAM)
    await service.api.event("a", "started")
    # Text that would break a naive one-line data field if not JSON-escaped.
    await service.api.event(
        "a", "log", {"level": "info", "message": "two\nlines\r\n: not a comment"}
    )
    await service.api.event("a", "progress", {"done": 3, "total": 4, "message": "üñí 😀"})
    response = await service.api.batch(
        [
            {"task_id": "a", "type": "progress", "data": {"percent": 90}},
            {"task_id": "a", "type": "succeeded", "data": {"result": {"n": [1, 2.5, None]}}},
        ]
    )
    assert response.status_code == 200, response.text
    expected = (await service.api.history("a"))[1:]  # everything after "created"
    frames = await client.events(len(expected))
    for frame, event in zip(frames, expected, strict=True):
        assert_frame_is(frame, event)
        lines = frame.raw.decode().split("\n")
        assert lines[:2] == [f"id: {event['seq']}", f"event: {event['type']}"], frame.raw
        assert lines[2].startswith("data: ") and lines[3:] == ["", ""], frame.raw


async def test_created_event_reaches_the_global_stream(service: Service, streams: Streams) -> None:
    client = await streams.live(service, STREAM)
    task = await service.api.create_task(id="new", kind="render", title="t")
    [created] = await service.api.history("new")
    assert created["seq"] == task["last_seq"]
    assert_frame_is(await client.next_event(), created)


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("how", ["header", "query"])
@pytest.mark.parametrize("where", ["global", "task"])
async def test_resume_sends_everything_after_the_position_then_live_without_gap_or_duplicate(
    service: Service, streams: Streams, how: str, where: str
) -> None:
    history = await fill(service, "job", count=5)
    position = history[2]["seq"]
    path = STREAM if where == "global" else task_stream("job")
    resume: dict[str, Any] = (
        {"last_event_id": position} if how == "header" else {"last_event_id_query": position}
    )
    client = await streams.live(service, path, **resume)
    backfill = await client.events(len(history) - 3)
    for frame, event in zip(backfill, history[3:], strict=True):
        assert_frame_is(frame, event)
    live = [await service.api.event("job", "progress", {"percent": 90 + n}) for n in range(3)]
    for event in live:
        assert_frame_is(await client.next_event(), event)


async def test_resume_from_zero_replays_the_whole_history(
    service: Service, streams: Streams
) -> None:
    history = await fill(service, "job", count=3)
    client = await streams.live(service, STREAM, last_event_id=0)
    for frame, event in zip(await client.events(len(history)), history, strict=True):
        assert_frame_is(frame, event)


@pytest.mark.parametrize("where", ["global", "task"])
async def test_last_event_id_header_wins_over_the_query_parameter(
    service: Service, streams: Streams, where: str
) -> None:
    history = await fill(service, "job", count=5)
    path = STREAM if where == "global" else task_stream("job")
    # The header says later than the query ...
    client = await streams.live(
        service, path, last_event_id=history[4]["seq"], last_event_id_query=history[1]["seq"]
    )
    assert_frame_is(await client.next_event(), history[5])
    # ... and earlier: the header wins either way (not the larger, not the smaller).
    client = await streams.live(
        service, path, last_event_id=history[1]["seq"], last_event_id_query=history[4]["seq"]
    )
    assert_frame_is(await client.next_event(), history[2])


BAD_POSITIONS = ["abc", "-1", "1.5", "1e3", "0x10", "12abc", " 1 2"]
# Digits Python's int() would take, but not an ASCII integer; only a query can carry them.
BAD_QUERY_POSITIONS = ["\u0661\u0662", "1_000"]


@pytest.mark.parametrize(
    ("value", "how"),
    [(value, how) for value in BAD_POSITIONS for how in ("header", "query")]
    + [(value, "query") for value in BAD_QUERY_POSITIONS],
)
@pytest.mark.parametrize("where", ["global", "task"])
async def test_bad_last_event_id_is_400_validation_error(
    service: Service, streams: Streams, value: str, how: str, where: str
) -> None:
    await service.api.create_task(id="job")
    path = STREAM if where == "global" else task_stream("job")
    resume: dict[str, Any] = (
        {"last_event_id": value} if how == "header" else {"last_event_id_query": value}
    )
    client = await streams.open(service, path, **resume)
    await assert_stream_problem(client, 400, "validation_error")


async def test_a_bad_header_is_400_even_with_a_good_query_parameter(
    service: Service, streams: Streams
) -> None:
    client = await streams.open(service, STREAM, last_event_id="abc", last_event_id_query=1)
    await assert_stream_problem(client, 400, "validation_error")


async def test_the_query_parameter_is_not_used_when_the_header_is_present(
    service: Service, streams: Streams
) -> None:
    history = await fill(service, "job", count=2)
    client = await streams.live(
        service, STREAM, last_event_id=history[0]["seq"], last_event_id_query="abc"
    )
    assert_frame_is(await client.next_event(), history[1])


@pytest.mark.parametrize("where", ["global", "task"])
async def test_resume_position_above_the_newest_seq_waits_for_live_events(
    service: Service, streams: Streams, where: str
) -> None:
    history = await fill(service, "job", count=2)
    newest = history[-1]["seq"]
    position = newest + 2
    path = STREAM if where == "global" else task_stream("job")
    client = await streams.live(service, path, last_event_id=position)
    appended: list[dict[str, Any]] = []
    while not appended or appended[-1]["seq"] <= position:
        appended.append(await service.api.event("job", "progress", {"percent": len(appended)}))
    received = await client.events_through(appended[-1]["seq"])
    assert all(int(frame.id or 0) > newest for frame in received), "an old event was replayed"
    beyond = [event for event in appended if event["seq"] > position]
    tail = [frame for frame in received if int(frame.id or 0) > position]
    assert len(tail) == len(beyond)
    for frame, event in zip(tail, beyond, strict=True):
        assert_frame_is(frame, event)


# ----------------------------------------------------------------------------- one task


async def test_task_stream_without_resume_starts_with_the_snapshot(
    service: Service, streams: Streams
) -> None:
    await fill(service, "job", count=2)
    client = await streams.live(service, task_stream("job"))
    task = await service.api.task("job")
    snapshot = await client.next_event()
    assert snapshot is not None and snapshot.event == "snapshot", snapshot
    assert snapshot.id == str(task["last_seq"]), (snapshot.id, task)
    assert len(snapshot.data_lines) == 1, snapshot.raw
    assert_task(snapshot.json())
    assert settled(snapshot.json()) == settled(task)
    event = await service.api.event("job", "progress", {"percent": 77})
    assert_frame_is(await client.next_event(), event)


async def test_task_stream_sends_only_that_task(service: Service, streams: Streams) -> None:
    await service.api.create_task(id="mine")
    await service.api.create_task(id="other")
    client = await streams.live(service, task_stream("mine"))
    assert (await client.next_event() or Frame()).event == "snapshot"
    await service.api.event("other", "started")
    await service.api.event("other", "progress", {"percent": 5})
    mine = await service.api.event("mine", "started")
    assert_frame_is(await client.next_event(), mine)


@pytest.mark.parametrize("terminal", ["succeeded", "failed", "cancelled"])
async def test_task_stream_ends_after_the_terminal_event(
    service: Service, streams: Streams, terminal: str
) -> None:
    await service.api.create_task(id="job")
    client = await streams.live(service, task_stream("job"))
    assert (await client.next_event() or Frame()).event == "snapshot"
    started = await service.api.event("job", "started")
    final = await service.api.event("job", terminal)
    assert_frame_is(await client.next_event(), started)
    assert_frame_is(await client.next_event(), final)
    assert await client.rest(seconds=2) == [], "nothing may follow the terminal event"
    assert client.clean_end, "the response must end with its last chunk"


async def test_finished_task_with_nothing_after_the_resume_position_is_204(
    service: Service, streams: Streams
) -> None:
    await service.api.create_task(id="done")
    await service.api.bring_to("done", "succeeded")
    task = await service.api.task("done")
    for position in (task["last_seq"], task["last_seq"] + 1000):
        for resume in ({"last_event_id": position}, {"last_event_id_query": position}):
            client = await streams.open(service, task_stream("done"), **resume)
            body = await client.read_body(seconds=2)
            assert client.status == 204, (position, client.status, body[:300])
            assert body == b""


async def test_finished_task_with_events_after_the_resume_position_sends_them_then_ends(
    service: Service, streams: Streams
) -> None:
    await service.api.create_task(id="done")
    await service.api.bring_to("done", "failed")
    history = await service.api.history("done")
    client = await streams.live(service, task_stream("done"), last_event_id=history[0]["seq"])
    frames = await client.rest(seconds=3)
    assert client.clean_end
    events = [frame for frame in frames if frame.is_event]
    assert len(events) == 2, frames
    for frame, event in zip(events, history[1:], strict=True):
        assert_frame_is(frame, event)


async def test_finished_task_without_resume_gets_its_snapshot_then_the_end(
    service: Service, streams: Streams
) -> None:
    await service.api.create_task(id="done")
    await service.api.bring_to("done", "cancelled")
    task = await service.api.task("done")
    client = await streams.live(service, task_stream("done"))
    frames = [frame for frame in await client.rest(seconds=3) if frame.is_event]
    assert client.clean_end
    assert len(frames) == 1, frames
    assert frames[0].event == "snapshot" and frames[0].id == str(task["last_seq"])
    assert frames[0].json() == task


@pytest.mark.parametrize("tenant", ["t1", "t2"])
async def test_task_stream_of_an_unknown_or_other_tenants_task_is_404(
    service: Service, streams: Streams, tenant: str
) -> None:
    await service.as_(tenant="t2").create_task(id="theirs")
    task_id = "theirs" if tenant == "t2" else "nobody"
    resumes: list[dict[str, Any]] = [{}, {"last_event_id": 0}]
    for resume in resumes:
        client = await streams.open(service, task_stream(task_id), tenant="t1", **resume)
        await assert_stream_problem(client, 404, "task_not_found")


# ----------------------------------------------------------------------------- every task


async def test_global_stream_without_resume_starts_with_events_after_the_connection(
    service: Service, streams: Streams
) -> None:
    await fill(service, "old", count=3)
    client = await streams.live(service, STREAM)
    await service.api.create_task(id="new")
    [created] = await service.api.history("new")
    event = await service.api.event("old", "progress", {"percent": 99})
    assert_frame_is(await client.next_event(), created)
    assert_frame_is(await client.next_event(), event)


async def _filter_case(
    service: Service,
    streams: Streams,
    params: list[tuple[str, str | int]],
    matches: Callable[[dict[str, Any], dict[str, str]], bool],
    write: Callable[[int], Awaitable[None]],
) -> None:
    """Backfill and live part of a filtered stream carry exactly the matching events.

    ``write(round)`` appends a mix of events whose last one matches the filter; since a stream
    is in seq order, receiving that one proves nothing matching or not came before it unseen.
    """
    kinds: dict[str, str] = {}
    await write(0)
    for task in await service.api.all_tasks():
        kinds[task["id"]] = task["kind"]
    before = await service.api.all_events()
    replay = await streams.live(service, STREAM, params=params, last_event_id=0)
    live = await streams.live(service, STREAM, params=params)
    await write(1)
    for task in await service.api.all_tasks():
        kinds[task["id"]] = task["kind"]
    after = (await service.api.all_events())[len(before) :]
    want_replay = [event for event in before + after if matches(event, kinds)]
    want_live = [event for event in after if matches(event, kinds)]
    assert want_live and len(want_replay) > len(want_live), "the case must match something"
    for client, wanted in ((replay, want_replay), (live, want_live)):
        got = await client.events_through(wanted[-1]["seq"])
        assert ids(got) == [event["seq"] for event in wanted]
        for frame, event in zip(got, wanted, strict=True):
            assert_frame_is(frame, event)


async def test_filter_by_task_id_repeatable(service: Service, streams: Streams) -> None:
    async def write(round: int) -> None:
        for task_id in ("a", "b", "c"):
            if round == 0:
                await service.api.create_task(id=task_id)
            await service.api.event(task_id, "progress", {"percent": round})
        await service.api.event("b", "log", {"level": "info", "message": "not wanted"})
        await service.api.event("c", "log", {"level": "info", "message": "wanted"})

    await _filter_case(
        service,
        streams,
        [("task_id", "a"), ("task_id", "c")],
        lambda event, kinds: event["task_id"] in ("a", "c"),
        write,
    )


async def test_filter_by_type_repeatable(service: Service, streams: Streams) -> None:
    async def write(round: int) -> None:
        task_id = f"job{round}"
        await service.api.create_task(id=task_id)
        await service.api.event(task_id, "progress", {"percent": 5})
        await service.api.event(task_id, "log", {"level": "info", "message": "x"})
        await service.api.event(task_id, "succeeded")

    await _filter_case(
        service,
        streams,
        [("type", "created"), ("type", "succeeded")],
        lambda event, kinds: event["type"] in ("created", "succeeded"),
        write,
    )


async def test_filter_by_kind_repeatable(service: Service, streams: Streams) -> None:
    async def write(round: int) -> None:
        for kind in ("build", "deploy", "test"):
            task_id = f"{kind}-{round}"
            await service.api.create_task(id=task_id, kind=kind)
            await service.api.event(task_id, "started")
        await service.api.event(f"deploy-{round}", "progress", {"percent": 50})
        await service.api.event(f"build-{round}", "progress", {"percent": 50})

    await _filter_case(
        service,
        streams,
        [("kind", "build"), ("kind", "test")],
        lambda event, kinds: kinds[event["task_id"]] in ("build", "test"),
        write,
    )


async def test_filters_combine(service: Service, streams: Streams) -> None:
    async def write(round: int) -> None:
        for task_id, kind in (("x", "build"), ("y", "deploy")):
            if round == 0:
                await service.api.create_task(id=task_id, kind=kind)
            await service.api.event(task_id, "progress", {"percent": round})
            await service.api.event(task_id, "log", {"level": "info", "message": "m"})
        await service.api.event("x", "progress", {"percent": 60 + round})

    await _filter_case(
        service,
        streams,
        [("task_id", "x"), ("task_id", "y"), ("type", "progress"), ("kind", "build")],
        lambda event, kinds: (
            event["task_id"] in ("x", "y")
            and event["type"] == "progress"
            and kinds[event["task_id"]] == "build"
        ),
        write,
    )


async def test_at_most_100_task_ids(service: Service, streams: Streams) -> None:
    hundred: list[tuple[str, str | int]] = [("task_id", f"t{n}") for n in range(100)]
    await streams.live(service, STREAM, params=hundred)
    client = await streams.open(service, STREAM, params=[*hundred, ("task_id", "t100")])
    problem = await assert_stream_problem(client, 422, "validation_error")
    assert any("task_id" in error["field"] for error in problem["errors"]), problem


async def test_unknown_and_other_tenants_task_ids_are_accepted_and_nothing_of_them_is_sent(
    service: Service, streams: Streams
) -> None:
    theirs = service.as_(tenant="t2")
    await theirs.create_task(id="shared")
    await theirs.create_task(id="later")
    client = await streams.live(
        service, STREAM, params=[("task_id", "shared"), ("task_id", "later")]
    )
    replay = await streams.live(
        service, STREAM, params=[("task_id", "shared"), ("task_id", "later")], last_event_id=0
    )
    await theirs.event("shared", "started")
    await theirs.event("later", "progress", {"percent": 1})
    # The task does not exist in t1 yet: the subscriber was there first.
    await service.api.create_task(id="later")
    [created] = await service.api.history("later")
    mine = await service.api.event("later", "started")
    for stream in (client, replay):
        assert_frame_is(await stream.next_event(), created)
        assert_frame_is(await stream.next_event(), mine)


async def test_global_stream_never_shows_another_tenant(service: Service, streams: Streams) -> None:
    theirs = service.as_(tenant="t2")
    await theirs.create_task(id="job")
    await theirs.event("job", "started")
    live = await streams.live(service, STREAM)
    replay = await streams.live(service, STREAM, last_event_id=0)
    await theirs.event("job", "progress", {"percent": 10})
    await service.api.create_task(id="job")  # the same id, in t1
    await theirs.event("job", "progress", {"percent": 20})
    mine = await service.api.event("job", "started")
    history = await service.api.history("job")
    assert_frame_is(await live.next_event(), history[0])
    assert_frame_is(await live.next_event(), mine)
    assert_frame_is(await replay.next_event(), history[0])
    assert_frame_is(await replay.next_event(), mine)


# ----------------------------------------------------------------------------- auth


@pytest.mark.parametrize("path", [STREAM, task_stream("job")])
async def test_stream_without_a_token_is_401(service: Service, streams: Streams, path: str) -> None:
    await service.api.create_task(id="job")
    await assert_stream_problem(
        await streams.open(service, path, anonymous=True), 401, "unauthorized"
    )
    await assert_stream_problem(
        await streams.open(service, path, token="not-a-jwt", token_in_query=True),
        401,
        "unauthorized",
    )
    expired = service.token(ttl_seconds=-3600)
    await assert_stream_problem(
        await streams.open(service, path, token=expired, token_in_query=True), 401, "unauthorized"
    )


@pytest.mark.parametrize("path", [STREAM, task_stream("job")])
async def test_access_token_in_the_query_opens_a_stream(
    service: Service, streams: Streams, path: str
) -> None:
    await service.api.create_task(id="job")
    client = await streams.live(service, path, token_in_query=True, last_event_id=0)
    [created] = await service.api.history("job")
    assert_frame_is(await client.next_event(), created)


@pytest.mark.parametrize(
    "path", ["/v1/tasks/job", "/v1/tasks", "/v1/tasks/job/events", "/v1/events"]
)
async def test_access_token_in_the_query_is_ignored_outside_streams(
    service: Service, path: str
) -> None:
    await service.api.create_task(id="job")
    response = await service.client.get(path, params={"access_token": service.token()})
    assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize("in_query", [False, True])
@pytest.mark.parametrize("path", [STREAM, task_stream("job")])
async def test_stream_without_tasks_read_is_403(
    service: Service, streams: Streams, path: str, in_query: bool
) -> None:
    await service.api.create_task(id="job")
    client = await streams.open(
        service, path, scopes="tasks:write events:read", token_in_query=in_query
    )
    await assert_stream_problem(client, 403, "forbidden")


# ----------------------------------------------------------------------------- idle


@pytest.mark.parametrize("service", [{"heartbeat_seconds": 0.2}], indirect=True)
@pytest.mark.parametrize("path", [STREAM, task_stream("job")])
async def test_idle_stream_sends_keep_alive_comments(
    service: Service, streams: Streams, path: str
) -> None:
    await service.api.create_task(id="job")
    client = await streams.live(service, path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    beats: list[float] = []
    async with asyncio.timeout(3):
        while len(beats) < 3:
            frame = await client.next_frame()
            assert frame is not None, "the stream ended"
            if frame.is_event:
                assert frame.event == "snapshot", frame
                continue
            assert frame.comments == ["keep-alive"], frame
            assert frame.raw == b": keep-alive\n\n", frame.raw
            beats.append(loop.time())
    assert beats[0] - started < 1.0
    assert beats[-1] - started > 0.3, "three heartbeats 0.2 s apart cannot come at once"
    event = await service.api.event("job", "started")
    assert_frame_is(await client.next_event(), event)


# ----------------------------------------------------------------------------- the limit


async def _open_within(
    streams: Streams, service: Service, path: str, seconds: float, **kwargs: Any
) -> SseClient:
    """Retries a refused (429) stream until ``seconds`` have passed."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        client = await streams.open(service, path, **kwargs)
        if client.status != 429 or asyncio.get_running_loop().time() > deadline:
            await assert_stream_started(client)
            return client
        client.abort()
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("service", [{"max_streams_per_subject": 2}], indirect=True)
async def test_too_many_streams_for_one_subject_is_429(service: Service, streams: Streams) -> None:
    await service.api.create_task(id="job")
    first = await streams.live(service, STREAM, sub="alice")
    await streams.live(service, task_stream("job"), sub="alice")  # both kinds count
    refused = await streams.open(service, STREAM, sub="alice", tenant="t1")
    await assert_stream_problem(refused, 429, "too_many_streams")
    retry_after = (refused.header("retry-after") or "").strip()
    assert retry_after.isdigit() or parsedate_to_datetime(retry_after), refused.headers
    # Another subject is not affected.
    await streams.live(service, STREAM, sub="bob")
    await streams.live(service, task_stream("job"), sub="bob")
    # A freed slot can be used again.
    first.close()
    await _open_within(streams, service, STREAM, 2.0, sub="alice")


@pytest.mark.parametrize("service", [{"max_streams_per_subject": 1}], indirect=True)
async def test_the_stream_limit_is_per_token_sub_across_tenants(
    service: Service, streams: Streams
) -> None:
    await streams.live(service, STREAM, sub="alice", tenant="t1")
    refused = await streams.open(service, STREAM, sub="alice", tenant="t2")
    await assert_stream_problem(refused, 429, "too_many_streams")


@pytest.mark.parametrize("service", [{"max_streams_per_subject": 2}], indirect=True)
@pytest.mark.parametrize("how", ["reset", "fin"])
async def test_a_vanished_client_is_noticed_promptly_and_its_slot_freed(
    service: Service, streams: Streams, how: str
) -> None:
    await service.api.create_task(id="job")
    gone = await streams.live(service, STREAM)
    stays = await streams.live(service, task_stream("job"))
    assert (await streams.open(service, STREAM)).status == 429
    if how == "reset":
        gone.abort()
    else:
        gone.close()
    started = asyncio.get_running_loop().time()
    replacement = await _open_within(streams, service, STREAM, 1.5)
    assert asyncio.get_running_loop().time() - started < 1.5
    # The one that stayed is unaffected, and so is the replacement.
    event = await service.api.event("job", "started")
    assert (await stays.next_event() or Frame()).event == "snapshot"
    assert_frame_is(await stays.next_event(), event)
    assert_frame_is(await replacement.next_event(), event)


@pytest.mark.parametrize("service", [{"max_streams_per_subject": 1}], indirect=True)
async def test_a_finished_task_stream_frees_its_slot(service: Service, streams: Streams) -> None:
    await service.api.create_task(id="job")
    client = await streams.live(service, task_stream("job"))
    await service.api.event("job", "succeeded")
    await client.rest()
    assert client.clean_end
    await _open_within(streams, service, STREAM, 1.0)


# ----------------------------------------------------------------------------- not ready


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _assert_not_ready_answer(service: Service, streams: Streams) -> None:
    for path in (STREAM, task_stream("job")):
        resumes: list[dict[str, Any]] = [{}, {"last_event_id": 5}]
        for resume in resumes:
            client = await streams.open(service, path, ready=False, **resume)
            body = await client.read_body(seconds=5)
            assert client.status == 200, (path, client.status, body[:300])
            assert (client.header("content-type") or "").startswith("text/event-stream")
            frames = client.frames
            assert frames and frames[0].retry == RETRY_MS, body
            assert not any(frame.is_event for frame in frames), body
            assert client.clean_end, "the not-ready answer ends cleanly"


async def test_stream_while_the_database_is_unreachable_is_200_retry_then_end(
    service_factory: ServiceFactory, streams: Streams
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    service = await service_factory(database_url=url, retry_ms=RETRY_MS)
    await _assert_not_ready_answer(service, streams)


async def test_stream_while_the_schema_is_missing_is_200_retry_then_end(
    service_factory: ServiceFactory, streams: Streams, empty_database_url: str
) -> None:
    service = await service_factory(database_url=empty_database_url, retry_ms=RETRY_MS)
    await _assert_not_ready_answer(service, streams)


# ----------------------------------------------------------------------------- the client itself


def test_the_test_client_parses_frames_by_the_whatwg_rules() -> None:
    """tests/sse.py is what every test here trusts; fed a byte at a time it must still agree."""
    stream = (
        b"\xef\xbb\xbfretry: 2000\n\n: keep-alive\n\n"
        b'id: 5\nevent: progress\ndata: {"a":1}\n\n'
        b"id: 6\r\nevent: log\r\ndata: x\r\ndata:y\r\n\r\n"
        b"id: 7\revent: z\rdata: q\r\rretry: soon\nid\n\n"
        b"id: 8\ndata: cut"
    )
    parser = FrameParser()
    frames = [frame for i in range(len(stream)) for frame in parser.feed(stream[i : i + 1])]
    fields = [(f.id, f.event, f.data_lines, f.retry, f.comments) for f in frames]
    assert fields == [
        (None, None, [], 2000, []),
        (None, None, [], None, ["keep-alive"]),
        ("5", "progress", ['{"a":1}'], None, []),
        ("6", "log", ["x", "y"], None, []),
        ("7", "z", ["q"], None, []),
        ("", None, [], None, []),
    ]
    assert frames[2].raw == b'id: 5\nevent: progress\ndata: {"a":1}\n\n'
    assert parser.last_event_id == "", "an empty id field resets the last event id"
    assert parser.pending == b"id: 8\ndata: cut", "an unfinished frame is not dispatched"


def test_the_test_client_decodes_chunks_split_anywhere() -> None:
    body = [b"retry: 1\n\n", b"id: 1\ndata: " + b"x" * 300 + b"\n\n"]
    wire = b"".join(b"%x;ext=1\r\n%b\r\n" % (len(chunk), chunk) for chunk in body) + b"0\r\n\r\n"
    for size in (1, 2, 7, len(wire)):
        decoder = ChunkDecoder()
        out = b"".join(decoder.feed(wire[i : i + size]) for i in range(0, len(wire), size))
        assert out == b"".join(body) and decoder.done


async def test_one_batch_reaches_mixed_subscribers_each_with_exactly_its_selection(
    service: Service, streams: Streams
) -> None:
    """A batch commits as one group, so the listener publishes many frames at once: the
    tenant's unfiltered streams share one joined write, filtered ones get their own, and no
    other tenant's stream sees any of it."""
    for task_id, kind in (("a", "build"), ("b", "deploy")):
        await service.api.create_task(id=task_id, kind=kind)
    await service.as_(tenant="t2").create_task(id="a")
    everything = await streams.live(service, "/v1/stream")
    only_a = await streams.live(service, "/v1/stream", params=[("task_id", "a")])
    only_logs = await streams.live(service, "/v1/stream", params=[("type", "log")])
    deploys = await streams.live(service, "/v1/stream", params=[("kind", "deploy")])
    other_tenant = await streams.live(service, "/v1/stream", tenant="t2")
    items = [
        {"task_id": task_id, "type": "log", "data": {"level": "info", "message": str(n)}}
        if n % 3 == 0
        else {"task_id": task_id, "type": "progress", "data": {"percent": n}}
        for n in range(1, 31)
        for task_id in ("a", "b")
    ]
    results = (await service.api.batch(items)).json()["results"]
    events = [result["event"] for result in results]
    assert [result["status"] for result in results] == [201] * len(items)
    cases = [
        (everything, events),
        (only_a, [e for e in events if e["task_id"] == "a"]),
        (only_logs, [e for e in events if e["type"] == "log"]),
        (deploys, [e for e in events if e["task_id"] == "b"]),
    ]
    for client, expected in cases:
        frames = await client.events_through(expected[-1]["seq"])
        assert [json.loads(frame.data) for frame in frames] == expected
    with pytest.raises(TimeoutError):
        await other_tenant.next_event(seconds=0.5)
