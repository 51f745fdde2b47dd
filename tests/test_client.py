"""The async client against the running service: every call, and the problems it raises."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from service.client import (
    AsyncTaskstream,
    BatchItem,
    EventType,
    Forbidden,
    InvalidTransition,
    NotFound,
    ProgressData,
    RetryPolicy,
    TaskExists,
    TaskStatus,
    Unauthorized,
    ValidationError,
    VersionConflict,
)
from tests.helpers import ALL_SCOPES, Service

FAST = RetryPolicy(retries=3, backoff=0.01, max_backoff=0.05)


def connect(service: Service, scopes: str = ALL_SCOPES) -> AsyncTaskstream:
    return AsyncTaskstream(service.base_url, service.token(scopes=scopes), retry=FAST)


def test_importing_the_client_needs_neither_the_web_nor_the_database_stack() -> None:
    script = textwrap.dedent(
        """
        import sys
        import service.client
        loaded = {name.split(".")[0] for name in sys.modules}
        print(sorted(loaded & {"litestar", "sqlalchemy", "asyncpg", "uvicorn", "alembic",
                                "msgspec", "jwt"}))
        print(sorted(n for n in sys.modules if n.startswith("service.")
                     and not n.startswith(("service.client", "service.domain.models"))
                     and n != "service.domain"))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split("\n")[:2] == ["[]", "[]"], result.stdout


async def test_tasks_round_trip(service: Service) -> None:
    async with connect(service) as client:
        task = await client.create_task(
            "build", title="Build 1", metadata={"branch": "main"}, id="build-1"
        )
        assert (task.id, task.kind, task.title, task.status) == (
            "build-1",
            "build",
            "Build 1",
            TaskStatus.PENDING,
        )
        assert task.metadata == {"branch": "main"}
        assert await client.get_task("build-1") == task
        generated = await client.create_task("deploy")
        assert generated.id != task.id and generated.title is None
        for number in range(5):
            await client.create_task("test", id=f"test-{number}")

        listed = [t.id async for t in client.list_tasks(page_size=2)]
        assert listed == [f"test-{n}" for n in reversed(range(5))] + [generated.id, "build-1"]
        assert [t.id async for t in client.list_tasks(kind="deploy")] == [generated.id]
        page = await client.list_tasks_page(status=["pending"], limit=3)
        assert len(page.items) == 3 and page.next_cursor is not None
        assert page.as_of_seq >= 7


async def test_appends_history_and_events(service: Service) -> None:
    async with connect(service) as client:
        await client.create_task("build", id="t")
        started = await client.append("t", EventType.STARTED, {"worker": "w"})
        assert (started.event.type, started.event.version) == (EventType.STARTED, 2)
        assert not started.replayed and not started.cancel_requested
        progress = await client.append("t", "progress", ProgressData(done=3, total=4))
        assert progress.event.data == {"done": 3, "total": 4}
        same = await client.append(
            "t", "log", {"level": "info", "message": "m"}, idempotency_key="k"
        )
        again = await client.append(
            "t", "log", {"level": "info", "message": "m"}, idempotency_key="k"
        )
        assert again.replayed and again.event == same.event
        await client.append("t", "succeeded", expected_version=4)

        history = [e async for e in client.history("t", page_size=2)]
        assert [e.type for e in history] == ["created", "started", "progress", "log", "succeeded"]
        assert [e.version for e in history] == [1, 2, 3, 4, 5]
        assert [e.seq for e in history] == sorted(e.seq for e in history)
        later = [e async for e in client.history("t", after=history[2].seq)]
        assert later == history[3:]
        assert [e async for e in client.history("t", page_size=1)] == history

        await client.create_task("other", id="u")
        everything = [e async for e in client.events(page_size=3)]
        assert [e.task_id for e in everything] == ["t"] * 5 + ["u"]
        logs = [e async for e in client.events(task_id="t", type=["log", "succeeded"])]
        assert [e.type for e in logs] == ["log", "succeeded"]
        since = [e async for e in client.events(since=history[-1].time)]
        assert [e.type for e in since] == ["succeeded", "created"]
        assert [e.task_id async for e in client.events(kind="other")] == ["u"]


async def test_export_streams_the_whole_selection(service: Service) -> None:
    async with connect(service) as client:
        for number in range(3):
            await client.create_task("build", id=f"t{number}")
            await client.append_batch(
                [
                    {
                        "task_id": f"t{number}",
                        "type": "log",
                        "data": {"level": "info", "message": str(n)},
                    }
                    for n in range(50)
                ]
            )
        exported = [e async for e in client.export()]
        assert exported == [e async for e in client.events(page_size=1000)]
        assert len(exported) == 153
        only = [e async for e in client.export(task_id="t1", type="created")]
        assert [(e.task_id, e.type) for e in only] == [("t1", "created")]


async def test_batches_answer_per_item(service: Service) -> None:
    async with connect(service) as client:
        await client.create_task("build", id="t")
        results = await client.append_batch(
            [
                BatchItem(task_id="t", type="started", data={}),
                {"task_id": "t", "type": "progress", "data": {"percent": 150}},
                {"task_id": "missing", "type": "log", "data": {"level": "info", "message": "m"}},
                {
                    "task_id": "t",
                    "type": "progress",
                    "data": {"percent": 50},
                    "idempotency_key": "p",
                },
            ]
        )
        assert [r.status for r in results] == [201, 422, 404, 201]
        assert [r.ok for r in results] == [True, False, False, True]
        assert results[0].exception() is None
        assert isinstance(results[1].exception(), ValidationError)
        assert isinstance(results[2].exception(), NotFound)
        replay = await client.append_batch(
            [{"task_id": "t", "type": "progress", "data": {"percent": 50}, "idempotency_key": "p"}]
        )
        assert replay[0].status == 200 and replay[0].event == results[3].event


async def test_refusals_raise_their_problem(service: Service) -> None:
    async with connect(service) as client:
        await client.create_task("build", id="t")
        with pytest.raises(TaskExists) as exists:
            await client.create_task("build", id="t")
        assert (exists.value.status, exists.value.code) == (409, "task_exists")
        with pytest.raises(NotFound) as missing:
            await client.get_task("nope")
        assert missing.value.code == "task_not_found" and "nope" in (missing.value.detail or "")
        with pytest.raises(ValidationError) as invalid:
            await client.append("t", "progress", {"percent": 101})
        assert invalid.value.status == 422 and invalid.value.errors
        with pytest.raises(VersionConflict):
            await client.append("t", "started", expected_version=7)
        await client.append("t", "succeeded")
        with pytest.raises(InvalidTransition) as late:
            await client.append("t", "log", {"level": "info", "message": "too late"})
        assert late.value.problem["code"] == "invalid_transition"
    async with connect(service, scopes="tasks:read") as reader:
        with pytest.raises(Forbidden):
            await reader.append("t", "log", {"level": "info", "message": "m"})
    async with AsyncTaskstream(service.base_url, "not-a-token", retry=FAST) as anonymous:
        with pytest.raises(Unauthorized) as refused:
            await anonymous.get_task("t")
        assert refused.value.status == 401
