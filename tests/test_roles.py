"""Least privilege in Postgres: docs/roles.sql, run as documented, is enough for the service.

The roles of docs/roles.sql are created in this test's own database (with names unique to
this run, since roles are cluster-wide), the migrations run as the owner, and the service runs
as the application role with ``auto_migrate`` on: it must become ready (the start-up migration
finds the schema current and does no DDL) and serve a representative set of operations. The
application role and the analyst role are then shown what they may not do.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.store.migrate import head_revision, upgrade
from tests.helpers import Api, Service, assert_ok
from tests.sse import SseClient, wait_ready

ROLES_SQL = Path(__file__).resolve().parents[1] / "docs" / "roles.sql"
ROLE_NAMES = ("taskstream_owner", "taskstream_app", "taskstream_analyst")


@dataclass(frozen=True)
class Roles:
    admin_url: str  # the test database as the superuser
    suffix: str
    owner: str
    app: str
    analyst: str

    def url(self, role: str) -> str:
        return as_user(self.admin_url, role)


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def roles_script(suffix: str) -> str:
    """docs/roles.sql with each role name made unique to this run."""
    script = ROLES_SQL.read_text()
    for name in ROLE_NAMES:
        script = re.sub(rf"\b{name}\b", f"{name}_{suffix}", script)
    return script


@pytest.fixture
async def roles(database_factory: Callable[..., Awaitable[str]]) -> AsyncIterator[Roles]:
    """An empty database with the documented roles; the roles are dropped afterwards."""
    admin_url = await database_factory(migrated=False)
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    owner, app, analyst = (f"{name}_{suffix}" for name in ROLE_NAMES)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(roles_script(suffix))
        yield Roles(admin_url, suffix, owner, app, analyst)
    finally:
        # Teardown runs after the service (requested later) has stopped.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
            [owner, app, analyst],
        )
        try:
            # One role at a time: PostgreSQL 15 fails on "DROP OWNED BY a, b" when the
            # default privileges of one name the other ("could not find tuple for default ACL").
            for role in (owner, app, analyst):
                await admin.execute(f"DROP OWNED BY {role}")
            for role in (analyst, app, owner):
                await admin.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await admin.close()


async def refused(connection: asyncpg.Connection, statement: str) -> str:
    """Run a statement that must be refused for lack of privilege; the error message."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as error:
        await connection.execute(statement)
    return str(error.value)


class Collected(logging.Handler):
    """The service's own log lines. Attached to the ``taskstream`` logger itself: Litestar
    configures the root logger's handlers when the app is built, which removes pytest's."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")

    async def wait_for(self, text: str, seconds: float) -> None:
        for _ in range(int(seconds / 0.02)):
            if any(text in line for line in self.lines):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no log line with {text!r} within {seconds} s: {self.lines}")


@pytest.fixture
def service_log() -> Iterator[Collected]:
    logger = logging.getLogger("taskstream")
    handler, level = Collected(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_service_runs_as_the_application_role(
    roles: Roles,
    service_factory: Callable[..., Awaitable[Service]],
    service_log: Collected,
) -> None:
    # Migrations run as the owner, who then owns every object they create; then the file runs
    # again, as documented, to protect alembic_version.
    await asyncio.to_thread(upgrade, roles.url(roles.owner))
    admin = await asyncpg.connect(roles.admin_url)
    try:
        await admin.execute(roles_script(roles.suffix))
        owners = await admin.fetch(
            "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S')"
        )
        assert {row["relname"] for row in owners} >= {"tasks", "events", "events_seq"}
        assert {row["owner"] for row in owners} == {roles.owner}, owners
    finally:
        await admin.close()

    # The service as the app role, migrating at start as `taskstream serve` does by default.
    service = await service_factory(database_url=roles.url(roles.app), auto_migrate=True)
    await wait_ready(service.client)
    await service_log.wait_for("schema is at the latest migration", seconds=15)
    assert not [line for line in service_log.lines if "migration failed" in line], service_log.lines
    ready = assert_ok(await service.client.get("/readyz"))
    assert ready == {"status": "ready"}

    await exercise_the_api(service)
    await app_role_cannot_change_the_schema(roles)
    await analyst_role_only_reads(roles)


async def exercise_the_api(service: Service) -> None:
    api: Api = service.api
    task = await api.create_task(id="r1", title="roles", metadata={"k": 1})
    assert task["status"] == "pending"
    replay = await api.create_task_response(id="r2", idempotency_key="c-1")
    assert replay.status_code == 201, replay.text
    assert (await api.create_task_response(id="r2", idempotency_key="c-1")).status_code == 200

    stream = await SseClient.open(service.base_url, "/v1/tasks/r1/stream", token=api.token)
    tenant_stream = await SseClient.open(
        service.base_url, "/v1/stream", token=api.token, token_in_query=True
    )
    try:
        snapshot = await stream.next_event()
        assert snapshot is not None and snapshot.type == "snapshot", snapshot
        assert tenant_stream.status == 200
        first = await tenant_stream.next_frame()
        assert first is not None and first.retry is not None, first

        started = await api.event("r1", "started", {"worker": "w"}, idempotency_key="e-1")
        again = await api.append("r1", "started", {"worker": "w"}, idempotency_key="e-1")
        assert again.status_code == 200 and again.json() == started
        batch = await api.batch(
            [
                {"task_id": "r1", "type": "progress", "data": {"done": 1, "total": 4}},
                {"task_id": "r2", "type": "log", "data": {"level": "info", "message": "x"}},
                {"task_id": "nope", "type": "started", "data": {}},
                {"task_id": "r1", "type": "succeeded", "data": {"result": "ok"}},
            ]
        )
        statuses = [item["status"] for item in assert_ok(batch)["results"]]
        assert statuses == [201, 201, 404, 201], batch.text

        frames = await stream.rest()
        types = [frame.type for frame in frames if frame.is_event]
        assert types == ["started", "progress", "succeeded"], types
        assert stream.clean_end, "the task stream ends after the terminal event"
        live = await tenant_stream.events(4)
        assert [frame.type for frame in live] == ["started", "progress", "log", "succeeded"]
    finally:
        stream.close()
        tenant_stream.close()

    done = await api.task("r1")
    assert (done["status"], done["percent"], done["version"]) == ("succeeded", 100, 4)
    history = await api.history("r1", limit=2)
    assert [event["version"] for event in history] == [1, 2, 3, 4]
    page = await api.events_page(type="log")
    assert [event["task_id"] for event in page["items"]] == ["r2"]
    listing = await api.list_tasks(status="succeeded")
    assert [item["id"] for item in listing["items"]] == ["r1"]

    ndjson = await api.get("/v1/events", headers={"Accept": "application/x-ndjson"})
    assert ndjson.status_code == 200, ndjson.text
    lines = [json.loads(line) for line in ndjson.text.splitlines()]
    assert len(lines) == 6, lines
    exported = await api.get("/v1/events", headers={"Accept": "text/csv"})
    assert exported.status_code == 200, exported.text
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["seq", "task_id", "tenant", "version", "type", "data", "time"]
    assert len(rows) == 7, rows


async def app_role_cannot_change_the_schema(roles: Roles) -> None:
    app = await asyncpg.connect(roles.url(roles.app))
    try:
        assert await app.fetchval("SELECT version_num FROM alembic_version") == head_revision()
        await refused(app, "CREATE TABLE intruder (id int)")
        await refused(app, "CREATE TEMPORARY TABLE intruder (id int)")
        for statement in (
            "ALTER TABLE events ADD COLUMN intruder int",
            "DROP TABLE events",
            "CREATE INDEX intruder ON events (type)",
            "ALTER SEQUENCE events_seq RESTART",
            "DROP FUNCTION taskstream_expect_rows(integer, bigint)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
                await app.execute(statement)
        await refused(app, "TRUNCATE events")
        await refused(app, "DELETE FROM events")
        await refused(app, "UPDATE alembic_version SET version_num = 'x'")
        await refused(app, "DELETE FROM alembic_version")
    finally:
        await app.close()


async def analyst_role_only_reads(roles: Roles) -> None:
    admin = await asyncpg.connect(roles.admin_url)
    try:
        await admin.execute(f"SET ROLE {roles.analyst}")
        assert await admin.fetchval("SELECT count(*) FROM events") == 6
        assert await admin.fetchval("SELECT count(*) FROM tasks") == 2
        rows: list[Any] = await admin.fetch("SELECT type FROM events WHERE task_id = 'r1'")
        assert len(rows) == 4
        await refused(admin, "INSERT INTO tasks (tenant, id) VALUES ('t9', 'x')")
        await refused(admin, "UPDATE tasks SET title = 'changed'")
        await refused(admin, "DELETE FROM events")
        await refused(admin, "SELECT nextval('events_seq')")
        await refused(admin, "SELECT taskstream_expect_rows(1, 1)")
        await refused(admin, "CREATE TABLE intruder (id int)")
    finally:
        await admin.close()
