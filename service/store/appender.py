"""The append path: concurrent appends are group-committed, one transaction and one NOTIFY each.

Each request hands its commands to a queue and waits. A committer takes everything queued (up
to ``group_max`` events) and commits it in one transaction: lock the task rows in a fixed order,
validate every command in Python against the locked state, take positions under the global
lock (see ``queries.ASSIGN_POSITIONS``), write all events and task rows in one statement, commit.
The commit and the NOTIFY, which serialise every appender in Postgres, are paid once per group
instead of once per event.

Commands of one request are applied in order, each seeing the effect of those before it. A
command the state machine refuses fails alone; if the database refuses the group as a whole,
its commands are retried one by one so a bad one never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

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
from service.domain.state import StoredEvent, TaskState, apply, created, task_from_row, transition
from service.store import queries
from service.store.database import UNAVAILABLE, Database

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CreateTask:
    tenant: str
    task_id: str
    data: CreatedData
    data_json: str
    idempotency_key: str | None = None
    fingerprint: str | None = None


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
    """A successful command: ``replayed`` when an idempotency key matched an earlier one."""

    event: StoredEvent
    replayed: bool
    task: TaskState | None = None  # the task as created, for CreateTask


Outcome = Appended | Problem


@dataclass(slots=True)
class _Request:
    commands: Sequence[Command]
    future: asyncio.Future[list[Outcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Pending:
    """A command that passed validation and waits for its position."""

    command: Command
    version: int
    event: StoredEvent | None = None
    task: TaskState | None = None


@dataclass(slots=True)
class _Replay:
    """An idempotent retry of a command in the same group."""

    of: _Pending


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

    async def submit(self, commands: Sequence[Command]) -> list[Outcome]:
        """Apply the commands in order; one outcome per command, in the same order."""
        if self._closing:
            raise NotReady("shutting down")
        request = _Request(commands)
        self._queue.put_nowait(request)
        # Shielded: a client that goes away must not cancel an append other requests share.
        return await asyncio.shield(request.future)

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
        for request in group:
            end = start + len(request.commands)
            if not request.future.done():
                request.future.set_result(outcomes[start:end])
            start = end

    async def _commit_isolated(self, commands: list[Command]) -> list[Outcome]:
        try:
            return await self._commit(commands)
        except UNAVAILABLE as error:
            return [NotReady(f"database unavailable: {error}")] * len(commands)
        except asyncpg.PostgresError as error:
            if len(commands) > 1:
                log.info("group of %d refused (%s); retrying one by one", len(commands), error)
                return [outcome for c in commands for outcome in await self._commit_isolated([c])]
            # Alone, a unique violation means a concurrent transaction committed the same task
            # or key after our checks; once more sees it and answers like any other conflict.
            try:
                return await self._commit(commands)
            except UNAVAILABLE as again:
                return [NotReady(f"database unavailable: {again}")]
            except asyncpg.PostgresError as again:
                log.error("append refused by the database: %s", again)
                return [InternalError("the database refused the event")]

    async def _commit(self, commands: list[Command]) -> list[Outcome]:
        async with self._database.connection() as connection, connection.transaction():
            return await _Group(connection, commands).commit()


class _Group:
    """One transaction's worth of commands."""

    def __init__(self, connection: Any, commands: list[Command]) -> None:
        self.connection = connection
        self.commands = commands
        self.states: dict[TaskKey, TaskState] = {}

    async def commit(self) -> list[Outcome]:
        await self._lock_tasks()
        plan = await self._plan()
        pending = [step for step in plan if isinstance(step, _Pending)]
        if pending:
            await self._write(pending)
        return [_outcome(step) for step in plan]

    async def _lock_tasks(self) -> None:
        keys = sorted({(c.tenant, c.task_id) for c in self.commands})
        rows = await self.connection.fetch(
            queries.LOCK_TASKS, [k[0] for k in keys], [k[1] for k in keys]
        )
        self.states = {(row["tenant"], row["id"]): task_from_row(row) for row in rows}

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
            task = created(event.tenant, event.task_id, data, event.seq, event.time)
            found[(row["tenant"], row["create_key"])] = (
                row["create_fingerprint"],
                Appended(event, replayed=True, task=task),
            )
        return found

    async def _plan(self) -> list[_Pending | _Replay | Appended | Problem]:
        """Validate every command in order against the locked state; nothing is written yet."""
        earlier_events = await self._earlier_events()
        earlier_creates = await self._earlier_creates()
        status = {key: state.status for key, state in self.states.items()}
        version = {key: state.version for key, state in self.states.items()}
        event_keys: dict[tuple[str, str, str], _Pending] = {}
        create_keys: dict[tuple[str, str], tuple[str | None, _Pending]] = {}
        plan: list[_Pending | _Replay | Appended | Problem] = []
        for command in self.commands:
            key = (command.tenant, command.task_id)
            try:
                if isinstance(command, CreateTask):
                    if command.idempotency_key:
                        create_key = (command.tenant, command.idempotency_key)
                        if create_key in earlier_creates:
                            fingerprint, answer = earlier_creates[create_key]
                            plan.append(_same_body(command, fingerprint, answer))
                            continue
                        if create_key in create_keys:
                            fingerprint, first = create_keys[create_key]
                            plan.append(_same_body(command, fingerprint, _Replay(first)))
                            continue
                    if key in status:
                        raise TaskExists(f"task {command.task_id!r} already exists")
                    step = _Pending(command, 1)
                    status[key], version[key] = TaskStatus.PENDING, 1
                    if command.idempotency_key:
                        create_keys[(command.tenant, command.idempotency_key)] = (
                            command.fingerprint,
                            step,
                        )
                else:
                    if command.idempotency_key:
                        event_key = (command.tenant, command.task_id, command.idempotency_key)
                        if event_key in earlier_events:
                            plan.append(Appended(earlier_events[event_key], replayed=True))
                            continue
                        if event_key in event_keys:
                            plan.append(_Replay(event_keys[event_key]))
                            continue
                    if key not in status:
                        raise TaskNotFound(f"task {command.task_id!r} does not exist")
                    if (
                        command.expected_version is not None
                        and command.expected_version != version[key]
                    ):
                        raise VersionConflict(
                            f"expected version {command.expected_version},"
                            f" the task is at {version[key]}"
                        )
                    status[key] = transition(status[key], command.event.type)
                    version[key] += 1
                    step = _Pending(command, version[key])
                    if command.idempotency_key:
                        event_keys[(command.tenant, command.task_id, command.idempotency_key)] = (
                            step
                        )
                plan.append(step)
            except Problem as problem:
                plan.append(problem)
        return plan

    async def _write(self, pending: list[_Pending]) -> None:
        positions = sorted(
            await self.connection.fetch(
                queries.ASSIGN_POSITIONS, queries.APPEND_LOCK_KEY, len(pending)
            )
        )
        new_tasks: set[TaskKey] = set()
        for step, (seq, time) in zip(pending, positions, strict=True):
            self._fold(step, seq, time, new_tasks)
        events = [step.event for step in pending if step.event is not None]
        tasks = [self.states[key] for key in sorted({(e.tenant, e.task_id) for e in events})]
        creates = {
            (s.command.tenant, s.command.task_id): s.command
            for s in pending
            if isinstance(s.command, CreateTask)
        }
        await self.connection.execute(
            queries.WRITE_GROUP,
            [e.seq for e in events],
            [e.tenant for e in events],
            [e.task_id for e in events],
            [self.states[(e.tenant, e.task_id)].kind for e in events],
            [e.version for e in events],
            [e.type for e in events],
            [e.data for e in events],
            [e.time for e in events],
            [_event_key(s.command) for s in pending],
            *_columns(tasks),
            [
                creates[(t.tenant, t.id)].idempotency_key if (t.tenant, t.id) in creates else None
                for t in tasks
            ],
            [
                creates[(t.tenant, t.id)].fingerprint if (t.tenant, t.id) in creates else None
                for t in tasks
            ],
            [(t.tenant, t.id) in new_tasks for t in tasks],
            str(positions[-1][0]),
        )

    def _fold(self, step: _Pending, seq: int, time: datetime, new_tasks: set[TaskKey]) -> None:
        command = step.command
        key = (command.tenant, command.task_id)
        if isinstance(command, CreateTask):
            state = created(command.tenant, command.task_id, command.data, seq, time)
            new_tasks.add(key)
            step.task = state
            event_type, data_json = EventType.CREATED.value, command.data_json
        else:
            state = apply(self.states[key], command.event.type, command.event.data, seq, time)
            event_type, data_json = command.event.type.value, command.event.data_json
        self.states[key] = state
        step.event = StoredEvent(
            seq, command.task_id, command.tenant, step.version, event_type, data_json, time
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


def _event_key(command: Command) -> str | None:
    return command.idempotency_key if isinstance(command, AppendEvent) else None


def _columns(tasks: list[TaskState]) -> list[list[Any]]:
    """TaskState fields as column arrays, in ``TASK_COLUMNS`` order."""
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
        [t.created_at for t in tasks],
        [t.updated_at for t in tasks],
        [t.started_at for t in tasks],
        [t.finished_at for t in tasks],
    ]


def _outcome(step: _Pending | _Replay | Appended | Problem) -> Outcome:
    if isinstance(step, _Pending):
        assert step.event is not None
        return Appended(step.event, replayed=False, task=step.task)
    if isinstance(step, _Replay):
        assert step.of.event is not None
        return Appended(step.of.event, replayed=True, task=step.of.task)
    return step
