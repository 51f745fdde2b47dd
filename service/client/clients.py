"""The classes people use: ``Taskstream`` (blocking) and ``AsyncTaskstream`` (asyncio), and
the trackers their ``track()`` returns. Each method is a core operation run by the class's
driver; the two families differ only in that driver."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import httpx

from service.client.drivers import (
    AsyncDriver,
    AsyncRunner,
    SyncDriver,
    SyncRunner,
    async_iterating,
    awaitable,
    blocking,
    iterating,
)
from service.client.operations import Operations, TrackOptions
from service.client.retry import RetryPolicy
from service.client.tracking import Tracking
from service.domain.models import Task

P = ParamSpec("P")
R = TypeVar("R")


def _with_core(
    method: Callable[Concatenate[Tracking, P], R],
) -> Callable[Concatenate[_TrackerView, P], R]:
    """A tracker's method that needs no I/O, so it is the same for both kinds."""

    @functools.wraps(method)
    def call(self: _TrackerView, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self._core, *args, **kwargs)

    return call


class _TrackerView:
    """What both trackers offer without any I/O."""

    _core: Tracking

    @property
    def task(self) -> Task:
        """The task as created."""
        return self._core.task

    @property
    def cancel_requested(self) -> bool:
        """Someone asked to cancel the task (learnt from the answers to this tracker's
        appends, so at the latest within ``progress_interval`` of a progress call)."""
        return self._core.cancel_requested

    @property
    def result(self) -> Any:
        """What ``succeeded`` carries as ``result`` when the block ends normally."""
        return self._core.result

    @result.setter
    def result(self, value: Any) -> None:
        self._core.result = value

    progress = _with_core(Tracking.progress)


class Tracker(_TrackerView, SyncRunner[Tracking]):
    """``with client.track(...) as task:`` — see ``docs/client.md``."""

    def __init__(self, driver: SyncDriver, tracking: Tracking) -> None:
        self._driver = driver
        self._core = tracking
        self._background: threading.Thread | None = None

    log = blocking(Tracking.log)
    cancel = blocking(Tracking.cancel)

    def __enter__(self) -> Self:
        self._driver.run(self._core.start())
        self._background = threading.Thread(
            target=self._driver.run,
            args=(self._core.keep_alive(),),
            name=f"taskstream-track-{self.task.id}",
            daemon=True,
        )
        self._background.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._core.stop()
        if self._background is not None:
            self._background.join()
        return self._driver.run(self._core.finish(error))


class AsyncTracker(_TrackerView, AsyncRunner[Tracking]):
    """``async with client.track(...) as task:`` — see ``docs/client.md``."""

    def __init__(self, driver: AsyncDriver, tracking: Tracking) -> None:
        self._driver = driver
        self._core = tracking
        self._background: asyncio.Task[None] | None = None

    log = awaitable(Tracking.log)
    cancel = awaitable(Tracking.cancel)

    async def __aenter__(self) -> Self:
        await self._driver.run(self._core.start())
        self._background = asyncio.create_task(self._driver.run(self._core.keep_alive()))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._core.stop()
        if self._background is not None:
            await self._background
        return await self._driver.run(self._core.finish(error))


def _tracking(
    plan: Callable[Concatenate[Operations, P], TrackOptions],
    make: Callable[[Any, Tracking], R],
) -> Callable[Concatenate[SyncRunner[Operations] | AsyncRunner[Operations], P], R]:
    """``track()`` of a client: the core's signature and checks, the client's tracker."""

    @functools.wraps(plan)
    def method(
        self: SyncRunner[Operations] | AsyncRunner[Operations], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        options = plan(self._core, *args, **kwargs)
        driver = self._driver
        return make(driver, Tracking(self._core, options, lock=driver.lock(), wake=driver.signal()))

    return method


def _operations(
    base_url: str,
    token: str,
    timeout: float,
    stream_timeout: float | None,
    retry: RetryPolicy | None,
) -> Operations:
    return Operations(
        base_url,
        token,
        timeout=timeout,
        stream_timeout=stream_timeout,
        retry=retry or RetryPolicy(),
    )


class Taskstream(SyncRunner[Operations]):
    """The blocking client. ``retry`` says how requests are retried (``RetryPolicy``);
    ``stream_timeout`` is the longest silence a stream may keep before it is reconnected."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        stream_timeout: float | None = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _operations(base_url, token, timeout, stream_timeout, retry)
        self._http = httpx.Client(transport=transport)
        self._driver = SyncDriver(self._http)

    create_task = blocking(Operations.create_task)
    get_task = blocking(Operations.get_task)
    list_tasks_page = blocking(Operations.list_tasks_page)
    list_tasks = iterating(Operations.list_tasks)
    append = blocking(Operations.append)
    append_batch = blocking(Operations.append_batch)
    cancel = blocking(Operations.cancel)
    history = iterating(Operations.history)
    events = iterating(Operations.events)
    export = iterating(Operations.export)
    subscribe = iterating(Operations.subscribe)
    subscribe_all = iterating(Operations.subscribe_all)
    track = _tracking(Operations.track, Tracker)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTaskstream(AsyncRunner[Operations]):
    """The asyncio client; the same methods as ``Taskstream``, awaited (or ``async for``)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        stream_timeout: float | None = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = _operations(base_url, token, timeout, stream_timeout, retry)
        self._http = httpx.AsyncClient(transport=transport)
        self._driver = AsyncDriver(self._http)

    create_task = awaitable(Operations.create_task)
    get_task = awaitable(Operations.get_task)
    list_tasks_page = awaitable(Operations.list_tasks_page)
    list_tasks = async_iterating(Operations.list_tasks)
    append = awaitable(Operations.append)
    append_batch = awaitable(Operations.append_batch)
    cancel = awaitable(Operations.cancel)
    history = async_iterating(Operations.history)
    events = async_iterating(Operations.events)
    export = async_iterating(Operations.export)
    subscribe = async_iterating(Operations.subscribe)
    subscribe_all = async_iterating(Operations.subscribe_all)
    track = _tracking(Operations.track, AsyncTracker)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
