"""Liveness, readiness and the published OpenAPI document."""

from __future__ import annotations

import asyncio
import socket

import asyncpg

from service.store.migrate import downgrade
from tests.conftest import ServiceFactory
from tests.helpers import Service, assert_problem


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_healthz_is_200(service: Service) -> None:
    response = await service.client.get("/healthz")
    assert response.status_code == 200


async def test_readyz_is_200_when_migrated(service: Service) -> None:
    response = await service.client.get("/readyz")
    assert response.status_code == 200, response.text


async def test_readyz_is_503_on_an_unmigrated_database(
    service_factory: ServiceFactory, empty_database_url: str
) -> None:
    service = await service_factory(database_url=empty_database_url)
    assert (await service.client.get("/healthz")).status_code == 200
    body = assert_problem(await service.client.get("/readyz"), 503, "not_ready")
    assert body["detail"], "503 carries the reason"


async def test_readyz_is_503_when_the_schema_is_behind(
    service_factory: ServiceFactory, database_url: str
) -> None:
    await asyncio.to_thread(downgrade, database_url, "base")
    service = await service_factory(database_url=database_url)
    body = assert_problem(await service.client.get("/readyz"), 503, "not_ready")
    assert body["detail"]


async def test_readyz_accepts_a_schema_ahead_of_this_build(
    service_factory: ServiceFactory, database_url: str
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = 'from_the_future'")
    finally:
        await connection.close()
    service = await service_factory(database_url=database_url)
    response = await service.client.get("/readyz")
    assert response.status_code == 200, response.text


async def test_service_starts_without_a_database_and_says_why_it_is_not_ready(
    service_factory: ServiceFactory,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/nowhere"
    service = await service_factory(database_url=url)
    assert (await service.client.get("/healthz")).status_code == 200
    body = assert_problem(await service.client.get("/readyz"), 503, "not_ready")
    assert body["detail"]
    assert_problem(await service.api.get("/v1/tasks"), 503, "not_ready")


async def test_auto_migrate_brings_an_empty_database_to_ready(
    service_factory: ServiceFactory, empty_database_url: str
) -> None:
    service = await service_factory(database_url=empty_database_url, auto_migrate=True)
    for _ in range(200):
        if (await service.client.get("/readyz")).status_code == 200:
            break
        await asyncio.sleep(0.05)
    assert (await service.client.get("/readyz")).status_code == 200
    await service.api.create_task(id="after-migrate")


async def test_openapi_schema_is_open(service: Service) -> None:
    response = await service.client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for path in ("/v1/tasks", "/v1/tasks/{id}", "/v1/tasks/{id}/events", "/v1/events",
                 "/v1/events/batch"):  # fmt: skip
        assert any(p.replace("task_id", "id") == path for p in document["paths"]), (
            path,
            list(document["paths"]),
        )
    assert (await service.client.get("/schema")).status_code == 200


async def test_dashboard_root_is_open(service: Service) -> None:
    response = await service.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
