"""Leases (contract v1.1): a running task whose worker falls silent is failed by the service,
exactly once, however many replicas watch it."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServiceFactory
from tests.helpers import Service, assert_field_errors, assert_problem
from tests.processes import Server, start_server

FAST_SWEEP = {"lease_check_seconds": 0.05}


async def wait_for_status(
    client: httpx.AsyncClient, headers: dict[str, str], task_id: str, status: str, seconds: float
) -> Any:
    """Poll the task (what a user would do) until it reaches ``status``."""
    async with asyncio.timeout(seconds):
        while True:
            task = (await client.get(f"/v1/tasks/{task_id}", headers=headers)).json()
            if task["status"] == status:
                return task
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("service", [FAST_SWEEP], indirect=True)
async def test_a_silent_running_task_is_failed_with_lease_expired(service: Service) -> None:
    created = await service.api.create_task(id="job", lease_seconds=1)
    assert created["lease_seconds"] == 1
    started = await service.api.event("job", "started")
    task = await wait_for_status(service.client, service.auth(), "job", "failed", seconds=10)
    assert task["error"]["code"] == "lease_expired"
    assert task["error"]["message"]
    failed = (await service.api.history("job"))[-1]
    assert failed["type"] == "failed"
    assert failed["data"] == {"error": task["error"]}
    assert failed["version"] == started["version"] + 1
    # the lease is counted from the task's last event
    silent = _moment(failed["time"]) - _moment(started["time"])
    assert silent.total_seconds() >= 1.0


@pytest.mark.parametrize("service", [FAST_SWEEP], indirect=True)
async def test_any_event_keeps_the_lease(service: Service) -> None:
    await service.api.create_task(id="job", lease_seconds=1)
    await service.api.event("job", "started")
    for n in range(8):  # 2.4 s of a worker that speaks every 0.3 s
        await asyncio.sleep(0.3)
        await service.api.event("job", "log" if n % 2 else "progress")
    assert (await service.api.task("job"))["status"] == "running"
    await wait_for_status(service.client, service.auth(), "job", "failed", seconds=10)


@pytest.mark.parametrize("service", [FAST_SWEEP], indirect=True)
async def test_pending_tasks_and_tasks_without_a_lease_are_left_alone(service: Service) -> None:
    await service.api.create_task(id="queued", lease_seconds=1)
    await service.api.create_task(id="no-lease")
    await service.api.event("no-lease", "started")
    await service.api.create_task(id="done", lease_seconds=1)
    await service.api.bring_to("done", "succeeded")
    await asyncio.sleep(1.6)
    assert (await service.api.task("queued"))["status"] == "pending"
    assert (await service.api.task("no-lease"))["status"] == "running"
    assert (await service.api.task("done"))["status"] == "succeeded"
    assert (await service.api.task("no-lease"))["lease_seconds"] is None


@pytest.mark.parametrize("value", [0, -1, "5", 1.5, True, 2**31])
async def test_lease_seconds_must_be_a_positive_integer(service: Service, value: Any) -> None:
    response = await service.api.create_task_response(id="job", lease_seconds=value)
    assert_problem(response, 422, "validation_error")
    assert_field_errors(response.json(), "lease_seconds")
    assert_problem(await service.api.get("/v1/tasks/job"), 404, "task_not_found")


async def test_an_idempotent_create_returns_the_lease_too(service: Service) -> None:
    first = await service.api.create_task_response(id="job", lease_seconds=30, idempotency_key="k")
    again = await service.api.create_task_response(id="job", lease_seconds=30, idempotency_key="k")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert again.json()["lease_seconds"] == 30


async def test_replicas_sweeping_at_once_fail_each_task_once(
    service_factory: ServiceFactory,
) -> None:
    """Three services on one database, each sweeping every 10 ms."""
    first = await service_factory(lease_check_seconds=0.01)
    others = [
        await service_factory(
            database_url=first.database_url, jwt_secret=first.secret, lease_check_seconds=0.01
        )
        for _ in range(2)
    ]
    ids = [f"job-{n}" for n in range(30)]
    for task_id in ids:
        await first.api.create_task(id=task_id, lease_seconds=1)
        await others[0].api.event(task_id, "started")
    for task_id in ids:
        await wait_for_status(others[1].client, others[1].auth(), task_id, "failed", 15)
    await asyncio.sleep(0.3)  # let any late sweep try its luck
    for task_id in ids:
        types = [e["type"] for e in await first.api.history(task_id)]
        assert types == ["created", "started", "failed"], (task_id, types)


async def test_two_serve_processes_fail_a_silent_task_exactly_once(
    servers: list[Server], tmp_path: Path, database_url: str
) -> None:
    """The issue's check with real processes: two ``taskstream serve`` on one database."""
    secret = secrets.token_urlsafe(32)
    env = {"TASKSTREAM_LEASE_CHECK_SECONDS": "0.02"}
    one = await start_server(servers, tmp_path, database_url, secret, env=env)
    two = await start_server(servers, tmp_path, database_url, secret, env=env)
    ids = [f"job-{n}" for n in range(20)]
    for task_id in ids:
        response = await one.client.post(
            "/v1/tasks", json={"id": task_id, "kind": "k", "lease_seconds": 1}, headers=one.auth()
        )
        assert response.status_code == 201, response.text
        response = await two.client.post(
            f"/v1/tasks/{task_id}/events", json={"type": "started", "data": {}}, headers=two.auth()
        )
        assert response.status_code == 201, response.text
    for task_id in ids:
        await wait_for_status(one.client, one.auth(), task_id, "failed", seconds=15)
    await asyncio.sleep(0.3)
    response = await two.client.get("/v1/events", params={"type": "failed"}, headers=two.auth())
    failures = response.json()["items"]
    assert sorted(e["task_id"] for e in failures) == sorted(ids)
    assert {e["data"]["error"]["code"] for e in failures} == {"lease_expired"}


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)
