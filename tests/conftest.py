"""Database and service fixtures: a real Postgres, real migrations, a real HTTP server per test.

The Postgres server comes from, in order of preference:
1. ``TASKSTREAM_TEST_DATABASE_URL`` (CI sets it; the server may be shared, so only databases
   named ``ts_test_<pid>_...`` are ever created or dropped),
2. a testcontainers Postgres when a Docker engine answers,
3. an embedded ``pgserver`` started once per session in a temporary directory.

A template database is migrated once with the real alembic migrations; each test gets its own
clone (``CREATE DATABASE ... TEMPLATE``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from service.settings import Settings
from service.store.migrate import upgrade
from service.stream.transport import HttpProtocol
from tests.helpers import Service, with_database
from tests.processes import Server

DB_PREFIX = f"ts_test_{os.getpid()}"


# --------------------------------------------------------------------------- the server


def _docker_answers() -> bool:
    """A cheap check: does a Docker engine answer /_ping within a second?"""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        try:
            import docker

            docker.from_env(timeout=2).ping()
        except Exception:
            return False
        return True
    path = host.removeprefix("unix://")
    if not os.path.exists(path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


@contextlib.contextmanager
def _embedded_postgres() -> Iterator[str]:
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR; the suite turns warnings into errors.
        warnings.simplefilter("ignore")
        import pgserver

        directory = tempfile.mkdtemp(prefix="tspg")
        server = pgserver.get_server(directory, cleanup_mode="stop")
    try:
        # A throwaway server: durability across a crash of the test machine is not needed.
        server.psql("ALTER SYSTEM SET fsync = off;")
        server.psql("SELECT pg_reload_conf();")
        yield f"postgresql://postgres@/postgres?host={directory}"
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a maintenance database on the test Postgres server."""
    url = os.environ.get("TASKSTREAM_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    with _embedded_postgres() as embedded:
        yield embedded


# --------------------------------------------------------------------------- databases


async def _admin(server_url: str, *statements: str) -> None:
    connection = await asyncpg.connect(server_url, timeout=30)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(server_url: str, template: str | None = None) -> str:
    name = f"{DB_PREFIX}_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else " TEMPLATE template0"
    for attempt in range(500):
        try:
            await _admin(server_url, f"CREATE DATABASE {name}{clause}")
            break
        except asyncpg.ObjectInUseError:
            # "source database is being accessed by other users": a connection is closing.
            if attempt == 499:
                raise
            await asyncio.sleep(0.01)
    return name


async def drop_database(server_url: str, name: str) -> None:
    assert name.startswith(DB_PREFIX), name
    await _admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class _Graveyard:
    """Databases of finished tests, dropped by one background worker.

    DROP DATABASE costs tens of milliseconds (more with fsync on) and slows a CREATE DATABASE
    right after it; dropping behind the tests' backs keeps that out of every test's teardown.
    When more than ``LIMIT`` wait, the next test waits for them, bounding the disk they use.
    """

    LIMIT = 20

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.worker = asyncio.ensure_future(self._work())
        self.failure: BaseException | None = None

    async def _work(self) -> None:
        while True:
            name = await self.queue.get()
            try:
                await drop_database(self.server_url, name)
            except Exception as error:
                self.failure = self.failure or error
            finally:
                self.queue.task_done()

    async def bury(self, names: list[str]) -> None:
        for name in names:
            self.queue.put_nowait(name)
        if self.queue.qsize() > self.LIMIT:
            await self.queue.join()

    async def close(self) -> None:
        await self.queue.join()
        self.worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.worker
        if self.failure is not None:
            raise self.failure


@pytest.fixture(scope="session")
async def template_database(pg_server_url: str) -> AsyncIterator[str]:
    """A database migrated with the real migrations; the source of every test's clone."""
    name = await create_database(pg_server_url)
    try:
        await asyncio.to_thread(upgrade, with_database(pg_server_url, name))
        await _admin(pg_server_url, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        yield name
    finally:
        await drop_database(pg_server_url, name)


class _Nursery:
    """Migrated clones made one ahead, in the background while the previous test runs."""

    def __init__(self, server_url: str, template: str) -> None:
        self.server_url = server_url
        self.template = template
        self.next: asyncio.Future[str] | None = None

    async def take(self) -> str:
        ready = self.next or asyncio.ensure_future(create_database(self.server_url, self.template))
        self.next = None
        name = await ready
        self.next = asyncio.ensure_future(create_database(self.server_url, self.template))
        return name

    async def close(self) -> None:
        if self.next is not None:
            await drop_database(self.server_url, await self.next)


@pytest.fixture(scope="session")
async def nursery(pg_server_url: str, template_database: str) -> AsyncIterator[_Nursery]:
    nursery = _Nursery(pg_server_url, template_database)
    try:
        yield nursery
    finally:
        await nursery.close()


@pytest.fixture(scope="session")
async def graveyard(pg_server_url: str, template_database: str) -> AsyncIterator[_Graveyard]:
    graveyard = _Graveyard(pg_server_url)
    try:
        yield graveyard
    finally:
        await graveyard.close()


@pytest.fixture
async def database_factory(
    pg_server_url: str, nursery: _Nursery, graveyard: _Graveyard
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``await make(migrated=True)`` -> URL of a new database of this test's own.

    ``migrated=False`` gives a database without any schema. Each is dropped after the test
    (in the background, see ``_Graveyard``) and never used again.
    """
    names: list[str] = []

    async def make(*, migrated: bool = True) -> str:
        name = await nursery.take() if migrated else await create_database(pg_server_url)
        names.append(name)
        return with_database(pg_server_url, name)

    yield make
    await graveyard.bury(names)


@pytest.fixture
async def database_url(database_factory: Callable[..., Awaitable[str]]) -> str:
    """A migrated database of this test's own."""
    return await database_factory()


@pytest.fixture
async def empty_database_url(database_factory: Callable[..., Awaitable[str]]) -> str:
    """A database of this test's own with no schema at all."""
    return await database_factory(migrated=False)


# --------------------------------------------------------------------------- the service


class _QuickServer(uvicorn.Server):
    """uvicorn's server with its 100 ms polling cut short, so that each test's start and stop
    costs milliseconds; what it serves and how it shuts the application down is unchanged."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.005)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = getattr(self, "server_state", None)
        if state is None or not hasattr(self, "servers") or not hasattr(self, "lifespan"):
            await super().shutdown(sockets)  # a uvicorn whose internals moved: the slow path
            return
        for server in self.servers:
            server.close()
        for connection in list(state.connections):
            connection.shutdown()
        deadline = asyncio.get_running_loop().time() + self.config.timeout_graceful_shutdown
        busy = lambda: state.connections or state.tasks  # noqa: E731
        while busy() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for task in state.tasks:
            task.cancel()
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP;
    # without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        lifespan="on",
        http=HttpProtocol,
        ws="none",
        timeout_graceful_shutdown=5,
    )
    server = _QuickServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = asyncio.get_running_loop().time() + 30
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises if serve() raised
            raise RuntimeError("the service did not start (lifespan startup failed?)")
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("the service did not start within 30 s")
        await asyncio.sleep(0.005)
    return server, task, f"http://127.0.0.1:{port}"


async def _stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    try:
        await asyncio.wait_for(task, timeout=15)
    except TimeoutError:
        server.force_exit = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise


ServiceFactory = Callable[..., Awaitable[Service]]


@pytest.fixture
async def service_factory(
    database_factory: Callable[..., Awaitable[str]],
) -> AsyncIterator[ServiceFactory]:
    """``await start(database_url=None, **settings_overrides) -> Service``.

    Without ``database_url`` the service gets a migrated database of its own.
    """
    from service.app import create_app

    started: list[tuple[Service, uvicorn.Server, asyncio.Task[None]]] = []

    async def start(*, database_url: str | None = None, **overrides: Any) -> Service:
        url = database_url or await database_factory()
        secret = overrides.pop("jwt_secret", None) or secrets.token_urlsafe(32)
        options: dict[str, Any] = {
            "database_url": url,
            "jwt_secret": secret,
            "auto_migrate": False,
            "pool_size": 5,
        }
        options.update(overrides)
        settings = Settings(**options)
        app = create_app(settings)
        server, task, base_url = await _serve(app)
        client = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0))
        service = Service(
            base_url=base_url,
            secret=secret,
            database_url=url,
            settings=settings,
            client=client,
        )
        started.append((service, server, task))
        return service

    yield start
    errors: list[BaseException] = []
    for service, server, task in reversed(started):
        await service.client.aclose()
        try:
            await _stop(server, task)
        except BaseException as error:  # keep tearing the others down
            errors.append(error)
    if errors:
        raise errors[0]


@pytest.fixture
async def service(request: pytest.FixtureRequest, service_factory: ServiceFactory) -> Service:
    """The service on a fresh migrated database.

    Settings overrides via indirect parametrization:
    ``@pytest.mark.parametrize("service", [{"max_event_bytes": 2048}], indirect=True)``.
    """
    overrides: dict[str, Any] = getattr(request, "param", None) or {}
    return await service_factory(**overrides)


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """``taskstream serve`` processes started by the test (tests.processes.start_server), killed
    at its end."""
    started: list[Server] = []
    yield started
    for server in started:
        await server.stop()
