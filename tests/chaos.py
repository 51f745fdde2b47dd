"""Clients that behave as real ones do when servers die, for the chaos and replica tests.

- :class:`Balancer`: which replicas are in rotation, as a load balancer sees them.
- :class:`Writers`: workers appending (single events, batches, creates) with an idempotency key
  on everything, retrying each operation through refusals and outages until it is
  acknowledged. So every operation issued ends up stored exactly once, and the log can be
  checked for equality with the operations, not just for "nothing acknowledged is missing".
- :class:`Follower`: an EventSource: follows a stream, and whenever the stream ends or the
  connection breaks, waits the server's ``retry:`` and resumes with ``Last-Event-ID`` on
  whichever replica the balancer gives it.
- :func:`assert_log_consistent`: every task equals the fold of its events (no half-written
  group), and every acknowledged answer is stored as it was answered.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from tests.helpers import Api, semantic
from tests.processes import Server, start_server
from tests.sse import Frame, SseClient
from tests.test_properties import assert_task_is_fold
from tests.test_stream_resume import assert_same_events

RETRY_SECONDS = 0.05
"""A writer's pause before trying an operation again (a worker's backoff, kept short)."""
RETRYABLE = {503}
"""Statuses that mean "not now": the database is away or the server is shutting down."""


def kind_of(task_id: str) -> str:
    """The kind the writers give a task (events do not carry it, followers filter by it)."""
    return f"k{zlib.crc32(task_id.encode()) % 3}"


def report(scenario: str, **numbers: object) -> None:
    """One line of what a scenario measured, on stdout (``pytest -s`` shows it); the numbers
    in docs/reliability.md come from these lines."""
    print(f"\nRESULT {scenario}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


async def readiness_becomes(server: Server, status: int, seconds: float = 30) -> float:
    """Ask ``/readyz`` until it answers ``status``; how long that took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = "no answer"
    try:
        async with asyncio.timeout(seconds):
            while True:
                try:
                    response = await server.client.get("/readyz")
                    if response.status_code == status:
                        return loop.time() - started
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as error:
                    last = repr(error)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"/readyz not {status} within {seconds} s: {last}") from None


def api(server: Server) -> Api:
    """The API of one replica, as tenant t1 with every scope."""
    return Api(server.client, server.token())


async def replicas(
    servers: list[Server], tmp_path: Path, database_url: str
) -> tuple[Server, Server]:
    """Two ``taskstream serve`` processes on one database with one secret, started together
    (each start is seconds of imports on a loaded machine)."""
    secret = secrets.token_urlsafe(32)
    first, second = await asyncio.gather(
        *(start_server(servers, tmp_path, database_url, secret) for _ in range(2))
    )
    return first, second


class Balancer:
    """The replicas in rotation; each new connection goes to one of them at random."""

    def __init__(self, servers: Sequence[Server], seed: int = 0) -> None:
        self.servers = list(servers)
        self.rng = random.Random(seed)

    def pick(self) -> Server:
        return self.rng.choice(self.servers)

    def route_to(self, *servers: Server) -> None:
        """Take replicas out of rotation or put them in: what a health check would do."""
        self.servers = list(servers)


class Watched:
    """Something running in the background that a test waits on: ``until`` wakes up at every
    change and fails at once if the background work failed."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def changed(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                while not condition():
                    self._check_tasks()
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what}: not within {seconds} s ({self!r})") from None

    def _check_tasks(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"{self!r} failed") from task.exception()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Leaving the block cancels whatever still runs (a test that failed half-way)."""
        await self.stop()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _watch(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                self.changed()

        self.tasks.append(asyncio.create_task(run()))


# ----------------------------------------------------------------------------- writers


@dataclass
class Ledger:
    """What the writers were told, by idempotency key."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> Event
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> Task
    recovered: int = 0  # operations whose first answers were lost, answered 200 by a retry
    failed_attempts: int = 0  # attempts refused (503) or cut off (no answer)
    unexpected: list[str] = field(default_factory=list)  # answers a retrying client must not get


class Writers(Watched):
    """``count`` workers appending until :meth:`finish`; each ends with the operation it is on.

    An operation is a create (``POST /v1/tasks``), a single ``progress``, or a batch of 2-8
    ``progress``/``log`` events on tasks created before. Every request carries idempotency
    keys and is repeated, through any replica, until every part of it was answered 201 or 200.
    """

    def __init__(self, balancer: Balancer, count: int, *, tasks_first: int = 4) -> None:
        super().__init__()
        self.balancer = balancer
        self.ledger = Ledger()
        self.in_flight = 0
        self.task_ids: list[str] = []
        self._stopping = asyncio.Event()
        self._tasks_first = tasks_first
        for seed in range(count):
            self._watch(self._write(seed))

    def __repr__(self) -> str:
        ledger = self.ledger
        return (
            f"Writers({len(ledger.events)} events and {len(ledger.tasks)} tasks acknowledged, "
            f"{ledger.failed_attempts} failed attempts, {self.in_flight} in flight, "
            f"unexpected: {ledger.unexpected[:5]})"
        )

    @property
    def acknowledged(self) -> int:
        return len(self.ledger.events) + len(self.ledger.tasks)

    async def finish(self, seconds: float = 60) -> None:
        """No new operations; wait until each writer's current one is acknowledged."""
        self._stopping.set()
        async with asyncio.timeout(seconds):
            await asyncio.gather(*self.tasks)

    async def _write(self, seed: int) -> None:
        rng = random.Random(seed)
        for n in range(10**9):
            if self._stopping.is_set():
                return
            prefix = f"w{seed}-{n}"
            if len(self.task_ids) < self._tasks_first or rng.random() < 0.1:
                await self._create(prefix)
            elif rng.random() < 0.5:
                await self._single(prefix, rng)
            else:
                await self._batch(prefix, rng)

    async def _create(self, task_id: str) -> None:
        body = {"id": task_id, "kind": kind_of(task_id), "title": task_id}
        headers = {"Idempotency-Key": task_id}

        def settle(response: httpx.Response, retried: bool) -> bool:
            if response.status_code not in (200, 201):
                return self._not_acknowledged(response, f"create {task_id}")
            task = response.json()
            self.ledger.recovered += retried and response.status_code == 200
            self.ledger.tasks[task_id] = task
            self.task_ids.append(task_id)
            return True

        await self._until_answered(
            lambda replica: replica.post("/v1/tasks", json=body, headers=headers), settle
        )

    async def _single(self, key: str, rng: random.Random) -> None:
        task_id = rng.choice(self.task_ids)
        body = {"type": "progress", "data": {"percent": rng.randint(0, 100), "key": key}}

        def settle(response: httpx.Response, retried: bool) -> bool:
            if response.status_code not in (200, 201):
                return self._not_acknowledged(response, f"append {key}")
            self._acknowledge(key, response.status_code, response.json(), retried)
            return True

        await self._until_answered(
            lambda replica: replica.post(
                f"/v1/tasks/{task_id}/events", json=body, headers={"Idempotency-Key": key}
            ),
            settle,
        )

    async def _batch(self, prefix: str, rng: random.Random) -> None:
        items = []
        for i in range(rng.randint(2, 8)):
            key = f"{prefix}.{i}"
            if rng.random() < 0.5:
                data: dict[str, Any] = {"percent": rng.randint(0, 100), "key": key}
                items.append({"type": "progress", "data": data})
            else:
                items.append({"type": "log", "data": {"level": "info", "message": key}})
            items[-1].update(task_id=rng.choice(self.task_ids), idempotency_key=key)

        def settle(response: httpx.Response, retried: bool) -> bool:
            if response.status_code != 200:
                return self._not_acknowledged(response, f"batch {prefix}")
            done = True
            for item, result in zip(items, response.json()["results"], strict=True):
                if result["status"] in (200, 201):
                    self._acknowledge(
                        item["idempotency_key"], result["status"], result["event"], retried
                    )
                else:
                    done = False
                    if result["status"] not in RETRYABLE:
                        self.ledger.unexpected.append(f"batch {prefix} item: {result}")
            return done

        await self._until_answered(
            lambda replica: replica.post("/v1/events/batch", json={"events": items}), settle
        )

    def _acknowledge(self, key: str, status: int, event: dict[str, Any], retried: bool) -> None:
        earlier = self.ledger.events.get(key)
        if earlier is None:
            self.ledger.recovered += retried and status == 200
            self.ledger.events[key] = event
        elif earlier["seq"] != event["seq"]:
            self.ledger.unexpected.append(f"{key}: answered {earlier} and then {event}")

    def _not_acknowledged(self, response: httpx.Response, what: str) -> bool:
        """Record an answer a retrying client must not get; always "try again"."""
        if response.status_code not in RETRYABLE:
            self.ledger.unexpected.append(f"{what}: {response.status_code} {response.text[:300]}")
        return False

    async def _until_answered(
        self,
        request: Callable[[Api], Awaitable[httpx.Response]],  # through the replica given
        settle: Callable[[httpx.Response, bool], bool],
    ) -> None:
        """Send through a replica until ``settle`` says every part was acknowledged."""
        self.in_flight += 1
        retried = False
        try:
            while True:
                server = self.balancer.pick()
                try:
                    response = await request(api(server))
                except httpx.TransportError:
                    pass
                else:
                    if settle(response, retried):
                        return
                retried = True
                self.ledger.failed_attempts += 1
                self.changed()
                await asyncio.sleep(RETRY_SECONDS)
        finally:
            self.in_flight -= 1
            self.changed()


# ----------------------------------------------------------------------------- followers


@dataclass
class Connection:
    """One connection of a follower, and how it ended."""

    base_url: str
    started: float
    opened: float | None = None  # when the answer's head arrived
    ended: float | None = None
    status: int = 0
    events: int = 0
    end: str = ""  # "clean" (last chunk), "eof", "reset", "refused: ...", "stopped"
    cut_mid_frame: bool = False


class Follower(Watched):
    """A stream followed the way an EventSource does, across replicas."""

    def __init__(
        self,
        name: str,
        balancer: Balancer,
        token: str,
        *,
        path: str = "/v1/stream",
        params: Sequence[tuple[str, str]] = (),
        last_event_id: int = 0,
        wants: Callable[[dict[str, Any]], bool] = lambda event: True,
    ) -> None:
        super().__init__()
        self.name = name
        self.balancer = balancer
        self.token = token
        self.path = path
        self.params = params
        self.wants = wants
        self.frames: list[Frame] = []
        self.arrivals: list[float] = []  # loop time of each frame's arrival
        self.connections: list[Connection] = []
        self.last_event_id = last_event_id
        self.retry_seconds = 0.2
        self.client: SseClient | None = None
        self._watch(self._follow())

    def __repr__(self) -> str:
        return (
            f"Follower({self.name}: {len(self.frames)} events through {self.last_event_id}, "
            f"connections {[(c.base_url[-5:], c.status, c.end) for c in self.connections]})"
        )

    async def reach(self, seq: int, seconds: float = 30) -> None:
        await self.until(lambda: self.last_event_id >= seq, f"{self.name} reaching {seq}", seconds)

    def assert_got_exactly(self, events: list[dict[str, Any]]) -> None:
        """Every event it wants, once, in seq order, as ``/v1/events`` has it."""
        assert_same_events(self.frames, [e for e in events if self.wants(e)], self.name)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            server = self.balancer.pick()
            connection = Connection(server.base_url, started=loop.time())
            self.connections.append(connection)
            try:
                await self._connection(server, connection)
            except OSError as error:  # refused, reset before the head, timed out
                connection.end = f"refused: {type(error).__name__}"
            finally:
                connection.ended = loop.time()
                if self.client is not None:
                    self.client.abort()
                    self.client = None
                self.changed()
            await asyncio.sleep(self.retry_seconds)

    async def _connection(self, server: Server, connection: Connection) -> None:
        self.client = client = await SseClient.open(
            server.base_url,
            self.path,
            token=self.token,
            last_event_id=self.last_event_id,
            params=self.params,
            seconds=10,
        )
        connection.status, connection.opened = client.status, asyncio.get_running_loop().time()
        assert client.status == 200, f"{self.name}: {client.status} {await client.read_body()!r}"
        try:
            while (frame := await client.next_frame(seconds=3600)) is not None:
                if frame.retry is not None:
                    self.retry_seconds = frame.retry / 1000
                if frame.is_event:
                    self.frames.append(frame)
                    self.arrivals.append(asyncio.get_running_loop().time())
                    self.last_event_id = int(frame.id or 0)
                    connection.events += 1
                    self.changed()
        finally:
            connection.end = (
                "clean" if client.clean_end else "reset" if client.reset else "eof"
            ) if client.ended else "stopped"  # fmt: skip
            connection.cut_mid_frame = bool(client.parser.pending)


async def stop_all(followers: Sequence[Follower]) -> None:
    await asyncio.gather(*(follower.stop() for follower in followers))


def followers_of_every_kind(balancer: Balancer, server: Server, tasks: list[str]) -> list[Follower]:
    """One follower of each kind of stream, all from the start of history (``Last-Event-ID:
    0``, so the first connection already replays): the tenant's stream, filtered by task ids,
    by type and by kind, and one task's own stream."""

    def token(n: int) -> str:
        return server.token(sub=f"reader-{n}")

    first, second = tasks[0], tasks[1]
    return [
        Follower("everything", balancer, token(0)),
        Follower(
            "two tasks", balancer, token(1),
            params=[("task_id", first), ("task_id", second)],
            wants=lambda event: event["task_id"] in (first, second),
        ),
        Follower(
            "logs", balancer, token(2), params=[("type", "log")],
            wants=lambda event: event["type"] == "log",
        ),
        Follower(
            "kind k1", balancer, token(3), params=[("kind", "k1")],
            wants=lambda event: kind_of(event["task_id"]) == "k1",
        ),
        Follower(
            f"task {first}", balancer, token(4), path=f"/v1/tasks/{first}/stream",
            wants=lambda event: event["task_id"] == first,
        ),
    ]  # fmt: skip


async def every_follower_reaches(
    followers: Sequence[Follower], events: list[dict[str, Any]], seconds: float = 30
) -> None:
    """Each follower has everything it wants of ``events`` (the history up to now)."""
    for follower in followers:
        wanted = [event["seq"] for event in events if follower.wants(event)]
        if wanted:
            await follower.reach(wanted[-1], seconds)


async def every_follower_streaming(followers: Sequence[Follower], seconds: float = 30) -> None:
    """Each follower has received an event on its current connection."""
    for follower in followers:
        await follower.until(
            lambda f=follower: f.connections[-1].events > 0,
            f"{follower.name} streaming",
            seconds,
        )


async def flowing(writers: Writers, operations: int) -> None:
    """Until the writers have had ``operations`` more operations acknowledged."""
    target = writers.acknowledged + operations
    await writers.until(
        lambda: writers.acknowledged >= target, f"{operations} more operations", seconds=60
    )


async def streaming_under_load(
    writers: Writers, balancer: Balancer, server: Server, operations: int
) -> list[Follower]:
    """Followers of every kind (through ``balancer``, tokens of ``server``'s secret), returned
    once ``operations`` more were acknowledged and every follower is streaming live."""
    await writers.until(lambda: len(writers.task_ids) >= 2, "tasks created", seconds=30)
    followers = followers_of_every_kind(balancer, server, writers.task_ids)
    try:
        await flowing(writers, operations)
        await every_follower_streaming(followers)
    except BaseException:
        await stop_all(followers)
        raise
    return followers


async def finish_and_check(
    writers: Writers, followers: Sequence[Follower], server: Server, operations: int
) -> list[dict[str, Any]]:
    """``operations`` more, then the writers finish; the log is checked through ``server``
    (:func:`assert_log_consistent`) and every follower catches up with it. Returns the log."""
    await flowing(writers, operations)
    await writers.finish()
    assert not writers.ledger.unexpected, writers.ledger.unexpected
    events = await assert_log_consistent(api(server), writers.ledger)
    await every_follower_reaches(followers, events)
    return events


def resumed_within(followers: Sequence[Follower], since: float) -> float:
    """How long after ``since`` the last of the followers had a stream open again."""
    return max(
        min(c.opened for c in f.connections if c.opened is not None and c.opened > since) - since
        for f in followers
    )


def first_event_after(follower: Follower, since: float) -> float:
    """How long after ``since`` the follower's next event arrived."""
    return min(arrival for arrival in follower.arrivals if arrival > since) - since


def reconnects(followers: Sequence[Follower]) -> int:
    return sum(len(follower.connections) - 1 for follower in followers)


# ----------------------------------------------------------------------------- the log


async def assert_log_consistent(api: Api, ledger: Ledger) -> list[dict[str, Any]]:
    """The stored log matches what the writers were told, and no task is half-written.

    - every task (``GET /v1/tasks``) is the fold of its events (``GET /v1/events``): it
      starts with its ``created`` event, versions run 1..n without holes, and the row's
      version, ``last_seq`` and fields are those the events give — so no group was
      written in part;
    - every event belongs to a listed task;
    - the events other than ``created`` are exactly the acknowledged ones, each as it was
      answered, and the tasks exactly the acknowledged creates: nothing acknowledged is
      missing and nothing is stored twice.

    Returns every event, for the streams to be compared with.
    """
    events = await api.all_events(limit=10000)
    tasks = {task["id"]: task for task in await api.all_tasks(limit=1000)}
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        history[event["task_id"]].append(event)
    assert set(history) == set(tasks), (
        f"events without a task: {sorted(set(history) - set(tasks))[:10]}; "
        f"tasks without events: {sorted(set(tasks) - set(history))[:10]}"
    )
    for task_id, task in tasks.items():
        assert_task_is_fold(task, history[task_id])

    assert set(tasks) == set(ledger.tasks), "tasks stored and tasks acknowledged differ"
    for task_id, task in ledger.tasks.items():
        assert history[task_id][0]["seq"] == task["last_seq"], f"{task_id} created twice?"
    stored = {event["seq"]: event for event in events if event["type"] != "created"}
    answered = {event["seq"]: event for event in ledger.events.values()}
    missing = sorted(set(answered) - set(stored))
    extra = sorted(set(stored) - set(answered))
    assert not missing, f"acknowledged but not stored: {missing[:20]}"
    assert not extra, f"stored but never acknowledged (a duplicate?): {extra[:20]}"
    for seq, event in answered.items():
        assert semantic(event) == semantic(stored[seq]), (event, stored[seq])
    return events
