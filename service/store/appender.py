"""The append path: concurrent appends are group-committed, one transaction and one NOTIFY each.

Each request hands its commands to a queue and waits. A committer takes everything queued (up
to ``group_max`` events) and commits it with two statements: read the task rows (and any
idempotency keys), plan every command in Python against them, then write the whole group in
one statement that is its own transaction (``queries.WRITE_GROUP``): it takes the global
position lock, writes events and task rows only where the rows are still as read, notifies,
commits. The commit and the NOTIFY, which serialise every appender in Postgres, are paid once
per group instead of once per event.

Commands of one request are applied in order, each seeing the effect of those before it. A
command the state machine refuses fails alone. When another appender changed a task or used a
key between the read and the write, the group is planned again from fresh rows; if the
database refuses the group for any other reason, its commands are retried one by one so a bad
one never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from service import metrics
from service.domain.models import CreatedData, EventType, TaskStatus
from service.domain.payload import CheckedEvent
from service.domain.problems import (
    InternalError,
    NotReady,
    Problem,
    TaskExists,
    TaskNotFound,
    ValidationFailed,
    VersionConflict,
)
from service.domain.state import (
    OPEN,
    StoredEvent,
    TaskState,
    apply,
    created,
    task_from_row,
    transition,
)
from service.store import queries
from service.store.database import UNAVAILABLE, Database

log = logging.getLogger(__name__)

# A task changed or a task id or idempotency key was taken between a group's read and write.
CONFLICTS = (asyncpg.SerializationError, asyncpg.UniqueViolationError)
CONFLICT_ATTEMPTS = 20

TaskKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CreateTask:
    tenant: str
    task_id: str
    data: CreatedData
    data_json: str
    idempotency_key: str | None = None
    fingerprint: str | None = None
    lease_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class AppendEvent:
    tenant: str
    task_id: str
    event: CheckedEvent
    expected_version: int | None = None
    idempotency_key: str | None = None


Command = CreateTask | AppendEvent


@dataclass(frozen=True, slots=True)
class Appended:
    """A successful command: ``replayed`` when an idempotency key matched an earlier one (or a
    cancel request an earlier request); ``cancel_pending`` says whether the task, as this
    command's group left it, has a cancel request it has not acted on yet."""

    event: StoredEvent
    replayed: bool
    task: TaskState | None = None  # the task as created, for CreateTask
    cancel_pending: bool = False


Outcome = Appended | Problem


@dataclass(slots=True)
class _Request:
    commands: Sequence[Command]
    endpoint: str
    future: asyncio.Future[list[Outcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    arrived: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class _Pending:
    """A command that passed validation and waits for its position."""

    command: Command
    version: int
    ordinal: int = 0
    event: StoredEvent | None = None
    task: TaskState | None = None


@dataclass(slots=True)
class _Replay:
    """An idempotent retry of a command in the same group."""

    of: _Pending


Step = _Pending | _Replay | Appended | Problem


class Appender:
    def __init__(self, database: Database, *, group_max: int, committers: int) -> None:
        self._database = database
        self._group_max = group_max
        self._committers = committers
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"committer-{n}") for n in range(self._committers)
        ]

    async def close(self) -> None:
        """Stop taking appends, commit everything already queued, then return."""
        self._closing = True
        for _ in self._tasks:
            self._queue.put_nowait(None)
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def submit(self, commands: Sequence[Command], endpoint: str) -> list[Outcome]:
        """Apply the commands in order; one outcome per command, in the same order.

        ``endpoint`` (one of metrics.ENDPOINTS) labels the request's latency."""
        if self._closing:
            raise NotReady("shutting down")
        request = _Request(commands, endpoint)
        self._queue.put_nowait(request)
        # A client that goes away cancels only this future: the commands are queued and are
        # committed with their group, whose committer skips answers nobody waits for. (No
        # asyncio.shield, which costs a second future per append.)
        return await request.future

    async def _run(self) -> None:
        while True:
            request = await self._queue.get()
            if request is None:
                return
            group = [request]
            size = len(request.commands)
            while size < self._group_max and not self._queue.empty():
                queued = self._queue.get_nowait()
                if queued is None:
                    self._queue.put_nowait(None)  # leave the stop signal for after this group
                    break
                group.append(queued)
                size += len(queued.commands)
            await self._commit_group(group)

    async def _commit_group(self, group: list[_Request]) -> None:
        commands = [command for request in group for command in request.commands]
        try:
            outcomes = await self._commit_isolated(commands)
        except Exception as error:  # a bug must fail these requests, not the committer
            log.exception("append group failed")
            for request in group:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        start = 0
        now = time.perf_counter()
        for request in group:
            end = start + len(request.commands)
            if not request.future.done():
                request.future.set_result(outcomes[start:end])
            metrics.append_timers[request.endpoint].observe(now - request.arrived)
            start = end
        _count(outcomes)

    async def _commit_isolated(self, commands: list[Command]) -> list[Outcome]:
        try:
            return await self._commit(commands)
        except UNAVAILABLE as error:
            return [NotReady(f"database unavailable: {error}")] * len(commands)
        except asyncpg.PostgresError as error:
            if len(commands) > 1:
                log.info("group of %d refused (%s); retrying one by one", len(commands), error)
                return [outcome for c in commands for outcome in await self._commit_isolated([c])]
            log.error("append refused by the database: %s", error)
            return [InternalError("the database refused the event")]

    async def _commit(self, commands: list[Command]) -> list[Outcome]:
        """Plan and write; plan again when a concurrent appender got to a task or key first.

        Each conflict means another group committed, so the system as a whole moves on; the
        jittered pause lets a hot task's writers fall out of step.
        """
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                async with self._database.connection() as connection:
                    return await _Group(connection, commands).commit()
            except CONFLICTS:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0, 0.001 * attempt))
        raise AssertionError("unreachable")


class _Group:
    """One transaction's worth of commands."""

    def __init__(self, connection: Any, commands: list[Command]) -> None:
        self.connection = connection
        self.commands = commands
        self.states: dict[TaskKey, TaskState] = {}
        self.read_versions: dict[TaskKey, int] = {}
        self.cancelled_here: set[TaskKey] = set()  # their cancel_seq is an ordinal

    async def commit(self) -> list[Outcome]:
        await self._read_tasks()
        plan = await self._plan()
        pending = [step for step in plan if isinstance(step, _Pending)]
        if pending:
            await self._write(pending)
        return [
            _outcome(step, self._cancel_pending(command))
            for step, command in zip(plan, self.commands, strict=True)
        ]

    def _cancel_pending(self, command: Command) -> bool:
        state = self.states.get((command.tenant, command.task_id))
        return state is not None and state.cancel_pending

    async def _read_tasks(self) -> None:
        keys = list({(c.tenant, c.task_id) for c in self.commands})
        rows = await self.connection.fetch(
            queries.READ_TASKS, [k[0] for k in keys], [k[1] for k in keys]
        )
        self.states = {(row["tenant"], row["id"]): task_from_row(row) for row in rows}
        self.read_versions = {key: state.version for key, state in self.states.items()}

    async def _earlier_events(self) -> dict[tuple[str, str, str], StoredEvent]:
        keyed = [c for c in self.commands if isinstance(c, AppendEvent) and c.idempotency_key]
        if not keyed:
            return {}
        rows = await self.connection.fetch(
            queries.FIND_EVENTS_BY_KEY,
            [c.tenant for c in keyed],
            [c.task_id for c in keyed],
            [c.idempotency_key for c in keyed],
        )
        return {
            (r["tenant"], r["task_id"], r["idempotency_key"]): StoredEvent(*r[:7]) for r in rows
        }

    async def _earlier_cancels(self) -> dict[TaskKey, Appended | _Replay]:
        """The cancel requests a repeated request answers with, by task."""
        seqs = {
            state.cancel_seq
            for c in self.commands
            if _is_cancel(c)
            and (state := self.states.get((c.tenant, c.task_id))) is not None
            and state.cancel_seq is not None
        }
        if not seqs:
            return {}
        rows = await self.connection.fetch(queries.EVENTS_AT, list(seqs))
        return {(r["tenant"], r["task_id"]): Appended(StoredEvent(*r), replayed=True) for r in rows}

    async def _earlier_creates(self) -> dict[tuple[str, str], tuple[str | None, Appended]]:
        keyed = [c for c in self.commands if isinstance(c, CreateTask) and c.idempotency_key]
        if not keyed:
            return {}
        rows = await self.connection.fetch(
            queries.FIND_CREATES_BY_KEY,
            [c.tenant for c in keyed],
            [c.idempotency_key for c in keyed],
        )
        found: dict[tuple[str, str], tuple[str | None, Appended]] = {}
        for row in rows:
            event = StoredEvent(
                row["seq"], row["task_id"], row["tenant"], 1, "created", row["data"], row["time"]
            )
            data = CreatedData.model_validate_json(row["data"])
            task = created(
                event.tenant, event.task_id, data, event.seq, event.time, row["lease_seconds"]
            )
            found[(row["tenant"], row["create_key"])] = (
                row["create_fingerprint"],
                Appended(event, replayed=True, task=task),
            )
        return found

    async def _plan(self) -> list[Step]:
        """Validate every command in order against the locked state; nothing is written yet."""
        planner = _Planner(
            status={key: state.status for key, state in self.states.items()},
            version={key: state.version for key, state in self.states.items()},
            earlier_events=await self._earlier_events(),
            earlier_creates=await self._earlier_creates(),
            cancels=await self._earlier_cancels(),
        )
        plan: list[Step] = []
        for command in self.commands:
            try:
                if isinstance(command, CreateTask):
                    plan.append(planner.create(command))
                else:
                    plan.append(planner.append(command))
            except Problem as problem:
                plan.append(problem)
        return plan

    async def _write(self, pending: list[_Pending]) -> None:
        """Fold with ordinals for positions, then take positions and write in one statement."""
        for ordinal, step in enumerate(pending, start=1):
            self._fold(step, ordinal)
        touched = sorted({(s.command.tenant, s.command.task_id) for s in pending})
        tasks = [self.states[key] for key in touched]
        creates = {
            (s.command.tenant, s.command.task_id): s.command
            for s in pending
            if isinstance(s.command, CreateTask)
        }
        rows = await self.connection.fetch(
            queries.WRITE_GROUP,
            queries.APPEND_LOCK_KEY,
            len(pending),
            [s.command.tenant for s in pending],
            [s.command.task_id for s in pending],
            [self.states[(s.command.tenant, s.command.task_id)].kind for s in pending],
            [s.version for s in pending],
            [_event_type(s.command) for s in pending],
            [_event_data(s.command) for s in pending],
            [_event_key(s.command) for s in pending],
            *_task_columns(tasks, self.cancelled_here),
            [creates[key].idempotency_key if key in creates else None for key in touched],
            [creates[key].fingerprint if key in creates else None for key in touched],
            [self.read_versions.get(key) for key in touched],
            sum(key in self.read_versions for key in touched),
        )
        positions = [(row["seq"], row["time"]) for row in rows]
        for step in pending:
            command = step.command
            seq, time = positions[step.ordinal - 1]
            step.event = StoredEvent(
                seq,
                command.task_id,
                command.tenant,
                step.version,
                _event_type(command),
                _event_data(command),
                time,
            )
            if step.task is not None:
                step.task = _resolve(step.task, positions)
        for key in self.cancelled_here:
            state = self.states[key]
            assert state.cancel_seq is not None
            self.states[key] = state._replace(cancel_seq=positions[state.cancel_seq - 1][0])

    def _fold(self, step: _Pending, ordinal: int) -> None:
        command = step.command
        key = (command.tenant, command.task_id)
        step.ordinal = ordinal
        seq, time = ordinal, _placeholder(ordinal)
        if isinstance(command, CreateTask):
            state = created(
                command.tenant, command.task_id, command.data, seq, time, command.lease_seconds
            )
            step.task = state
        else:
            state = apply(self.states[key], command.event.type, command.event.data, seq, time)
            if _is_cancel(command):
                self.cancelled_here.add(key)
        self.states[key] = state


@dataclass(slots=True)
class _Planner:
    """What the commands planned so far did to their tasks and keys, for the next command."""

    status: dict[TaskKey, TaskStatus]
    version: dict[TaskKey, int]
    earlier_events: dict[tuple[str, str, str], StoredEvent]
    earlier_creates: dict[tuple[str, str], tuple[str | None, Appended]]
    cancels: dict[TaskKey, Appended | _Replay]
    event_keys: dict[tuple[str, str, str], _Pending] = field(default_factory=dict)
    create_keys: dict[tuple[str, str], tuple[str | None, _Pending]] = field(default_factory=dict)

    def create(self, command: CreateTask) -> Step:
        key = (command.tenant, command.task_id)
        if command.idempotency_key:
            create_key = (command.tenant, command.idempotency_key)
            if create_key in self.earlier_creates:
                fingerprint, answer = self.earlier_creates[create_key]
                return _same_body(command, fingerprint, answer)
            if create_key in self.create_keys:
                fingerprint, first = self.create_keys[create_key]
                return _same_body(command, fingerprint, _Replay(first))
        if key in self.status:
            raise TaskExists(f"task {command.task_id!r} already exists")
        step = _Pending(command, 1)
        self.status[key], self.version[key] = TaskStatus.PENDING, 1
        if command.idempotency_key:
            self.create_keys[(command.tenant, command.idempotency_key)] = (
                command.fingerprint,
                step,
            )
        return step

    def append(self, command: AppendEvent) -> Step:
        key = (command.tenant, command.task_id)
        event_key = (command.tenant, command.task_id, command.idempotency_key or "")
        if command.idempotency_key:
            if event_key in self.earlier_events:
                return Appended(self.earlier_events[event_key], replayed=True)
            if event_key in self.event_keys:
                return _Replay(self.event_keys[event_key])
        if key not in self.status:
            raise TaskNotFound(f"task {command.task_id!r} does not exist")
        if _is_cancel(command) and self.status[key] in OPEN and key in self.cancels:
            return self.cancels[key]  # one request stands for all of them
        if command.expected_version is not None and command.expected_version != self.version[key]:
            raise VersionConflict(
                f"expected version {command.expected_version}, the task is at {self.version[key]}"
            )
        self.status[key] = transition(self.status[key], command.event.type)
        self.version[key] += 1
        step = _Pending(command, self.version[key])
        if _is_cancel(command):
            self.cancels[key] = _Replay(step)
        if command.idempotency_key:
            self.event_keys[event_key] = step
        return step


# The fold runs before positions exist: it is given ordinals within the group as ``seq`` and
# instants in year 1 as times, which WRITE_GROUP and _resolve replace by the real positions.
_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _placeholder(ordinal: int) -> datetime:
    return _ORIGIN + ordinal * _MICROSECOND


def _ordinal(value: datetime | None) -> int | None:
    return None if value is None or value.year != 1 else (value - _ORIGIN) // _MICROSECOND


def _real(value: datetime | None) -> datetime | None:
    return None if value is None or value.year == 1 else value


def _resolve(state: TaskState, positions: list[tuple[int, datetime]]) -> TaskState:
    def time(value: datetime | None) -> datetime | None:
        ordinal = _ordinal(value)
        return value if ordinal is None else positions[ordinal - 1][1]

    created_at, updated_at = time(state.created_at), time(state.updated_at)
    assert created_at is not None and updated_at is not None
    return state._replace(
        last_seq=positions[state.last_seq - 1][0],
        created_at=created_at,
        updated_at=updated_at,
        started_at=time(state.started_at),
        finished_at=time(state.finished_at),
    )


def _same_body(
    command: CreateTask, fingerprint: str | None, answer: Appended | _Replay
) -> Appended | _Replay | Problem:
    if fingerprint != command.fingerprint:
        return ValidationFailed(
            "Idempotency-Key was already used with a different body",
            errors=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
        )
    return answer


def _is_cancel(command: Command) -> bool:
    return isinstance(command, AppendEvent) and command.event.type is EventType.CANCEL_REQUESTED


def _event_key(command: Command) -> str | None:
    return command.idempotency_key if isinstance(command, AppendEvent) else None


def _event_type(command: Command) -> str:
    return command.event.type.value if isinstance(command, AppendEvent) else "created"


def _event_data(command: Command) -> str:
    return command.event.data_json if isinstance(command, AppendEvent) else command.data_json


def _task_columns(tasks: list[TaskState], cancelled_here: set[TaskKey]) -> list[list[Any]]:
    """Task states as the column arrays WRITE_GROUP unnests into ``states``."""
    here = [(t.tenant, t.id) in cancelled_here for t in tasks]
    return [
        [t.tenant for t in tasks],
        [t.id for t in tasks],
        [t.kind for t in tasks],
        [t.title for t in tasks],
        [t.status.value for t in tasks],
        [t.percent for t in tasks],
        [t.done for t in tasks],
        [t.total for t in tasks],
        [t.message for t in tasks],
        [t.stage for t in tasks],
        [t.result for t in tasks],
        [t.error for t in tasks],
        [t.metadata for t in tasks],
        [t.version for t in tasks],
        [t.last_seq for t in tasks],
        [_real(t.created_at) for t in tasks],
        [_ordinal(t.created_at) for t in tasks],
        [_real(t.started_at) for t in tasks],
        [_ordinal(t.started_at) for t in tasks],
        [_real(t.finished_at) for t in tasks],
        [_ordinal(t.finished_at) for t in tasks],
        [None if h else t.cancel_seq for t, h in zip(tasks, here, strict=True)],
        [t.cancel_seq if h else None for t, h in zip(tasks, here, strict=True)],
        [t.lease_seconds for t in tasks],
    ]


def _count(outcomes: list[Outcome]) -> None:
    """One increment per type and per kind of failure in the group, not one per event."""
    metrics.append_group_events.observe(len(outcomes))
    appended = Counter(o.event.type for o in outcomes if isinstance(o, Appended) and not o.replayed)
    for type_name, count in appended.items():
        metrics.events_appended.labels(type_name).inc(count)
    unavailable = sum(isinstance(o, NotReady) for o in outcomes)
    if unavailable:
        metrics.append_errors.labels("database_unavailable").inc(unavailable)
    refused = sum(isinstance(o, InternalError) for o in outcomes)
    if refused:
        metrics.append_errors.labels("database_refused").inc(refused)


def _outcome(step: Step, cancel_pending: bool) -> Outcome:
    if isinstance(step, _Pending):
        assert step.event is not None
        return Appended(step.event, False, step.task, cancel_pending)
    if isinstance(step, _Replay):
        assert step.of.event is not None
        return Appended(step.of.event, True, step.of.task, cancel_pending)
    if isinstance(step, Appended):
        return Appended(step.event, step.replayed, step.task, cancel_pending)
    return step
