"""Streams never lose an event: cut connections, slow readers, a lost LISTEN connection.

Every test ends by comparing what a subscriber assembled from its streams with the tenant's
history from ``GET /v1/events``: exactly those events, each once, in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.helpers import Service, assert_ok
from tests.sse import Frame, SseClient, wait_ready

STREAM = "/v1/stream"


def assert_same_events(frames: list[Frame], expected: list[dict[str, Any]], who: str) -> None:
    """The frames are exactly the expected events, once each, in seq order."""
    seqs = [int(frame.id or "-1") for frame in frames]
    duplicates = sorted({seq for seq in seqs if seqs.count(seq) > 1})
    assert not duplicates, f"{who}: duplicates {duplicates[:20]}"
    assert seqs == sorted(seqs), f"{who}: out of order"
    wanted = [event["seq"] for event in expected]
    missing = sorted(set(wanted) - set(seqs))
    extra = sorted(set(seqs) - set(wanted))
    assert not missing and not extra, f"{who}: missing {missing[:20]}, extra {extra[:20]}"
    for frame, event in zip(frames, expected, strict=True):
        assert frame.event == event["type"] and frame.json() == event, (frame.raw[:300], event)


def take_events(client: SseClient, into: list[Frame]) -> None:
    while client.unread:
        frame = client.unread.popleft()
        if frame.is_event:
            into.append(frame)


async def catch_up(
    service: Service, token: str, last_id: str, target: int, into: list[Frame], seconds: float = 10
) -> SseClient:
    """Resume from ``last_id`` and read until ``target`` has arrived."""
    client = await SseClient.open(service.base_url, STREAM, token=token, last_event_id=last_id)
    assert client.status == 200, await client.read_body()
    if into and int(into[-1].id or 0) >= target:
        return client
    async with asyncio.timeout(seconds):
        while True:
            frame = await client.next_event(seconds=seconds)
            assert frame is not None, "the resumed stream ended"
            into.append(frame)
            if int(frame.id or 0) >= target:
                return client


# ----------------------------------------------------------------------------- no loss

WRITERS = 8
OPERATIONS_PER_WRITER = 30
SUBSCRIBERS = 6
TASKS = 40


async def _writer(service: Service, seed: int, tasks: list[str]) -> int:
    """Appends singles and batches to random tasks; returns how many were acknowledged."""
    rng = random.Random(seed)
    api = service.api
    noise = service.as_(tenant="t2")
    acknowledged = 0
    for n in range(OPERATIONS_PER_WRITER):
        if rng.random() < 0.5:
            await api.event(rng.choice(tasks), "progress", {"percent": rng.randint(0, 100), "n": n})
            acknowledged += 1
        else:
            items: list[dict[str, Any]] = []
            for _ in range(rng.randint(2, 20)):
                data: dict[str, Any]
                if rng.random() < 0.5:
                    type, data = "progress", {"percent": rng.randint(0, 100), "writer": seed}
                else:
                    message = f"w{seed} op{n} " + "é" * rng.randint(0, 80)
                    type, data = "log", {"level": "info", "message": message}
                items.append({"task_id": rng.choice(tasks), "type": type, "data": data})
            results = assert_ok(await api.batch(items))["results"]
            assert all(result["status"] == 201 for result in results), results
            acknowledged += len(items)
        if rng.random() < 0.1:
            await noise.event("noise", "log", {"level": "info", "message": "other tenant"})
        await asyncio.sleep(rng.random() * 0.004)
    return acknowledged


@dataclass
class Subscriber:
    """Reads /v1/stream in pieces of random size, cuts the connection, resumes."""

    name: str
    token: str
    rng: random.Random
    frames: list[Frame] = field(default_factory=list)
    connections: int = 0
    cuts_mid_frame: int = 0
    last_id: str = "0"

    async def run(self, service: Service, target: list[int]) -> None:
        while not (target and self.frames and int(self.frames[-1].id or 0) >= target[0]):
            await self._one_connection(service, target)

    async def _one_connection(self, service: Service, target: list[int]) -> None:
        rng = self.rng
        resume: dict[str, Any] = (
            {"last_event_id": self.last_id}
            if rng.random() < 0.5
            else {"last_event_id_query": self.last_id}
        )
        client = await SseClient.open(service.base_url, STREAM, token=self.token, **resume)
        self.connections += 1
        try:
            assert client.status == 200, await client.read_body()
            budget = rng.choice([rng.randint(1, 400), rng.randint(400, 4000), 20000])
            taken = 0
            while taken < budget:
                try:
                    got = await client.read_raw(min(rng.randint(1, 2000), budget - taken), 0.2)
                except TimeoutError:
                    got = -1  # idle
                assert got != 0, f"{self.name}: the server ended a live /v1/stream"
                take_events(client, self.frames)
                if got > 0:
                    taken += got
                if target and self.frames and int(self.frames[-1].id or 0) >= target[0]:
                    break
            if client.parser.pending:
                self.cuts_mid_frame += 1
            if client.parser.last_event_id:
                self.last_id = client.parser.last_event_id
        finally:
            if rng.random() < 0.7:
                client.abort()
            else:
                client.close()


@pytest.mark.parametrize("service", [{"max_streams_per_subject": 1000}], indirect=True)
async def test_no_loss_with_concurrent_writers_and_subscribers_cutting_and_resuming(
    service: Service,
) -> None:
    await wait_ready(service.client)
    tasks = [f"task-{n}" for n in range(TASKS)]
    for task_id in tasks:
        await service.api.create_task(id=task_id, kind=f"k{len(task_id) % 3}")
    await service.as_(tenant="t2").create_task(id="noise")

    subscribers = [
        Subscriber(f"subscriber-{n}", service.token(sub=f"reader-{n}"), random.Random(1000 + n))
        for n in range(SUBSCRIBERS)
    ]
    target: list[int] = []
    reading = [asyncio.create_task(s.run(service, target)) for s in subscribers]
    try:
        counts = await asyncio.gather(*(_writer(service, n, tasks) for n in range(WRITERS)))
        expected = await service.api.all_events()
        assert len(expected) == TASKS + sum(counts)
        target.append(expected[-1]["seq"])
        async with asyncio.timeout(30):
            await asyncio.gather(*reading)
    finally:
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
    for subscriber in subscribers:
        assert_same_events(subscriber.frames, expected, subscriber.name)
    connections = sum(s.connections for s in subscribers)
    mid_frame = sum(s.cuts_mid_frame for s in subscribers)
    # The test is only worth something if it did what it says.
    assert connections >= SUBSCRIBERS * 5, connections
    assert mid_frame >= SUBSCRIBERS, f"only {mid_frame} of {connections} cuts fell mid-frame"


# ----------------------------------------------------------------------------- slow subscriber

EVENT_BYTES = 8000
BATCH = 25
MIN_EVENTS = 300
MAX_BYTES = 32 * 1024 * 1024


@dataclass
class Appends:
    acks: list[tuple[int, float]] = field(default_factory=list)  # (a batch's last seq, when)
    latencies: list[float] = field(default_factory=list)
    count: int = 0


async def _slot_freed(service: Service, sub: str) -> bool:
    """Whether ``sub`` (allowed one stream) can open another: its only stream is gone.

    A server cutting off a subscriber closes its socket, but the kernel still holds the
    megabytes already accepted for it and sends the FIN only after them; so the client cannot
    tell before it reads them. The stream limit tells at once.
    """
    probe = await SseClient.open(service.base_url, STREAM, token=service.token(sub=sub))
    try:
        if probe.status == 429:
            await probe.read_body()
            return False
        assert probe.status == 200, await probe.read_body()
        return True
    finally:
        probe.abort()


async def _append_until_cut_off(service: Service, slow: SseClient, sub: str) -> Appends:
    """Big events in batches until the slow subscriber has been cut off, and a few more."""
    loop = asyncio.get_running_loop()
    appends = Appends()
    cut_after: int | None = None
    while cut_after is None or appends.count < cut_after + 3 * BATCH:
        assert appends.count * EVENT_BYTES < MAX_BYTES, (
            f"{appends.count} events ({appends.count * EVENT_BYTES} bytes) appended and the "
            "slow subscriber is still connected: the server buffers for it without bound"
        )
        items = [
            {
                "task_id": "big",
                "type": "log",
                "data": {"level": "info", "message": f"{n:06d}" * (EVENT_BYTES // 6)},
            }
            for n in range(appends.count, appends.count + BATCH)
        ]
        started = loop.time()
        results = assert_ok(await service.api.batch(items))["results"]
        appends.latencies.append(loop.time() - started)
        assert all(result["status"] == 201 for result in results), results[0]
        appends.acks.append((results[-1]["event"]["seq"], loop.time()))
        appends.count += BATCH
        if (
            cut_after is None
            and appends.count >= MIN_EVENTS
            and (slow.closed_by_peer() or await _slot_freed(service, sub))
        ):
            cut_after = appends.count
    return appends


@pytest.mark.parametrize(
    "service", [{"stream_buffer_bytes": 65536, "max_streams_per_subject": 1}], indirect=True
)
async def test_a_slow_subscriber_is_cut_off_and_loses_nothing_while_others_flow(
    service: Service,
) -> None:
    await wait_ready(service.client)
    token = service.token()
    created = await service.api.create_task(id="big")
    loop = asyncio.get_running_loop()

    # The slow subscriber starts from an explicit position: the cut may come before it has
    # received a single whole frame (the reset discards what the kernel held), and it must
    # still know where to resume.
    start = created["last_seq"]
    slow_token = service.token(sub="slowpoke")
    slow = await SseClient.open(
        service.base_url, STREAM, token=slow_token, rcvbuf=4096, last_event_id=start
    )
    assert slow.status == 200
    assert (await slow.next_frame()) is not None  # retry:, then it stops reading
    normal = await SseClient.open(service.base_url, STREAM, token=token)
    assert normal.status == 200
    arrivals: dict[int, float] = {}
    normal_frames: list[Frame] = []

    async def read_normally() -> None:
        while (frame := await normal.next_event(seconds=60)) is not None:
            normal_frames.append(frame)
            arrivals[int(frame.id or 0)] = loop.time()

    reader = asyncio.create_task(read_normally())
    try:
        appends = await _append_until_cut_off(service, slow, "slowpoke")
        last_seq = appends.acks[-1][0]
        async with asyncio.timeout(10):
            while last_seq not in arrivals:
                assert not reader.done(), reader
                await asyncio.sleep(0.01)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    assert not normal.ended, "the subscriber that kept up was disconnected"
    slowest = max(appends.latencies)
    assert slowest < 2.0, f"appends were held up: {slowest:.2f} s"
    lag = max(arrivals[seq] - acked for seq, acked in appends.acks)
    assert lag < 2.0, f"the other subscriber was held up: {lag:.2f} s behind"

    # The slow one reads what reached it before the cut, then the connection is over.
    slow_frames: list[Frame] = []
    async with asyncio.timeout(20):
        while await slow.read_raw(65536) > 0:
            take_events(slow, slow_frames)
    take_events(slow, slow_frames)
    assert slow.ended, "the slow subscriber was not cut off"
    assert len(slow_frames) < appends.count, "the slow subscriber got everything: not cut off"
    resumed = await catch_up(
        service, slow_token, slow.parser.last_event_id or str(start), last_seq, slow_frames
    )
    resumed.abort()
    normal.abort()
    expected = await service.api.all_events()
    assert_same_events(slow_frames, expected[1:], "slow subscriber")
    assert_same_events(normal_frames, expected[1:], "normal subscriber")


# ----------------------------------------------------------------------------- the listener


def _database_name(url: str) -> str:
    # Not url.rsplit("/"): the embedded Postgres's URLs carry ?host=/path/to/socket.
    return urlsplit(url).path.lstrip("/")


async def _listener_pids(admin: asyncpg.Connection, database: str) -> list[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND datname = $1",
        database,
    )
    return [row["pid"] for row in rows]


async def _wait_for_listener(
    admin: asyncpg.Connection, database: str, other_than: int | None = None
) -> int:
    try:
        async with asyncio.timeout(10):
            while True:
                pids = [p for p in await _listener_pids(admin, database) if p != other_than]
                if pids:
                    assert len(pids) == 1, f"more than one LISTEN connection: {pids}"
                    return pids[0]
                await asyncio.sleep(0.02)
    except TimeoutError:
        rows = await admin.fetch(
            "SELECT pid, state, query FROM pg_stat_activity WHERE datname = $1", database
        )
        raise AssertionError(f"no LISTEN connection: {[dict(row) for row in rows]}") from None


# The probe runs SELECT 1 on the LISTEN connection each poll; a long poll keeps its last query
# "LISTEN ..." (how it is found) and keeps the slow poll from hiding a listener that is gone.
@pytest.mark.parametrize(
    "service", [{"listener_poll_seconds": 30, "listener_probe_seconds": 1}], indirect=True
)
async def test_the_listener_survives_pg_terminate_backend(service: Service) -> None:
    await wait_ready(service.client)
    token = service.token()
    database = _database_name(service.database_url)
    await service.api.create_task(id="job")
    await service.api.event("job", "started")
    everything = await SseClient.open(service.base_url, STREAM, token=token, last_event_id=0)
    one = await SseClient.open(service.base_url, "/v1/tasks/job/stream", token=token)
    assert everything.status == one.status == 200
    global_frames: list[Frame] = []
    task_frames: list[Frame] = []
    admin = await asyncpg.connect(service.database_url)
    try:
        first = await service.api.event("job", "progress", {"percent": 1})
        global_frames += await everything.events_through(first["seq"])
        task_frames += await one.events_through(first["seq"])

        pid = await _wait_for_listener(admin, database)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        # Appended while the listener is away: caught up from the table when it is back.
        during = [await service.api.event("job", "progress", {"percent": 10 + n}) for n in range(5)]
        await _wait_for_listener(admin, database, other_than=pid)
        after = [await service.api.event("job", "progress", {"percent": 50 + n}) for n in range(5)]
        last = after[-1]["seq"]
        global_frames += await everything.events_through(last, seconds=5)
        task_frames += await one.events_through(last, seconds=5)
        assert len(during) == 5
    finally:
        await admin.close()
        everything.abort()
        one.abort()
    history = await service.api.history("job")
    assert_same_events(global_frames, history, "/v1/stream")
    task_events = [frame for frame in task_frames if frame.event != "snapshot"]
    assert_same_events(task_events, history[2:], "/v1/tasks/job/stream")
    assert (await service.client.get("/readyz")).status_code == 200


# ----------------------------------------------------------------------------- connections

STREAMS = 500


@pytest.fixture
def enough_files() -> None:
    """500 streams are 1000 sockets in this process (both ends)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * STREAMS + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _connections(admin: asyncpg.Connection, database: str) -> int:
    count = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )
    return int(count)


@pytest.fixture
async def clients() -> AsyncIterator[list[SseClient]]:
    opened: list[SseClient] = []
    yield opened
    for client in opened:
        client.abort()


@pytest.mark.parametrize("service", [{"max_streams_per_subject": 1000}], indirect=True)
async def test_database_connections_stay_constant_with_500_streams_open(
    service: Service, enough_files: None, clients: list[SseClient]
) -> None:
    await wait_ready(service.client)
    token = service.token()
    database = _database_name(service.database_url)
    await service.api.create_task(id="job")
    history = await service.api.history("job")
    admin = await asyncpg.connect(service.database_url)
    try:
        first = await SseClient.open(service.base_url, STREAM, token=token)
        clients.append(first)
        assert first.status == 200
        before = await _connections(admin, database)

        async def open_one(n: int) -> SseClient:
            # Half of them resume from the start: a backfill each, all at once.
            client = await SseClient.open(
                service.base_url,
                STREAM if n % 4 else "/v1/tasks/job/stream",
                token=token,
                last_event_id=0 if n % 2 else None,
                seconds=30,
            )
            clients.append(client)
            assert client.status == 200, await client.read_body()
            return client

        opened = await asyncio.gather(*(open_one(n) for n in range(STREAMS - 1)))
        for client in opened:
            assert (await client.next_frame(seconds=30) or Frame()).retry is not None
        during = await _connections(admin, database)
        event = await service.api.event("job", "progress", {"percent": 50})
        for client in [first, *opened]:
            frames = await client.events_through(event["seq"], seconds=30)
            assert int(frames[-1].id or 0) == event["seq"]
        assert len(history) == 1
        after = await _connections(admin, database)
    finally:
        await admin.close()
    # The pool and the one listener connection; nothing per stream or per backfill.
    bound = service.settings.pool_size + 1
    assert during <= max(before, bound) and after <= max(before, bound), (before, during, after)
