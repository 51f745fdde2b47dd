"""The analyst views of migration 0003, and every SQL example of docs/analytics.md.

Data is seeded through the HTTP API, in time order, as workers would produce it. The service
stamps events with its own clock, so the seeding then moves each event to the time its script
gives and sets the tasks' phase times from their events (the test's own database): the answers
are exact numbers. Times are relative to the database's now(): two days ago and yesterday
(``Clock.at``), and a few tasks still running (``Clock.ago``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.store.migrate import downgrade, upgrade
from tests.helpers import Service, assert_created, assert_ok
from tests.test_roles import ROLE_NAMES, as_user, roles_script

DOC = Path(__file__).resolve().parents[1] / "docs" / "analytics.md"
VIEWS = ("task_current", "task_events_flat", "task_phases")

ServiceFactory = Callable[..., Awaitable[Service]]
D = Decimal

# --------------------------------------------------------------------------- the scripts


@dataclass(frozen=True)
class Clock:
    now: datetime  # the database's now() when the seeding began

    @property
    def base(self) -> datetime:
        """Midnight (UTC) two days ago: day 1 of the scripts."""
        today = self.now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=2)

    def at(self, day: int, clock: str) -> datetime:
        hours, minutes, *seconds = (int(part) for part in clock.split(":"))
        offset = timedelta(days=day - 1, hours=hours, minutes=minutes, seconds=sum(seconds))
        return self.base + offset

    def ago(self, seconds: float) -> datetime:
        return self.now - timedelta(seconds=seconds)


@dataclass(frozen=True)
class Step:
    at: datetime
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Script:
    tenant: str
    id: str
    kind: str
    title: str
    created: datetime
    steps: tuple[Step, ...]


HOUR = 3600


def scripts(c: Clock) -> list[Script]:
    """Two tenants; acme runs imports (staged), reports (percent) and exports (done/total)."""

    def task(tenant: str, id: str, kind: str, title: str, *steps: Step) -> Script:
        return Script(tenant, id, kind, title, steps[0].at, steps[1:])

    def created(at: datetime) -> Step:
        return Step(at, "created", {})

    def started(at: datetime, worker: str) -> Step:
        return Step(at, "started", {"worker": worker})

    def progress(at: datetime, **data: Any) -> Step:
        return Step(at, "progress", data)

    def log(at: datetime, level: str, message: str, **extra: Any) -> Step:
        return Step(at, "log", {"level": level, "message": message, **extra})

    def succeeded(at: datetime, result: Any = None) -> Step:
        return Step(at, "succeeded", {"result": result})

    def failed(at: datetime, code: str, message: str) -> Step:
        return Step(at, "failed", {"error": {"code": code, "message": message}})

    def cancel_requested(at: datetime, reason: str) -> Step:
        return Step(at, "cancel_requested", {"reason": reason})

    def cancelled(at: datetime, reason: str) -> Step:
        return Step(at, "cancelled", {"reason": reason})

    return [
        # ---- acme, day 1
        task(
            "acme", "imp-1", "import", "Import customers.csv",
            created(c.at(1, "09:00:00")),
            started(c.at(1, "09:00:10"), "worker-a"),
            progress(c.at(1, "09:00:12"), stage="download", done=0, total=3,
                     message="fetching customers.csv"),
            progress(c.at(1, "09:01:00"), stage="parse", done=1),
            progress(c.at(1, "09:03:00"), stage="load", done=2),
            progress(c.at(1, "09:04:00"), stage="load", done=3),
            succeeded(c.at(1, "09:04:10"), {"rows": 1200}),
        ),
        task(
            "acme", "rep-1", "report", "Weekly sales",
            created(c.at(1, "09:05:00")),
            started(c.at(1, "09:05:02"), "worker-b"),
            progress(c.at(1, "09:05:20"), percent=50, message="rendering"),
            succeeded(c.at(1, "09:05:40"), {"pages": 12}),
        ),
        task(
            "acme", "imp-2", "import", "Import orders.csv",
            created(c.at(1, "09:10:00")),
            started(c.at(1, "09:10:20"), "worker-a"),
            progress(c.at(1, "09:10:25"), stage="download", percent=0),
            progress(c.at(1, "09:11:25"), stage="parse", percent=30),
            # An extra member named like a progress member: not a stage of this task.
            log(c.at(1, "09:11:30"), "info", "parsing 4 files", stage="bogus"),
            progress(c.at(1, "09:15:25"), stage="load", percent=80),
            succeeded(c.at(1, "09:16:20")),
        ),
        task(
            "acme", "rep-2", "report", "Monthly churn",
            created(c.at(1, "09:30:00")),
            started(c.at(1, "09:30:04"), "worker-b"),
            progress(c.at(1, "09:30:30"), percent=50),
            failed(c.at(1, "09:31:00"), "timeout", "query took longer than 25 s"),
        ),
        task(
            "acme", "imp-3", "import", "Import invoices.csv",
            created(c.at(1, "10:00:00")),
            started(c.at(1, "10:00:30"), "worker-c"),
            progress(c.at(1, "10:00:40"), stage="download", percent=0),
            progress(c.at(1, "10:01:40"), stage="parse", percent=40),
            log(c.at(1, "10:02:00"), "error", "row 17: bad date"),
            failed(c.at(1, "10:02:30"), "bad_input", "row 17: bad date 2026-02-30"),
        ),
        task(
            "acme", "rep-3", "report", "Daily signups",
            created(c.at(1, "10:20:00")),
            started(c.at(1, "10:20:01"), "worker-b"),
            succeeded(c.at(1, "10:20:21")),
        ),
        task(
            "acme", "exp-1", "export", "Export contacts",
            created(c.at(1, "11:00:00")),
            started(c.at(1, "11:00:15"), "worker-d"),
            progress(c.at(1, "11:00:30"), done=100, total=400, message="100 of 400 rows"),
            log(c.at(1, "11:01:00"), "warning", "source is slow"),
            progress(c.at(1, "11:01:30"), done=300, message="300 of 400 rows"),
            succeeded(c.at(1, "11:02:15")),
        ),
        # ---- acme, day 2
        task(
            "acme", "imp-4", "import", "Import customers.csv",
            created(c.at(2, "09:00:00")),
            started(c.at(2, "09:00:05"), "worker-a"),
            progress(c.at(2, "09:00:10"), stage="download", percent=0),
            progress(c.at(2, "09:01:10"), stage="parse", percent=30),
            progress(c.at(2, "09:03:10"), stage="load", percent=80),
            succeeded(c.at(2, "09:04:05")),
        ),
        task(
            "acme", "rep-4", "report", "Quarterly forecast",
            created(c.at(2, "09:10:00")),
            cancel_requested(c.at(2, "09:11:00"), "no longer needed"),
            cancelled(c.at(2, "09:12:00"), "cancel requested"),
        ),
        task(
            "acme", "rep-5", "report", "Weekly sales (EUR)",
            created(c.at(2, "09:20:00")),
            started(c.at(2, "09:20:03"), "worker-b"),
            progress(c.at(2, "09:20:10"), percent=25),
            cancel_requested(c.at(2, "09:20:30"), "wrong parameters"),
            cancelled(c.at(2, "09:20:35"), "cancel requested"),
        ),
        task(
            "acme", "exp-2", "export", "Export orders",
            created(c.at(2, "10:00:00")),
            started(c.at(2, "10:00:15"), "worker-d"),
            progress(c.at(2, "10:00:20"), done=50, total=200),
            failed(c.at(2, "10:05:20"), "lease_expired", "no event for 300 s"),
        ),
        # ---- acme, still going: one import far over its usual time, one within it, and a
        # report whose cancel request the worker has not honoured.
        task(
            "acme", "imp-5", "import", "Import archive.csv",
            created(c.ago(3 * HOUR + 60)),
            started(c.ago(3 * HOUR), "worker-c"),
            progress(c.ago(3 * HOUR - 10), stage="download", percent=0),
            progress(c.ago(2 * HOUR), stage="parse", percent=35),
            log(c.ago(1 * HOUR), "warning", "parser slow: 2 rows/s"),
        ),
        task(
            "acme", "rep-6", "report", "Yearly totals",
            created(c.ago(600)),
            started(c.ago(590), "worker-b"),
            cancel_requested(c.ago(300), "taking too long"),
        ),
        task(
            "acme", "imp-6", "import", "Import leads.csv",
            created(c.ago(130)),
            started(c.ago(120), "worker-a"),
            progress(c.ago(110), stage="download", percent=0),
        ),
        # ---- globex: the same task id as acme's, and a failure of its own.
        task(
            "globex", "imp-1", "import", "Import stock.csv",
            created(c.at(1, "09:00:00")),
            started(c.at(1, "09:00:40"), "g-worker"),
            progress(c.at(1, "09:01:00"), stage="download", percent=0),
            succeeded(c.at(1, "09:02:00")),
        ),
        task(
            "globex", "rep-9", "report", "Stock levels",
            created(c.at(2, "11:00:00")),
            started(c.at(2, "11:00:02"), "g-worker"),
            failed(c.at(2, "11:01:02"), "timeout", "query took longer than 60 s"),
        ),
    ]  # fmt: skip


# --------------------------------------------------------------------------- seeding


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


# The phase times the service sets, taken again from the events after they have been moved.
SYNC_TASK_TIMES = """
UPDATE tasks t SET
  created_at = (SELECT e.time FROM events e
                WHERE e.tenant = t.tenant AND e.task_id = t.id AND e.version = 1),
  updated_at = (SELECT e.time FROM events e WHERE e.seq = t.last_seq),
  started_at = (SELECT min(e.time) FROM events e
                WHERE e.tenant = t.tenant AND e.task_id = t.id
                  AND e.type IN ('started', 'progress')),
  finished_at = (SELECT e.time FROM events e
                 WHERE e.tenant = t.tenant AND e.task_id = t.id
                   AND e.type IN ('succeeded', 'failed', 'cancelled'))
"""

PHASES_SET = "SELECT tenant, id, started_at IS NULL, finished_at IS NULL FROM tasks ORDER BY 1, 2"


# Stand-in for POST /v1/tasks/{id}/cancel while this branch predates it: the cancel_requested
# event and the task row as the service writes them (domain/state.apply).
async def request_cancel(service: Service, tenant: str, task_id: str, data: dict[str, Any]) -> int:
    response = await service.as_(tenant=tenant).post(f"/v1/tasks/{task_id}/cancel", json=data)
    return int(assert_created(response)["seq"])


async def seed(service: Service, admin_url: str) -> Clock:
    """Append every script through the API in time order, then move events to their times."""
    async with connected(admin_url) as connection:
        clock = Clock(await connection.fetchval("SELECT now()"))
    moments: list[tuple[datetime, int, int, Script]] = []
    for number, script in enumerate(scripts(clock)):
        moments.append((script.created, number, -1, script))
        moments.extend((step.at, number, index, script) for index, step in enumerate(script.steps))
    moments.sort(key=lambda moment: moment[:3])

    times: list[tuple[int, datetime]] = []
    for at, _, index, script in moments:
        api = service.as_(tenant=script.tenant)
        if index < 0:
            task = await api.create_task(id=script.id, kind=script.kind, title=script.title)
            times.append((task["last_seq"], at))
            continue
        step = script.steps[index]
        if step.type == "cancel_requested":
            seq = await request_cancel(service, script.tenant, script.id, step.data)
        else:
            seq = (await api.event(script.id, step.type, step.data))["seq"]
        times.append((seq, at))

    async with connected(admin_url) as connection, connection.transaction():
        phases = await connection.fetch(PHASES_SET)
        await connection.executemany("UPDATE events SET time = $2 WHERE seq = $1", times)
        await connection.execute(SYNC_TASK_TIMES)
        assert await connection.fetch(PHASES_SET) == phases, "phases the service never set"
        statuses = await connection.fetch("SELECT status, count(*) FROM tasks GROUP BY 1")
    assert dict(statuses) == {"succeeded": 7, "failed": 4, "cancelled": 2, "running": 3}
    return clock


@dataclass(frozen=True)
class Seeded:
    service: Service
    clock: Clock

    @property
    def url(self) -> str:
        return self.service.database_url


@pytest.fixture
async def seeded(service: Service) -> Seeded:
    return Seeded(service, await seed(service, service.database_url))


# --------------------------------------------------------------------------- the docs


class Between:
    """Equal to any value in [low, high]: for answers that move with the clock."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, low: Any, high: Any) -> None:
        self.low, self.high = low, high

    def __eq__(self, other: object) -> bool:
        return bool(self.low <= other <= self.high)  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"Between({self.low!r}, {self.high!r})"


def doc_sql_blocks() -> dict[tuple[str, str], str]:
    """Every ```sql block of docs/analytics.md, by its first line: -- example: or -- setup:."""
    blocks: dict[tuple[str, str], str] = {}
    for block in re.findall(r"^```sql\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL):
        key = re.match(r"-- (example|setup): (.+)\n", block)
        assert key, f"an SQL block of {DOC.name} without its -- example: name:\n{block}"
        assert (key[1], key[2]) not in blocks, f"two blocks named {key[2]}"
        blocks[key[1], key[2]] = block
    return blocks


def examples() -> dict[str, str]:
    return {name: sql for (what, name), sql in doc_sql_blocks().items() if what == "example"}


def expected_answers(c: Clock) -> dict[str, list[tuple[Any, ...]]]:
    """What each documented example answers on the seeded data, worked out by hand."""
    running = timedelta(seconds=120)  # slack for a slow test run: now() has moved on
    return {
        "throughput_per_kind_per_hour": [
            (c.at(1, "09:00"), "import", 2, 2, 0, 0),
            (c.at(1, "09:00"), "report", 2, 1, 1, 0),
            (c.at(1, "10:00"), "import", 1, 0, 1, 0),
            (c.at(1, "10:00"), "report", 1, 1, 0, 0),
            (c.at(1, "11:00"), "export", 1, 1, 0, 0),
            (c.at(2, "09:00"), "import", 1, 1, 0, 0),
            (c.at(2, "09:00"), "report", 2, 0, 0, 2),
            (c.at(2, "10:00"), "export", 1, 0, 1, 0),
        ],
        # succeeded runs: import 240, 360, 240; export 120; report 38, 20
        "run_time_percentiles_per_kind": [
            ("import", 3, D("240.0"), D("348.0"), 360.0),
            ("export", 1, D("120.0"), D("120.0"), 120.0),
            ("report", 2, D("29.0"), D("37.1"), 38.0),
        ],
        "failure_rate_per_kind": [
            ("export", 1, 1, 0, D("50.0")),
            ("report", 2, 1, 2, D("33.3")),
            ("import", 3, 1, 0, D("25.0")),
        ],
        "failure_rate_per_day": [
            (c.at(1, "00:00"), "acme", 5, 2, 0, D("28.6")),
            (c.at(1, "00:00"), "globex", 1, 0, 0, D("0.0")),
            (c.at(2, "00:00"), "acme", 1, 1, 2, D("50.0")),
            (c.at(2, "00:00"), "globex", 0, 1, 0, D("100.0")),
        ],
        "failures_by_code": [
            ("export", "lease_expired", 1, "no event for 300 s"),
            ("import", "bad_input", 1, "row 17: bad date 2026-02-30"),
            ("report", "timeout", 1, "query took longer than 25 s"),
        ],
        # download 48, 60, 60, 60; parse 120, 240, 50 (until it failed), 120; load 70, 55, 55
        "slowest_stages": [
            ("import", "parse", 4, D("120.0"), D("132.5"), D("240.0")),
            ("import", "load", 3, D("55.0"), D("60.0"), D("70.0")),
            ("import", "download", 4, D("60.0"), D("57.0"), D("60.0")),
        ],
        # import 10, 20, 30, 5, 60, 10; report 2, 4, 1, 3, 10 (rep-4 never started); export 15, 15
        "queue_wait_percentiles": [
            ("export", 2, D("15.0"), D("15.0"), D("15.0"), 15.0),
            ("import", 6, D("15.0"), D("45.0"), D("52.5"), 60.0),
            ("report", 5, D("3.0"), D("7.6"), D("8.8"), 10.0),
        ],
        # import 2, 5, 10, 5, 10, 10; report 18, 26, 7 (rep-3, rep-6 never reported); export 15, 5
        "time_to_first_progress": [
            ("export", 2, 2, D("10.0"), 15.0),
            ("import", 6, 6, D("7.5"), 10.0),
            ("report", 5, 3, D("18.0"), 26.0),
        ],
        "running_longer_than_usual": [
            (
                "acme",
                "imp-5",
                "import",
                c.ago(3 * HOUR),
                D("348.0"),
                Between(timedelta(hours=3), timedelta(hours=3) + running),
            ),
            (
                "acme",
                "rep-6",
                "report",
                c.ago(590),
                D("37.1"),
                Between(timedelta(seconds=590), timedelta(seconds=590) + running),
            ),
        ],
        "cancellations": [
            (
                "rep-4",
                "report",
                c.at(2, "09:11:00"),
                "no longer needed",
                c.at(2, "09:12:00"),
                "cancel requested",
                D(60),
                "cancelled",
            ),
            (
                "rep-5",
                "report",
                c.at(2, "09:20:30"),
                "wrong parameters",
                c.at(2, "09:20:35"),
                "cancel requested",
                D(5),
                "cancelled",
            ),
            ("rep-6", "report", c.ago(300), "taking too long", None, None, None, "running"),
        ],
        # 75% is derived from done 300 and the total 400 of the earlier progress event.
        "progress_timeline": [
            (1, "created", c.at(1, "11:00:00"), None, None, None, None),
            (2, "started", c.at(1, "11:00:15"), None, None, None, None),
            (3, "progress", c.at(1, "11:00:30"), 25.0, 100, 400, "100 of 400 rows"),
            (4, "log", c.at(1, "11:01:00"), None, None, None, "source is slow"),
            (5, "progress", c.at(1, "11:01:30"), 75.0, 300, None, "300 of 400 rows"),
            (6, "succeeded", c.at(1, "11:02:15"), None, None, None, None),
        ],
    }


# --------------------------------------------------------------------------- an analyst login


@dataclass(frozen=True)
class AnalystDatabase:
    """A database set up as docs/roles.sql says, with role names unique to this test."""

    admin_url: str
    suffix: str
    login: str  # the analyst login of docs/analytics.md's setup block

    def role(self, name: str) -> str:
        return f"{name}_{self.suffix}"

    def url(self, role: str) -> str:
        return as_user(self.admin_url, role)

    def setup_block(self) -> str:
        """The doc's setup block with the doc's names replaced by this test's."""
        block = doc_sql_blocks()["setup", "an analyst login"]
        block = re.sub(r"\balice\b", self.login, block)
        return re.sub(r"\btaskstream_analyst\b", self.role("taskstream_analyst"), block)


@pytest.fixture
async def analyst_database(
    database_factory: Callable[..., Awaitable[str]],
) -> AsyncIterator[AnalystDatabase]:
    """Roles created, migrations run as the owner, roles.sql run again (as documented).

    Request it before ``service_factory``, so that the service has stopped when the roles go.
    """
    admin_url = await database_factory(migrated=False)
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    database = AnalystDatabase(admin_url, suffix, login=f"analyst_login_{suffix}")
    viewer = database.role("viewer")
    roles = [database.role(name) for name in ROLE_NAMES]
    async with connected(admin_url) as admin:
        await admin.execute(roles_script(suffix))
        await upgrade_as(database.url(database.role("taskstream_owner")))
        await admin.execute(roles_script(suffix))
        try:
            yield database
        finally:
            everyone = [*roles, database.login, viewer]
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
                everyone,
            )
            for role in everyone:
                if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                    await admin.execute(f"DROP OWNED BY {role}")
            for role in (database.login, viewer, *reversed(roles)):
                await admin.execute(f"DROP ROLE IF EXISTS {role}")


async def upgrade_as(url: str) -> None:
    await asyncio.to_thread(upgrade, url)


# --------------------------------------------------------------------------- the tests


async def test_every_sql_example_in_the_docs_gives_its_documented_answer(
    analyst_database: AnalystDatabase, service_factory: ServiceFactory
) -> None:
    db = analyst_database
    service = await service_factory(database_url=db.url(db.role("taskstream_app")))
    clock = await seed(service, db.admin_url)
    async with connected(db.admin_url) as admin:
        await admin.execute(db.setup_block())

    expected = expected_answers(clock)
    documented = examples()
    assert documented.keys() == expected.keys(), "every example has its answer, and no more"
    failures: list[str] = []
    async with connected(db.url(db.login)) as analyst:
        # The login's settings from the setup block hold in its sessions.
        assert await analyst.fetchval("SHOW default_transaction_read_only") == "on"
        assert await analyst.fetchval("SHOW timezone") == "UTC"
        for name, sql in documented.items():
            try:
                rows = [tuple(row) for row in await analyst.fetch(sql)]
            except asyncpg.PostgresError as error:
                failures.append(f"{name}: {type(error).__name__}: {error}")
                continue
            if rows != expected[name]:
                failures.append(f"{name}:\n  got      {rows}\n  expected {expected[name]}")
    assert not failures, "\n".join(failures)


async def test_the_analyst_role_reads_the_views_and_a_view_grant_alone_reads_nothing(
    analyst_database: AnalystDatabase, service_factory: ServiceFactory
) -> None:
    db = analyst_database
    service = await service_factory(database_url=db.url(db.role("taskstream_app")))
    api = service.as_(tenant="acme")
    await api.create_task(id="t-1", kind="import")
    await api.event("t-1", "progress", {"done": 1, "total": 4, "stage": "download"})

    async with connected(db.admin_url) as admin:
        await admin.execute(db.setup_block())
        # A role granted the views and not the tables: security_invoker refuses it.
        viewer = db.role("viewer")
        await admin.execute(f"CREATE ROLE {viewer} NOLOGIN")
        await admin.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {viewer}")
        await admin.execute(f"SET ROLE {viewer}")
        for view in VIEWS:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=r"table (tasks|events)"):
                await admin.fetch(f"SELECT * FROM {view}")
        await admin.execute("RESET ROLE")

    async with connected(db.url(db.login)) as analyst:
        flat = await analyst.fetchrow("SELECT stage, percent FROM task_events_flat WHERE seq > 1")
        assert tuple(flat) == ("download", 25.0)
        current = await analyst.fetchrow("SELECT status, cancel_requested FROM task_current")
        assert tuple(current) == ("running", False)
        assert await analyst.fetchval("SELECT count(first_progress_at) FROM task_phases") == 1
        # SELECT is all the role may do with the views.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await analyst.execute("UPDATE task_current SET title = 'x'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await analyst.execute("DELETE FROM task_events_flat")


def parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


async def test_task_current_is_the_task_the_api_shows_with_its_phases(seeded: Seeded) -> None:
    tasks = {}
    for tenant in ("acme", "globex"):
        for task in await seeded.service.as_(tenant=tenant).all_tasks():
            tasks[tenant, task["id"]] = task
    async with connected(seeded.url) as connection:
        rows = {(row["tenant"], row["task_id"]): row for row in await connection.fetch(
            "SELECT * FROM task_current"
        )}  # fmt: skip
    assert rows.keys() == tasks.keys()
    for key, task in tasks.items():
        row = rows[key]
        for name in ("kind", "title", "status", "percent", "done", "total", "message", "stage"):
            assert row[name] == task[name], (key, name)
        for name in ("version", "last_seq"):
            assert row[name] == task[name], (key, name)
        for name in ("result", "error", "metadata"):
            stored = None if row[name] is None else json.loads(row[name])
            assert stored == task[name], (key, name)
        for name in ("created_at", "updated_at", "started_at", "finished_at"):
            assert row[name] == parse_time(task[name]), (key, name)
        assert row["is_finished"] == (task["status"] in ("succeeded", "failed", "cancelled"))
        assert row["error_code"] == (task["error"] or {}).get("code"), key
        assert row["error_message"] == (task["error"] or {}).get("message"), key
        if "cancel_requested" in task:  # the Task field of contract v1.1
            assert row["cancel_requested"] == task["cancel_requested"], key

    c = seeded.clock
    columns = (
        "status", "is_finished", "cancel_requested", "cancel_pending", "percent",
        "queue_wait", "run_time", "queue_wait_seconds", "run_seconds",
        "waiting_seconds", "running_seconds", "silent_seconds",
    )  # fmt: skip
    slack = 120.0
    answers = {
        ("acme", "imp-1"): (
            "succeeded", True, False, False, 100.0,
            timedelta(seconds=10), timedelta(seconds=240), 10.0, 240.0, None, None, None,
        ),
        ("acme", "exp-2"): (
            "failed", True, False, False, 25.0,
            timedelta(seconds=15), timedelta(seconds=305), 15.0, 305.0, None, None, None,
        ),
        ("acme", "rep-4"): (
            "cancelled", True, True, False, None, None, None, None, None, None, None, None,
        ),
        ("acme", "rep-5"): (
            "cancelled", True, True, False, 25.0,
            timedelta(seconds=3), timedelta(seconds=32), 3.0, 32.0, None, None, None,
        ),
        ("acme", "rep-6"): (
            "running", False, True, True, None, timedelta(seconds=10), None, 10.0, None,
            None, Between(590.0, 590.0 + slack), Between(300.0, 300.0 + slack),
        ),
        ("acme", "imp-5"): (
            "running", False, False, False, 35.0, timedelta(seconds=60), None, 60.0, None,
            None, Between(3.0 * HOUR, 3.0 * HOUR + slack), Between(HOUR, HOUR + slack),
        ),
    }  # fmt: skip
    for key, answer in answers.items():
        assert tuple(rows[key][name] for name in columns) == answer, key
    assert rows["acme", "rep-6"]["cancel_seq"] is not None
    assert rows["acme", "imp-5"]["started_at"] == c.ago(3 * HOUR)


async def test_a_pending_task_counts_its_waiting_time(service: Service) -> None:
    await service.as_(tenant="acme").create_task(id="waits", kind="import")
    # One transaction, so one now() for both statements.
    async with connected(service.database_url) as connection, connection.transaction():
        await connection.execute(
            "UPDATE tasks SET created_at = now() - interval '90 seconds',"
            " updated_at = now() - interval '90 seconds'"
        )
        row = await connection.fetchrow(
            "SELECT status, is_finished, waiting_seconds, running_seconds, silent_seconds,"
            " queue_wait_seconds FROM task_current"
        )
    assert tuple(row) == ("pending", False, 90.0, None, 90.0, None)


async def test_task_phases_has_each_tasks_phase_times(seeded: Seeded) -> None:
    c = seeded.clock
    columns = (
        "kind", "status", "outcome", "created_at", "started_at", "first_progress_at",
        "finished_at", "queue_wait_seconds", "time_to_first_progress_seconds", "run_seconds",
        "total_seconds",
    )  # fmt: skip
    expected = {
        ("acme", "imp-1"): (
            "import", "succeeded", "succeeded", c.at(1, "09:00:00"), c.at(1, "09:00:10"),
            c.at(1, "09:00:12"), c.at(1, "09:04:10"), 10.0, 2.0, 240.0, 250.0,
        ),
        ("globex", "imp-1"): (
            "import", "succeeded", "succeeded", c.at(1, "09:00:00"), c.at(1, "09:00:40"),
            c.at(1, "09:01:00"), c.at(1, "09:02:00"), 40.0, 20.0, 80.0, 120.0,
        ),
        # never reported progress
        ("acme", "rep-3"): (
            "report", "succeeded", "succeeded", c.at(1, "10:20:00"), c.at(1, "10:20:01"),
            None, c.at(1, "10:20:21"), 1.0, None, 20.0, 21.0,
        ),
        ("acme", "imp-3"): (
            "import", "failed", "failed", c.at(1, "10:00:00"), c.at(1, "10:00:30"),
            c.at(1, "10:00:40"), c.at(1, "10:02:30"), 30.0, 10.0, 120.0, 150.0,
        ),
        # cancelled before a worker took it
        ("acme", "rep-4"): (
            "report", "cancelled", "cancelled", c.at(2, "09:10:00"), None, None,
            c.at(2, "09:12:00"), None, None, None, 120.0,
        ),
        # still running: no outcome, no run time yet
        ("acme", "imp-5"): (
            "import", "running", None, c.ago(3 * HOUR + 60), c.ago(3 * HOUR),
            c.ago(3 * HOUR - 10), None, 60.0, 10.0, None, None,
        ),
    }  # fmt: skip
    async with connected(seeded.url) as connection:
        rows = await connection.fetch("SELECT * FROM task_phases")
        assert len(rows) == await connection.fetchval("SELECT count(*) FROM tasks")
    found = {(row["tenant"], row["task_id"]): tuple(row[name] for name in columns) for row in rows}
    for key, answer in expected.items():
        assert found[key] == answer, key


async def test_task_events_flat_types_the_members_of_each_event_type(seeded: Seeded) -> None:
    async with connected(seeded.url) as connection:
        assert await connection.fetchval(
            "SELECT count(*) FROM task_events_flat"
        ) == await connection.fetchval("SELECT count(*) FROM events")
        rows = await connection.fetch(
            "SELECT f.*, e.data AS stored FROM task_events_flat f JOIN events e USING (seq)"
            " WHERE f.tenant = 'acme' AND f.task_id IN ('imp-2', 'imp-3', 'rep-5')"
            " ORDER BY f.seq"
        )
    members = (
        "percent", "done", "total", "message", "stage", "level", "log_message", "worker",
        "error_code", "error_message", "reason",
    )  # fmt: skip
    filled = [
        (
            row["task_id"],
            row["type"],
            {name: row[name] for name in members if row[name] is not None},
        )
        for row in rows
    ]
    assert filled == [
        ("imp-2", "created", {}),
        ("imp-2", "started", {"worker": "worker-a"}),
        ("imp-2", "progress", {"percent": 0.0, "stage": "download"}),
        ("imp-2", "progress", {"percent": 30.0, "stage": "parse"}),
        # the log's extra "stage" member is not a stage
        ("imp-2", "log", {"level": "info", "log_message": "parsing 4 files"}),
        ("imp-2", "progress", {"percent": 80.0, "stage": "load"}),
        ("imp-2", "succeeded", {}),
        ("imp-3", "created", {}),
        ("imp-3", "started", {"worker": "worker-c"}),
        ("imp-3", "progress", {"percent": 0.0, "stage": "download"}),
        ("imp-3", "progress", {"percent": 40.0, "stage": "parse"}),
        ("imp-3", "log", {"level": "error", "log_message": "row 17: bad date"}),
        (
            "imp-3", "failed",
            {"error_code": "bad_input", "error_message": "row 17: bad date 2026-02-30"},
        ),
        ("rep-5", "created", {}),
        ("rep-5", "started", {"worker": "worker-b"}),
        ("rep-5", "progress", {"percent": 25.0}),
        ("rep-5", "cancel_requested", {"reason": "wrong parameters"}),
        ("rep-5", "cancelled", {"reason": "cancel requested"}),
    ]  # fmt: skip
    for row in rows:
        assert row["data"] == row["stored"]
        assert row["kind"] == {"imp": "import", "rep": "report"}[row["task_id"][:3]]
    assert json.loads(rows[4]["data"])["stage"] == "bogus"


async def test_flat_percent_is_the_percent_the_service_folds_into_the_task(
    service: Service,
) -> None:
    """The service is the oracle: after each progress event, the task's percent is the event's
    flat percent, or unchanged where the view says null (done with no total known yet)."""
    api = service.api
    await api.create_task(id="p", kind="import")
    # Members named like progress members on other event types must not count as a total.
    await api.event("p", "started", {"worker": "w", "total": 7})
    fixed: list[dict[str, Any]] = [
        {"done": 5},
        {"done": 1, "total": 3},
        {"done": 2},
        {"percent": 50},
        {"done": 7},
        {"percent": 12.5, "done": 9, "total": 1000},
        {"done": 10, "message": "more"},
    ]
    draw = random.Random(5)
    drawn: list[dict[str, Any]] = []
    for _ in range(40):
        data: dict[str, Any] = {}
        if draw.random() < 0.3:
            data["percent"] = draw.choice([0, 100, draw.uniform(0, 100)])
        if not data or draw.random() < 0.5:
            data["done"] = draw.randrange(0, 2**40)
        if draw.random() < 0.3:
            data["total"] = draw.choice([1, 3, 7, draw.randrange(1, 2**40)])
        drawn.append(data)
    previous = None
    async with connected(service.database_url) as connection:
        for data in [*fixed, *drawn]:
            if draw.random() < 0.2:
                await api.event("p", "log", {"level": "info", "message": "x", "total": 1})
            event = await api.event("p", "progress", data)
            percent = (await api.task("p"))["percent"]
            flat = await connection.fetchval(
                "SELECT percent FROM task_events_flat WHERE seq = $1", event["seq"]
            )
            assert (flat if flat is not None else previous) == percent, (data, flat, percent)
            previous = percent
    assert previous is not None


# A log big enough for the planner to tell the indexes apart: 2,000 tasks of ten events.
BULK = """
INSERT INTO tasks (tenant, id, kind, status, version, last_seq, created_at, updated_at,
                   started_at, finished_at)
SELECT 'acme', 'b-' || i, CASE WHEN i % 100 = 0 THEN 'report' ELSE 'import' END, 'succeeded',
       10, 0, now(), now(), now(), now()
FROM generate_series(1, 2000) i;
INSERT INTO events (seq, tenant, task_id, kind, version, type, data, time)
SELECT nextval('events_seq'), 'acme', 'b-' || i, 'import', v,
       CASE v WHEN 1 THEN 'created' WHEN 2 THEN 'started' WHEN 10 THEN 'succeeded'
              ELSE 'progress' END,
       CASE WHEN v BETWEEN 3 AND 9 THEN jsonb_build_object('done', v) ELSE '{}' END, now()
FROM generate_series(1, 2000) i, generate_series(1, 10) v
ORDER BY i, v;
ANALYZE tasks, events;
"""


async def test_filters_reach_the_indexes_and_task_phases_reads_events_only_when_asked(
    database_url: str,
) -> None:
    async def plan(connection: asyncpg.Connection, sql: str) -> str:
        return str(await connection.fetchval(f"EXPLAIN (FORMAT JSON) {sql}"))

    async with connected(database_url) as connection:
        await connection.execute(BULK)
        durations = await plan(
            connection,
            "SELECT run_seconds FROM task_phases WHERE tenant = 'acme' AND kind = 'report'",
        )
        assert '"Index Name": "tasks_listing_kind"' in durations, durations
        assert '"Relation Name": "events"' not in durations, durations
        first = await plan(
            connection,
            "SELECT time_to_first_progress_seconds FROM task_phases"
            " WHERE tenant = 'acme' AND kind = 'report'",
        )
        # One probe per task, by (tenant, task_id), never a scan of the tenant's progress.
        assert '"Index Name": "events_tenant_task_seq"' in first, first
        assert '"Index Name": "events_tenant_type_seq"' not in first, first
        one_task = await plan(
            connection, "SELECT * FROM task_events_flat WHERE tenant = 'acme' AND task_id = 'b-7'"
        )
        assert '"Index Name": "events_tenant_task_seq"' in one_task, one_task
        one_type = await plan(
            connection,
            "SELECT * FROM task_events_flat WHERE tenant = 'acme' AND type = 'cancel_requested'",
        )
        assert '"Index Name": "events_tenant_type_seq"' in one_type, one_type
        # The look-back for an earlier total: a backward probe of the task's events.
        derived = await plan(
            connection,
            "SELECT percent FROM task_events_flat WHERE tenant = 'acme' AND task_id = 'b-7'",
        )
        assert '"Scan Direction": "Backward"' in derived, derived


async def test_the_views_go_with_a_downgrade_and_come_back_with_the_upgrade(
    seeded: Seeded,
) -> None:
    async def views(connection: asyncpg.Connection) -> list[str]:
        rows = await connection.fetch(
            "SELECT viewname FROM pg_views WHERE schemaname = 'public' ORDER BY 1"
        )
        return [row["viewname"] for row in rows]

    count = "SELECT count(*) FROM task_events_flat"
    async with connected(seeded.url) as connection:
        assert await views(connection) == list(VIEWS)
        before = await connection.fetchval(count)
    await downgrade_to(seeded.url, "0002")
    async with connected(seeded.url) as connection:
        assert await views(connection) == []
        assert await connection.fetchval("SELECT count(*) FROM events") == before
    await upgrade_as(seeded.url)
    async with connected(seeded.url) as connection:
        assert await views(connection) == list(VIEWS)
        assert await connection.fetchval(count) == before
    answer = assert_ok(await seeded.service.client.get("/readyz"))
    assert answer == {"status": "ready"}


async def downgrade_to(url: str, revision: str) -> None:
    await asyncio.to_thread(downgrade, url, revision)
